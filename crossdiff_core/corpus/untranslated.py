"""Whether a paragraph of a translated manual was left in English.

Translations of manuals are often partial: a German page keeps the English of the paragraphs nobody
translated yet. `is_english(paragraph, language)` spots them by their function words ("the", "and",
"of", ...): a paragraph of at least `MIN_WORDS` words reads as English when it has at least
`MIN_ENGLISH` English function words and more than `RATIO` times as many as of `language`'s own; for
Chinese, when it has English function words and no Chinese character. Short lines, commands and
code have few function words and are kept.
"""

from __future__ import annotations

import re

MIN_WORDS = 8
MIN_ENGLISH = 3
RATIO = 2

_WORDS = {
    "en": "the and of to is that it for with as are this be on by from you can which or not an if when these those "
    "will should would have has was into its your their than only but also such may there then they",
    "de": "der die das und ist nicht mit ein eine einen einem dem den des zu von für auf sie es werden wird sich auch "
    "im oder wenn kann bei aus als durch nach wie sind dass diese dieser dieses ihr ihre können muss nur",
    "fr": "le la les et est un une des du de que qui pour dans sur par pas avec ce cette sont il elle ou au aux se "
    "peut être si ne plus vous nous leur ces sa son ses",
    "es": "el la los las y es un una de del que en para por con no se su sus al como más pero este esta estos son "
    "puede si lo le cuando ser hay",
}
FUNCTION_WORDS = {language: frozenset(words.split()) for language, words in _WORDS.items()}
"""Frequent words that carry no topic, per language."""
_WORD = re.compile(r"[^\W\d_]+")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def is_english(paragraph: str, language: str) -> bool:
    """Whether `paragraph`, from a text in `language` (de, fr, es, zh; en never), reads as English."""
    if language == "en":
        return False
    words = _WORD.findall(paragraph.lower())
    if len(words) < MIN_WORDS:
        return False
    english = sum(word in FUNCTION_WORDS["en"] for word in words)
    if english < MIN_ENGLISH:
        return False
    if language == "zh":
        return not _CJK.search(paragraph)
    own = sum(word in FUNCTION_WORDS[language] for word in words)
    return english > RATIO * own
