"""Tests for crossdiff_core.corpus.package_docs and `builtin:large` (the real installed packages, real tokenizers)."""

from __future__ import annotations

import ast
import collections
import sys

import pytest

from crossdiff_core.corpus import builtin as builtin_corpus
from crossdiff_core.corpus import human_docs, package_docs
from crossdiff_core.corpus.sources import describe, iter_documents
from crossdiff_core.errors import CorpusError

MODULE = '''"""A small module."""

import os


def add(a: int, b: int = 1) -> int:
    """Return a + b.

    >>> add(2)
    3
    """
    return a + b


def _private(x):
    """Never shown."""


def undocumented(x):
    return x


class Shelf(Base, metaclass=Meta):
    """Holds things."""

    def put(self, thing, *, where="top"):
        """Put `thing` on the shelf."""

    def _hidden(self):
        """Never shown either."""

    class Inner:
        def deep(self):
            """Documented only deep inside."""


class Empty:
    pass


async def fetch(url):
    """Fetch `url`.

    Says \\"\\"\\"quoted\\"\\"\\" things.
    """
'''


def test_module_document_keeps_public_docstrings_under_their_signatures():
    text = package_docs.module_document(MODULE)
    assert (
        text
        == '''"""A small module."""

def add(a: int, b: int=1) -> int:
    """Return a + b.

    >>> add(2)
    3
    """

class Shelf(Base):
    """Holds things."""

    def put(self, thing, *, where='top'):
        """Put `thing` on the shelf."""

    class Inner:

        def deep(self):
            """Documented only deep inside."""

async def fetch(url):
    """Fetch `url`.

    Says \'\'\'quoted\'\'\' things.
    """'''
    )
    ast.parse(text)  # still Python: signatures with docstring bodies
    assert package_docs.module_document("x = 1\n") == ""
    with pytest.raises(SyntaxError):
        package_docs.module_document("def broken(:\n")


def test_documents_are_capped_deduplicated_and_reproducible():
    packages = ("json", "email", "no_such_package_here")
    first = package_docs.documents(20_000, packages)
    package_docs.documents.cache_clear()
    again = package_docs.documents(20_000, packages)
    assert first == again and first is not again
    by_package = collections.defaultdict(list)
    for doc in first:
        by_package[doc.package].append(doc)
        assert len(doc.text) >= 200
    assert set(by_package) == {"json", "email"}  # a package that is not installed is skipped
    for name, docs in by_package.items():
        # modules are taken until the cap is passed: everything before the last one is under it
        assert sum(len(d.text) for d in docs[:-1]) < 20_000, name
    assert "def loads(" in "".join(d.text for d in by_package["json"])
    assert all("/tests/" not in f"/{d.module}" for d in first)
    texts = [d.text for d in first]
    assert len(set(texts)) == len(texts)
    versions = package_docs.package_versions(("stdlib", "torch", "no_such_package_here"))
    assert versions["stdlib"] == "Python " + sys.version.split()[0] and versions["torch"].startswith("2.")
    assert "no_such_package_here" not in versions


def test_builtin_large_holds_demo_more_templates_and_documentation(small_large):
    large = small_large
    demo = builtin_corpus.demo_documents()
    texts = collections.Counter(d.text for d in large)
    assert all(texts[d.text] >= 1 for d in demo)  # all of builtin:demo is in it
    sources = collections.Counter(d.source for d in large)
    for source in builtin_corpus.SOURCES:  # each template source: demo's round plus the extra rounds
        assert sources[source.name] == source.n_documents * (1 + builtin_corpus.LARGE_TEMPLATE_ROUNDS)
    packages = {s for s in sources if s.startswith("docs_")}
    assert len(packages) >= 20 and "docs_stdlib" in packages and "docs_torch" in packages
    docs_chars = collections.Counter()
    for d in large:
        docs_chars[d.source] += len(d.text)
    assert sum(docs_chars[p] for p in packages) > 15_000 * len(packages)  # most packages fill the cap
    # mixed: documentation and demo documents are spread over the whole order, not in blocks
    first_half = collections.Counter(d.source.startswith("docs_") for d in large[: len(large) // 2])
    second_half = collections.Counter(d.source.startswith("docs_") for d in large[len(large) // 2 :])
    assert abs(first_half[True] - second_half[True]) < 0.1 * len(large)
    assert builtin_corpus.large_documents("zh") == [d for d in large if d.language == "zh"]
    assert next(iter_documents("builtin:large")) == large[0].text
    assert "installed Python packages" in describe("builtin:large")
    comp = builtin_corpus.composition("large")
    assert sum(c["documents"] for c in comp.values()) == len(large)
    # builtin:human is in the mix, each installed package of it as a source (tests/test_human_docs.py: without them)
    assert {s for s in sources if s in human_docs.PACKAGES} == set(human_docs.package_versions())


def test_unknown_builtin_corpus_names_the_choices():
    with pytest.raises(CorpusError, match="builtin:demo, builtin:large"):
        list(iter_documents("builtin:huge"))
    with pytest.raises(CorpusError, match="demo, large"):
        builtin_corpus.composition("huge")
