"""`builtin:demo`: a small offline corpus that CrossDiff generates itself.

Two kinds of documents, nothing copied from elsewhere:

- template documents, assembled from sentences and word lists written for this module (English,
  Chinese, Spanish, French, German prose; Python and JavaScript), one seeded `random.Random` per
  source, identical on every run; sources are registered in `SOURCES`, and the lists they draw from
  are in `crossdiff_core/corpus/data/builtin_words.json` (`WORDS_FILE`);
- model-written documents: chat exchanges with SmolLM2-135M-Instruct and continuations by
  Gemma-3-270M of seed prompts written for the project, generated once by
  `python -m crossdiff_core build-corpus` (`demo_generation`) and shipped in
  `crossdiff_core/corpus/data/demo_generated.jsonl`.

`builtin:human` (`human_documents`) is text written by people: Debian's man pages and manuals in
English, Chinese, Spanish, French and German, read from the installed documentation packages
(`human_docs`).

`builtin:large` (`large_documents`) adds two more rounds of the template sources, the documentation
of the installed Python packages (`package_docs`) and `builtin:human` (left out, with a logged
warning, when its packages are not installed): millions of tokens, for training offline.

`composition(name)` reports what is in any of them; `composition_table()` gives it as Markdown, in tokens.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from crossdiff_core.errors import CorpusError

log = logging.getLogger(__name__)

LANGUAGES = ("en", "zh", "es", "fr", "de", "code")

WORDS_FILE = Path(__file__).resolve().parent / "data" / "builtin_words.json"
"""The word and sentence lists the template sources draw from (UTF-8 JSON, one key per list)."""


@cache
def _all_words() -> dict[str, Any]:
    """Return every list of `WORDS_FILE`, read once."""
    return json.loads(WORDS_FILE.read_text(encoding="utf-8"))


def _words(name: str) -> Any:
    """Return one list (or table of lists) of `WORDS_FILE`; callers never modify it."""
    return _all_words()[name]


@dataclass(frozen=True)
class DemoSource:
    """One generator of demo documents."""

    name: str
    language: str
    """One of `LANGUAGES`: "en", "zh", "es", "fr", "de" (prose and chat in that language) or "code"."""
    n_documents: int
    generate: Callable[[random.Random], str]
    """Returns one document, drawing every choice from the given seeded generator."""


@dataclass(frozen=True)
class DemoDocument:
    """One generated document and where it came from."""

    source: str
    language: str
    text: str


# ---------------------------------------------------------------------------------------------------
# Shared helpers


def _compose(
    rng: random.Random,
    make_pool: Callable[[], list[str]],
    length: tuple[int, int],
    group: tuple[int, int] = (2, 5),
    sep: str = " ",
) -> str:
    """Return paragraphs of `group` pieces each, separated by blank lines, up to a length drawn from `length`.

    Pieces come from `make_pool()` in shuffled order; a fresh pool is drawn only once one is used up,
    so a document repeats a piece only when it is longer than its pool.
    """
    target = rng.randint(*length)
    paragraphs: list[str] = []
    queue: list[str] = []
    while sum(len(p) + 2 for p in paragraphs) < target:
        if not queue:
            pool = make_pool()
            queue = rng.sample(pool, len(pool))
        k = rng.randint(*group)
        paragraphs.append(sep.join(queue[:k]))
        queue = queue[k:]
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------------
# English: history and politics of several countries


def _capitalized(sentence: str) -> str:
    """Return `sentence` with its first letter in upper case."""
    return sentence[0].upper() + sentence[1:]


def _en_history(rng: random.Random) -> str:
    """Return an English essay about the history and politics of one or two countries."""
    known = _words("countries")
    countries = rng.sample(sorted(known), rng.randint(1, 2))

    def pool() -> list[str]:
        sentences = []
        for country in countries:
            capital, facts = known[country]["capital"], known[country]["facts"]
            issue, issue2 = rng.sample(_words("politics_issues"), 2)
            sentences += facts + [
                _capitalized(t.format(c=country, cap=capital, issue=issue, issue2=issue2))
                for t in _words("politics_templates")
            ]
        return sentences

    title = rng.choice(["A short history of {c}", "Politics in {c}", "Notes on {c}", "{c}: past and present"])
    title = _capitalized(title.format(c=" and ".join(countries)))
    return title + "\n\n" + _compose(rng, pool, (300, 1900), (3, 5))


# ---------------------------------------------------------------------------------------------------
# English: science


def _en_science(rng: random.Random) -> str:
    """Return an English explanatory text about one or two science topics."""
    science, frames = _words("science"), _words("science_frames")
    topics = rng.sample(sorted(science), rng.randint(1, 3))

    def pool() -> list[str]:
        return [s for t in topics for s in science[t] + [f.format(t=t) for f in frames]]

    return f"How {' and '.join(topics)} work" + "\n\n" + _compose(rng, pool, (300, 1800), (3, 5))


# ---------------------------------------------------------------------------------------------------
# English: stories


def _en_story(rng: random.Random) -> str:
    """Return a short English story with a randomly chosen hero, place and object."""
    name, role = rng.choice(_words("names")), rng.choice(_words("roles"))
    place, obj = rng.choice(_words("places")), rng.choice(_words("objects"))
    opening = f"Once, in {place}, there lived a {role} named {name}."
    middle = [s.format(n=name, o=obj) for s in _words("story_middle")]
    body = _compose(rng, lambda: middle, (250, len("".join(middle))), (2, 4))
    ending = _capitalized(rng.choice(_words("story_endings")).format(n=name, o=obj))
    return f"{opening} {body}\n\n{ending}"


# ---------------------------------------------------------------------------------------------------
# English: everyday life


def _en_everyday(rng: random.Random) -> str:
    """Return an English diary-style text about ordinary days."""

    def pool() -> list[str]:
        chore, chore2 = rng.sample(_words("chores"), 2)
        days, foods = _words("days"), _words("foods")
        return [s.format(d=rng.choice(days), f=rng.choice(foods), c=chore, c2=chore2) for s in _words("everyday")]

    return "Dear diary,\n\n" + _compose(rng, pool, (300, 1500), (3, 6))


# ---------------------------------------------------------------------------------------------------
# Chinese prose


def _zh_daily(rng: random.Random) -> str:
    """Return a Chinese text about everyday life in a city."""
    person, city = rng.choice(_words("zh_people")), rng.choice(_words("zh_cities"))

    def pool() -> list[str]:
        weather, activities, foods = _words("zh_weather"), _words("zh_activities"), _words("zh_foods")
        return [
            s.format(p=person, city=city, w=rng.choice(weather), a=rng.choice(activities), f=rng.choice(foods))
            for s in _words("zh_daily")
        ]

    return f"{person}在{city}的生活\n\n" + _compose(rng, pool, (300, 1000), (3, 6), sep="")


def _zh_knowledge(rng: random.Random) -> str:
    """Return a Chinese text of history and science facts, framed as a lesson."""

    teacher = rng.choice(_words("zh_people"))
    body = _compose(rng, lambda: _words("zh_knowledge"), (200, 450), (2, 4), sep="")
    return f"今天的课\n\n{teacher}在课上讲到：\n\n{body}\n\n大家听了以后，纷纷提出问题。"


# ---------------------------------------------------------------------------------------------------
# Spanish, French and German: history, science and everyday life


def _european(language: str) -> Callable[[random.Random], str]:
    """Return a generator of texts in `language` (es, fr, de) mixing history, science and everyday life."""

    def generate(rng: random.Random) -> str:
        words = _words("european")[language]
        person, city = rng.choice(words["people"]), rng.choice(words["cities"])

        def pool() -> list[str]:
            daily = [s.format(p=person, city=city) for s in words["daily"]]
            return words["history"] + words["science"] + daily

        title = rng.choice(words["titles"]).format(city=city)
        return f"{title}\n\n" + _compose(rng, pool, (300, 900), (2, 4))

    generate.__doc__ = f"Return a {language} text of history, science and everyday life."
    return generate


# ---------------------------------------------------------------------------------------------------
# Code: Python and JavaScript


def _py_function(rng: random.Random) -> str:
    """Return one syntactically valid Python function with a docstring."""
    verb, noun, field = rng.choice(_words("verbs")), rng.choice(_words("nouns")), rng.choice(_words("fields"))
    name = f"{verb}_{noun}"
    limit = rng.randint(2, 100)
    bodies = [
        f'def {name}(items, threshold={limit}):\n    """Return the {noun} whose {field} is above threshold."""\n'
        f'    result = []\n    for item in items:\n        if item.get("{field}", 0) > threshold:\n'
        f"            result.append(item)\n    return result\n",
        f'def {name}(items):\n    """Return how many {noun} share each {field}."""\n    counts = {{}}\n'
        f'    for item in items:\n        key = item["{field}"]\n        counts[key] = counts.get(key, 0) + 1\n'
        f"    return counts\n",
        f'def {name}(values):\n    """Return the mean of the {noun}, or None when there are none."""\n'
        f"    if not values:\n        return None\n    return sum(values) / len(values)\n",
        f'def {name}(path):\n    """Return the non-empty lines of a text file of {noun}."""\n'
        f'    with open(path, encoding="utf-8") as handle:\n'
        f"        return [line.strip() for line in handle if line.strip()]\n",
        f'def {name}(n):\n    """Return the first n Fibonacci numbers."""\n    a, b = 0, 1\n    out = []\n'
        f"    for _ in range(n):\n        out.append(a)\n        a, b = b, a + b\n    return out\n",
        f'def {name}(text):\n    """Return the {limit} most common words in text."""\n'
        f"    words = text.lower().split()\n    ranked = sorted(set(words), key=words.count, reverse=True)\n"
        f"    return ranked[:{limit}]\n",
    ]
    return rng.choice(bodies)


def _py_class(rng: random.Random) -> str:
    """Return one syntactically valid Python class with a few methods."""
    cls, f1, f2 = rng.choice(_words("classes")), *rng.sample(_words("fields"), 2)
    default = rng.randint(0, 50)
    return (
        f"class {cls}:\n"
        f'    """Keep track of {f1} and {f2} values."""\n\n'
        f"    def __init__(self, {f1}, {f2}={default}):\n"
        f"        self.{f1} = {f1}\n        self.{f2} = {f2}\n        self.history = []\n\n"
        f"    def update(self, value):\n"
        f"        self.history.append(self.{f2})\n        self.{f2} = value\n        return self\n\n"
        f"    def undo(self):\n"
        f"        if self.history:\n            self.{f2} = self.history.pop()\n\n"
        f"    def __repr__(self):\n"
        f'        return f"{cls}({f1}={{self.{f1}!r}}, {f2}={{self.{f2}!r}})"\n'
    )


def _code_python(rng: random.Random) -> str:
    """Return a small, syntactically valid Python module."""
    noun = rng.choice(_words("nouns"))
    header = f'"""Helpers for working with {noun}."""\n\nimport json\nimport os\n'

    def pool() -> list[str]:
        return [_py_class(rng) if rng.random() < 0.35 else _py_function(rng) for _ in range(4)]

    body = _compose(rng, pool, (300, 1800), (1, 1))
    main = (
        f'\n\nif __name__ == "__main__":\n    path = os.environ.get("DATA", "{noun}.json")\n'
        f'    with open(path, encoding="utf-8") as handle:\n        data = json.load(handle)\n'
        f"    print(len(data))\n"
    )
    return header + "\n\n" + body + (main if rng.random() < 0.5 else "")


def _js_blocks(rng: random.Random) -> list[str]:
    """Return one of each kind of JavaScript block (function, arrow function, class, async, export)."""
    noun, field = rng.choice(_words("nouns")), rng.choice(_words("fields"))
    cls, verb = rng.choice(_words("classes")), rng.choice(_words("verbs"))
    noun_t, field_t = noun.title(), field.title().replace("_", "")
    return [
        f"// Keep only the {noun} above a limit.\nfunction {verb}{noun_t}(items, limit = {rng.randint(1, 50)}) {{\n"
        f"  return items.filter((item) => item.{field} > limit);\n}}\n",
        f"const total{field_t} = (items) =>\n  items.reduce((sum, item) => sum + item.{field}, 0);\n",
        f"class {cls} {{\n  constructor({field}) {{\n    this.{field} = {field};\n    this.log = [];\n  }}\n\n"
        f"  set(value) {{\n    this.log.push(this.{field});\n    this.{field} = value;\n    return this;\n  }}\n}}\n",
        f"async function fetch{noun_t}(url) {{\n  const response = await fetch(url);\n"
        f"  if (!response.ok) {{\n    throw new Error(`request failed: ${{response.status}}`);\n  }}\n"
        f"  return response.json();\n}}\n",
        f"export function groupBy{field_t}(items) {{\n  const groups = {{}};\n"
        f"  for (const item of items) {{\n    (groups[item.{field}] ||= []).push(item);\n  }}\n  return groups;\n}}\n",
    ]


def _code_javascript(rng: random.Random) -> str:
    """Return a small JavaScript module with functions and a class."""
    return _compose(rng, lambda: _js_blocks(rng), (300, 1400), (1, 1))


SOURCES: list[DemoSource] = [
    DemoSource("en_history", "en", 80, _en_history),
    DemoSource("en_science", "en", 70, _en_science),
    DemoSource("en_story", "en", 70, _en_story),
    DemoSource("en_everyday", "en", 60, _en_everyday),
    DemoSource("zh_daily", "zh", 70, _zh_daily),
    DemoSource("zh_knowledge", "zh", 50, _zh_knowledge),
    DemoSource("code_python", "code", 90, _code_python),
    DemoSource("code_javascript", "code", 40, _code_javascript),
    DemoSource("es_mixed", "es", 45, _european("es")),
    DemoSource("fr_mixed", "fr", 45, _european("fr")),
    DemoSource("de_mixed", "de", 45, _european("de")),
]
"""Template sources. The model-written documents (`demo_generation`) are added to them."""


@lru_cache(maxsize=1)
def _all_documents() -> tuple[DemoDocument, ...]:
    """Return every demo document, generated once, in a fixed mixed order."""
    from crossdiff_core.corpus.demo_generated import load_generated

    docs = []
    for source in SOURCES:
        rng = random.Random(f"crossdiff-demo/{source.name}")
        docs.extend(DemoDocument(source.name, source.language, source.generate(rng)) for _ in range(source.n_documents))
    docs.extend(DemoDocument(g.source, g.language, g.text) for g in load_generated())
    random.Random("crossdiff-demo/order").shuffle(docs)
    return tuple(docs)


LARGE_TEMPLATE_ROUNDS = 2
"""Extra rounds of every template source in `builtin:large` (fresh seeds: new combinations of the same sentences)."""
LARGE_DOCS_CHAR_CAP = 2_500_000
"""Characters of documentation taken from each installed package for `builtin:large`."""
HUMAN_CHAR_CAP = 1_500_000
"""Characters taken from each source of `builtin:human` (a Debian package in one language), there and in `builtin:large`."""


@lru_cache(maxsize=1)
def _human_documents() -> tuple[DemoDocument, ...]:
    """Return `builtin:human` in a fixed mixed order; raises `CorpusError` when none of its packages is installed."""
    from crossdiff_core.corpus import human_docs

    docs = [DemoDocument(d.package, d.language, d.text) for d in human_docs.documents(HUMAN_CHAR_CAP)]
    random.Random("crossdiff-human/order").shuffle(docs)
    return tuple(docs)


def human_documents(language: str | None = None) -> list[DemoDocument]:
    """Return the documents of `builtin:human` (all, or those of one language), identical for the same installs.

    Their `source` is the Debian package they come from. Raises `CorpusError` saying how to install
    the packages when none of them is installed.
    """
    return [d for d in _human_documents() if language is None or d.language == language]


@lru_cache(maxsize=1)
def _large_documents() -> tuple[DemoDocument, ...]:
    """Return `builtin:large`: every demo document, more template rounds, installed documentation and human text, mixed."""
    from crossdiff_core.corpus import package_docs

    docs = list(_all_documents())
    for round_ in range(1, LARGE_TEMPLATE_ROUNDS + 1):
        for source in SOURCES:
            rng = random.Random(f"crossdiff-large/{source.name}/{round_}")
            docs.extend(DemoDocument(source.name, source.language, source.generate(rng))
                        for _ in range(source.n_documents))  # fmt: skip
    docs.extend(DemoDocument(f"docs_{d.package}", "code", d.text)
                for d in package_docs.documents(LARGE_DOCS_CHAR_CAP))  # fmt: skip
    try:
        docs.extend(_human_documents())
    except CorpusError as exc:
        log.warning("builtin:large is read without builtin:human, its human-written text: %s", exc)
    random.Random("crossdiff-large/order").shuffle(docs)
    return tuple(docs)


def large_documents(language: str | None = None) -> list[DemoDocument]:
    """Return the documents of `builtin:large` (all, or those of one of `LANGUAGES`), identical for the same installs.

    `builtin:demo` (all of it), `LARGE_TEMPLATE_ROUNDS` more rounds of its template sources, and the
    documentation of the installed Python packages and standard library (`package_docs`), and
    `builtin:human` when its Debian packages are installed, shuffled together. Millions of tokens,
    for training a crosscoder offline; the first call reads the installed packages (about 35 s).
    """
    return [d for d in _large_documents() if language is None or d.language == language]


def demo_documents(language: str | None = None) -> list[DemoDocument]:
    """Return the demo documents (all, or those of one of `LANGUAGES`), identical on every run."""
    docs = _all_documents()
    return [d for d in docs if language is None or d.language == language]


CORPORA = ("demo", "large", "human")
"""Names of the built-in corpora: `builtin:demo`, `builtin:large` and `builtin:human`."""


def _documents(name: str) -> tuple[DemoDocument, ...]:
    if name not in CORPORA:
        raise CorpusError(f"unknown built-in corpus {name!r}; use one of {', '.join(CORPORA)}")
    return {"demo": _all_documents, "large": _large_documents, "human": _human_documents}[name]()


def composition(name: str = "demo") -> dict[str, dict[str, int | str]]:
    """Return, per source of `builtin:<name>` (one of `CORPORA`), its language, number of documents and characters.

    A source with documents in several languages (the Debian handbook) reads "mixed".
    """
    templates = [] if name == "human" else SOURCES
    out: dict[str, dict[str, int | str]] = {
        s.name: {"language": s.language, "documents": 0, "chars": 0} for s in templates
    }
    for doc in _documents(name):
        out.setdefault(doc.source, {"language": doc.language, "documents": 0, "chars": 0})
        if out[doc.source]["language"] != doc.language:
            out[doc.source]["language"] = "mixed"
        out[doc.source]["documents"] += 1
        out[doc.source]["chars"] += len(doc.text)
    return out


def _token_counts(tokenizer, texts: list[str], batch: int = 256) -> list[int]:
    """Return the number of tokens of each text (tokenized in batches: fast tokenizers run them in parallel)."""
    counts: list[int] = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]
        counts.extend(len(ids) for ids in encoded)
    return counts


def composition_table(tokenizer_a, tokenizer_b, name: str = "demo") -> str:
    """Return a Markdown table of `builtin:<name>` by source and language: documents, characters, tokens per model."""
    by_source: dict[str, list] = {}
    by_language: dict[str, list] = {}
    docs = _documents(name)
    counts = [_token_counts(tokenizer, [d.text for d in docs]) for tokenizer in (tokenizer_a, tokenizer_b)]
    for doc, n_a, n_b in zip(docs, *counts, strict=True):
        source = "installed documentation" if doc.source.startswith("docs_") else doc.source
        for table, key in ((by_source, source), (by_language, doc.language)):
            row = table.setdefault(key, [0, 0, 0, 0])
            row[0] += 1
            row[1] += len(doc.text)
            row[2] += n_a
            row[3] += n_b
    total = [sum(r[i] for r in by_language.values()) for i in range(4)]
    english = by_language.get("en", [0, 0, 0, 0])
    lines = [
        "| source / language | documents | characters | SmolLM2 tokens | Gemma-3 tokens |",
        "|---|---|---|---|---|",
    ]
    for source, row in sorted(by_source.items()):
        lines.append(f"| {source} | {row[0]} | {row[1]:,} | {row[2]:,} | {row[3]:,} |")
    for language, row in sorted(by_language.items(), key=lambda item: LANGUAGES.index(item[0])):
        lines.append(f"| **{language}** | {row[0]} | {row[1]:,} | {row[2]:,} | {row[3]:,} |")
    lines.append(f"| **all** | {total[0]} | {total[1]:,} | {total[2]:,} | {total[3]:,} |")
    code = by_language.get("code", [0, 0, 0, 0])
    share_a = 1 - (english[2] + code[2]) / max(total[2], 1)
    share_b = 1 - (english[3] + code[3]) / max(total[3], 1)
    lines.append("")
    lines.append(
        f"Natural-language text other than English: {share_a:.1%} of SmolLM2 tokens "
        f"(it splits Chinese characters into bytes), {share_b:.1%} of Gemma-3 tokens."
    )
    if name == "large":
        from crossdiff_core.corpus.package_docs import package_versions

        lines.append("")
        lines.append("Documentation read from: " + ", ".join(f"{package} {version}" for package, version
                                                             in package_versions().items()) + ".")  # fmt: skip
    if name in ("large", "human"):
        from crossdiff_core.corpus import human_docs

        debian = human_docs.package_versions()
        if debian:
            lines.append("")
            lines.append("Human-written text read from the Debian packages " + ", ".join(
                f"{package} {version}" for package, version in debian.items()
            ) + f" (their licences: `{human_docs.SOURCES_TABLE}`).")  # fmt: skip
    return "\n".join(lines)
