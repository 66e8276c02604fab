"""Short plain-language labels for latents, built from their evidence.

`heuristic_label` writes labels such as `fires on: Paris, Lyon, France · promotes: ' French'`: the words
at the latent's strongest contexts (most frequent first) and the readable tokens its decoder direction
promotes. A latent that did not fire on the index's texts gets `UNSEEN_LABEL`: it says where it was not seen,
not that it never fires, since it may fire on other text (a prompt in the app). A chat model can add a one-line
explanation on top (see `explain`), scored by how well it predicts where the latent fires (see `detection`);
`feature_name` presents it as the latent's name only when that score reaches `CLEAR_EXPLANATION_SCORE`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

FIRE_WORDS = 3
"""Words listed after `fires on:`."""
PROMOTED_TOKENS = 2
"""Tokens listed after `promotes:`."""
MAX_WORD_CHARS = 16
"""A word longer than this is shown as the token alone."""

UNSEEN_LABEL = "no label: it did not fire on the texts the feature index read"
"""The label of a latent that did not fire on the index's texts (it can still fire on other text)."""
LEGACY_LABELS = {"dead: never fired on the index corpus": UNSEEN_LABEL}
"""Labels written by older index builds → the words used now (`current_label`; `FeatureIndex.load` applies it)."""

CLEAR_EXPLANATION_SCORE = 0.65
"""Explanation score (0.5: chance, 1: perfect) from which an explanation is presented as the latent's name; below it,
or unscored, the name is the evidence label, marked "unclear" when the explanation was scored too low."""
BEATS_CHANCE = "beats_chance"
"""Key of a stored explanation: False when its run's explanations scored no better than the same explanations moved to
other latents (a shuffled baseline), so none of them names its latent, whatever its own score."""
UNCLEAR = "unclear"
"""The word shown instead of an explanation that predicts badly where its latent fires."""

_WORD = re.compile(r"\w+")
_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SPECIAL_LOOKING = re.compile(r"^\s*<[^<>]*>\s*$|^\s*\[[^\[\]]*\]\s*$")
_VISIBLE_WHITESPACE = {"\n": "⏎", "\t": "⇥", " ": "␣"}


def word_at(text: str, start: int, end: int) -> str:
    """Return the word around characters `[start, end)` of `text`; the token itself for CJK text or a long word."""
    token = text[start:end].strip() or text[start:end]
    for match in _WORD.finditer(text, max(0, start - MAX_WORD_CHARS), min(len(text), end + MAX_WORD_CHARS)):
        if match.start() < end and match.end() > start:
            word = match.group()
            return token if len(word) > MAX_WORD_CHARS or _CJK.search(word) else word
    return token


def show_token(token: str) -> str:
    """Return a token quoted for a label, with whitespace made visible (`' French'`, `'⏎'`)."""
    if token and not token.strip():
        token = "".join(_VISIBLE_WHITESPACE.get(ch, ch) for ch in token)
    return "'" + token + "'"


def readable(token: str) -> bool:
    """Return True for a token worth showing in a label (not empty, not a special-looking `<...>` name, printable)."""
    return bool(token.strip()) and not _SPECIAL_LOOKING.match(token) and token.isprintable() and "\ufffd" not in token


def heuristic_label(peak_words: Sequence[str], promoted: Sequence[str], n_fires: int) -> str:
    """Return a short label from the words at the latent's top contexts and the tokens it promotes."""
    if n_fires == 0:
        return UNSEEN_LABEL
    counts = Counter(w for w in peak_words if w.strip())
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], peak_words.index(kv[0])))][:FIRE_WORDS]
    parts = []
    if words:
        parts.append("fires on: " + ", ".join(_visible(w) for w in words))
    tokens = [show_token(t) for t in promoted if readable(t)][:PROMOTED_TOKENS]
    if tokens:
        parts.append("promotes: " + ", ".join(tokens))
    return " · ".join(parts) if parts else f"fires on {n_fires} tokens"


def current_label(label: str) -> str:
    """Return a stored label in today's words: a label an older build wrote (`LEGACY_LABELS`) is replaced."""
    return LEGACY_LABELS.get(label, label)


def fired_words(label: str) -> list[str]:
    """Return the words a heuristic label lists after `fires on:` (none for another kind of label)."""
    if not label.startswith("fires on: "):
        return []
    return [w for w in label.removeprefix("fires on: ").split(" · ")[0].split(", ") if w]


def explanation_parts(entry: dict | None) -> tuple[str, float]:
    """Return `(text, score)` of a stored explanation (`FeatureIndex.explanations` entry): `("", NaN)` without one,
    NaN as the score when it was not scored (an explanation written before scoring existed)."""
    if not entry:
        return "", float("nan")
    score = entry.get("score")
    return str(entry.get("text", "")), float(score) if isinstance(score, (int, float)) else float("nan")


def explanation_clear(score: float) -> bool:
    """Return True when an explanation score says the explanation predicts where its latent fires (NaN: False)."""
    return score >= CLEAR_EXPLANATION_SCORE


def beats_chance(entry: dict | None) -> bool:
    """Return False when the run that scored an explanation was measured to do no better than its shuffled baseline
    (the same explanations moved to other latents: `BEATS_CHANCE` False in the entry), else True."""
    return bool((entry or {}).get(BEATS_CHANCE, True))


def feature_name(label: str, entry: dict | None) -> str:
    """Return what to call a latent: its explanation when it scored `CLEAR_EXPLANATION_SCORE` or more in a run that
    beat chance (`beats_chance`), else its evidence label, after `unclear · ` when an explanation was scored."""
    text, score = explanation_parts(entry)
    if text and explanation_clear(score) and beats_chance(entry):
        return text
    return f"{UNCLEAR} · {label}" if text and math.isfinite(score) else label


def score_words(score: float, run_beats_chance: bool = True) -> str:
    """Return an explanation score in plain words: how well the explanation predicts where the feature fires, and,
    when its run did no better than chance, that its score means little."""
    if not math.isfinite(score):
        return "not scored yet: nobody checked whether it predicts where the feature fires"
    verdict = "clear" if explanation_clear(score) and run_beats_chance else UNCLEAR
    words = (
        f"{verdict}: it predicts where the feature fires with a score of {score:.2f} (0.5 is a coin toss, 1 is perfect)"
    )
    if not run_beats_chance:
        words += (
            "; but this model's explanations scored no better on average than the same explanations given to other "
            "features, so a single score means little"
        )
    return words


def explanation_note(entry: dict) -> str:
    """Return one plain sentence on a stored explanation: who wrote it, who judged it, and how well it predicts
    where the feature fires."""
    judged = f", judged by {entry['scorer']}" if entry.get("scorer") else ""
    words = score_words(explanation_parts(entry)[1], beats_chance(entry))
    return f"Explanation by {entry.get('model') or 'a chat model'}{judged}: {words}."


def _visible(word: str) -> str:
    """Return a word with whitespace-only words shown as visible symbols."""
    return word if word.strip() else show_token(word)
