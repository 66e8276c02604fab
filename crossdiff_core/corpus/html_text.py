"""HTML pages as plain text, with the standard library's `html.parser`.

`to_text(html)` keeps the words of a page as paragraphs separated by blank lines: each block
element (paragraph, heading, list item, definition, block quote, ...) is one paragraph with its
white space collapsed (`<br>` ends a line), and `<pre>` keeps its lines. It leaves out what is not prose: the head,
scripts and styles, tables (in Debian's manuals they list packages with their English
descriptions, even in the translations), and navigation: elements whose class is in `SKIP_CLASSES`
or whose id is in `SKIP_IDS` (the layout of DocBook's and Publican's pages).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

SKIP_TAGS = frozenset({"head", "script", "style", "table", "nav", "noscript", "svg"})
SKIP_CLASSES = frozenset({"navheader", "navfooter", "docnav", "toc", "list-of-tables", "list-of-examples",
                          "list-of-figures", "indexterm", "index"})  # fmt: skip
SKIP_IDS = frozenset({"banner", "title", "site_footer"})
BLOCK_TAGS = frozenset({
    "p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "blockquote", "pre", "hr", "ul", "ol",
    "dl", "section", "article", "header", "footer", "figure", "figcaption", "caption", "body",
})  # fmt: skip
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"})


def to_text(html: str) -> str:
    """Return the prose of an HTML page: paragraphs separated by blank lines (see the module's description)."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    parser.end_block()
    return "\n\n".join(parser.paragraphs)


class _Parser(HTMLParser):
    """Collects the text of the blocks of a page, skipping the elements that are not prose."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self.pieces: list[str] = []
        self.open: list[str] = []  # the tags open now (void elements never are)
        self.skip_depth: int | None = None  # depth of the open element being skipped, if any
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.handle_startendtag(tag, attrs)
            return
        if tag in BLOCK_TAGS:
            self.end_block()
        if tag in _VOID:
            return
        self.open.append(tag)
        if self.skip_depth is None and _skipped(tag, dict(attrs)):
            self.skip_depth = len(self.open)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and self.skip_depth is None:
            self.pieces.append("\n")
        elif tag in BLOCK_TAGS:
            self.end_block()

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.open:
            return  # a stray end tag
        while self.open:
            closed = self.open.pop()
            if self.skip_depth is not None and len(self.open) < self.skip_depth:
                self.skip_depth = None
            if closed == "pre":
                self.end_block()
                self.pre -= 1
            if closed == tag:
                break
        if tag in BLOCK_TAGS:
            self.end_block()

    def handle_data(self, data: str) -> None:
        if self.skip_depth is None:
            self.pieces.append(data if self.pre else re.sub(r"\s+", " ", data))

    def end_block(self) -> None:
        """End the paragraph being collected (if it has any words); returns nothing."""
        text = "".join(self.pieces)
        self.pieces = []
        text = text.strip("\n").rstrip() if self.pre else re.sub(r" *\n *", "\n", text).strip()
        if text.strip():
            self.paragraphs.append(text)


def _skipped(tag: str, attrs: dict[str, str | None]) -> bool:
    """Whether an element is left out with everything in it."""
    classes = set((attrs.get("class") or "").split())
    return tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or attrs.get("id") in SKIP_IDS
