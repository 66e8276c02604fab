"""Man pages as plain text: the roff source of a page (man or mdoc macros) read in pure Python.

`to_text(source)` keeps what a reader of the page sees, as paragraphs separated by blank lines:
section headings, paragraphs (filled lines joined by spaces), tagged items, and verbatim blocks
(`.nf`/`.EX` and pod's `.Vb`) with their line breaks. It drops what only typesets the page:
comments, macro and string definitions, conditionals, registers, fonts, sizes and motions, the
title line and the index entries. Tables (`.TS`) keep their rows, cells separated by two spaces.
Sections that only credit a page's translators (`TRANSLATION_SECTIONS`) are left out.

This is a reader for text, not a formatter: it does not run macros, so pages built from their own
macros lose some words.
"""

from __future__ import annotations

import re

TRANSLATION_SECTIONS = frozenset({
    "ÜBERSETZUNG", "TRADUCTION", "TRADUCCIÓN", "TRADUCCION", "COLOPHON", "KOLOPHON", "跋", "中文版维护人",
    "中文版最新更新", "中国LINUX论坛MAN手册页翻译计划",
})  # fmt: skip
"""Headings of sections that credit translators or name the release a page belongs to (upper case, letters only)."""

_NAMED = {
    "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›",
    "em": "—", "en": "–", "hy": "-", "mi": "-", "bu": "•", "co": "©", "rg": "®", "tm": "™", "de": "°", "mu": "×",
    "di": "÷", "+-": "±", "<=": "≤", ">=": "≥", "!=": "≠", "==": "≡", "->": "→", "<-": "←", "<>": "↔", "ua": "↑",
    "da": "↓", "rA": "⇒", "lA": "⇐", "ha": "^", "ti": "~", "rs": "\\", "sl": "/", "ga": "`", "aa": "´", "ul": "_",
    "pl": "+", "eq": "=", "dg": "†", "sc": "§", "ps": "¶", "Eu": "€", "eu": "€", "Po": "£", "ct": "¢", "Ye": "¥",
    "ba": "|", "br": "|", "or": "|", "sq": "□", "ci": "○", "*a": "α", "*b": "β", "*m": "μ", "*p": "π", "*l": "λ",
    "R": "®", "Tm": "™", "C+": "C++", 'L"': "“", 'R"': "”", "C'": "'", "C`": "'", "PI": "π", "ss": "ß",
}  # fmt: skip
"""Named characters (`\\(xx`, `\\[name]`) and the strings pages commonly use (`\\*(xx`, `\\*[name]`, `\\*x`)."""

_ESCAPE = re.compile(
    r"""\\(?:
        (?P<named>\((?P<two>..)|\[(?P<long>[^\]]*)\])      # \(xx, \[name]
      | \*(?:\((?P<s2>..)|\[(?P<sl>[^\]]*)\]|(?P<s1>.))    # strings \*(xx, \*[name], \*x
      | [fF](?:\(..|\[[^\]]*\]|.)                         # font
      | s(?:[+-]?\d|\([+-]?\d\d|\[[^\]]*\]|'[^']*')      # size
      | [nmMgVY](?:\(..|\[[^\]]*\]|.)                     # registers, colours, environment
      | [hvwlLoDXZbRSxNHCk]'[^']*'                        # motions, widths, drawings, device output
      | [kz$].                                          # marks, zero-width, macro arguments
      | (?P<plain>[-e\\ ~0|^&)/,:%.'`c\n"])              # one-character escapes
      | .
    )""",
    re.VERBOSE | re.DOTALL,
)
_PLAIN = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", ".": ".", "'": "´", "`": "`"}
"""One-character escapes that print something; the others (`\\&`, `\\|`, `\\c`, ...) print nothing."""

_MAN_FONTS = {"B", "I", "SM", "SB", "R"}
"""man macros that print their arguments (in another font) separated by spaces."""
_MAN_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
"""man macros that print their arguments (in alternating fonts) without spaces between them."""
_HEADINGS = {"SH", "SS", "Sh", "Ss"}
_BREAKS = {"PP", "P", "LP", "Pp", "sp", "HP", "TP", "TQ", "IP", "It", "Bl", "El", "RS", "RE", "Nd", "Dl", "D1"}
"""Requests that end a paragraph (some also print a tag: `.IP`, `.It`, `.Nd`)."""
_VERBATIM_ON = {"nf", "EX", "Vb", "Bd"}
_VERBATIM_OFF = {"fi", "EE", "Ve", "Ed"}
_MDOC_WORDS = {"Em", "Sy", "Li", "Nm", "Ar", "Pa", "Cm", "Ev", "Dv", "Ic", "Va", "Fn", "Ft", "Fa", "Er", "Ad", "An",
               "Lk", "Mt", "Cd", "Vt", "Tn", "Ms"}  # fmt: skip
"""mdoc macros that print their words."""
_MDOC_JOINERS = {"Op", "Oo", "Oc", "Ns", "No", "Xo", "Xc", "Pq", "Po", "Pc", "Ql", "Dq", "Do", "Dc", "Sq", "So", "Sc",
                 "Qq", "Qo", "Qc", "Brq", "Bro", "Brc", "Bq", "Bo", "Bc", "Aq", "Ao", "Ac", "Ta", "Ux", "Bx", "At",
                 "Ox", "Fx", "Nx"}  # fmt: skip
"""mdoc macros that only quote, bracket or join their neighbours: their words are kept, the macro names dropped."""
_MDOC = _MDOC_WORDS | _MDOC_JOINERS | {"Fl", "Xr"}
_PUNCTUATION = {".", ",", ";", ":", "?", "!", ")", "]"}
"""Words of an mdoc line that stick to the word before them."""
_DEFINITIONS = {"de", "de1", "am", "ig"}
"""Requests whose block, up to a `..` line, is a definition or a comment."""


def unescape(text: str) -> str:
    """Return `text` with its roff escapes replaced by the characters they print (or removed)."""
    return _ESCAPE.sub(_escape, text)


def _escape(match: re.Match) -> str:
    if match["named"]:
        name = match["two"] or match["long"]
        if re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
            return chr(int(name[1:], 16))
        return _NAMED.get(name, "")
    string = match["s2"] or match["sl"] or match["s1"]
    if string:
        return _NAMED.get(string, "")
    if match["plain"]:
        return _PLAIN.get(match["plain"], "")
    return ""


def _arguments(rest: str) -> list[str]:
    """Return the arguments of a request (the line after its name), split and quoted the way roff does."""
    args: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        if rest[i] in " \t":
            i += 1
        elif rest[i] == '"':  # a quoted argument runs to the next lone quote; "" inside it is a quote
            j, chars = i + 1, []
            while j < n and not (rest[j] == '"' and rest[j + 1 : j + 2] != '"'):
                chars.append(rest[j])
                j += 2 if rest[j] == '"' else 1
            args.append("".join(chars))
            i = j + 1
        else:
            j = i
            while j < n and rest[j] not in " \t":
                j += 2 if rest[j] == "\\" else 1  # an escaped space (\ ) does not end the argument
            args.append(rest[i:j])
            i = j
    return args


def to_text(source: str) -> str:
    """Return the plain text of a man page's roff `source`: paragraphs separated by blank lines."""
    reader = _Reader()
    for line in source.replace("\r\n", "\n").split("\n"):
        reader.line(line)
    return reader.text()


class _Reader:
    """Reads a page line by line into paragraphs."""

    def __init__(self) -> None:
        self.paragraphs: list[str] = []
        self.lines: list[str] = []
        self.verbatim = False
        self.skip_until: str | None = None  # what ends a block being skipped: ".." or "\\}"
        self.table = 0  # 0 outside a table, 1 in its options and format lines, 2 in its rows
        self.cell_separator = "\t"
        self.tag = False  # the next text line is the tag of a `.TP` item
        self.dropping = False  # inside a section that only credits translators

    def line(self, raw: str) -> None:
        if self.skip_until is not None:
            if raw.strip() == ".." if self.skip_until == ".." else self.skip_until in raw:
                self.skip_until = None
        elif self.table:
            self._table_line(raw)
        elif raw[:1] in ".'":
            self._request(raw[1:].lstrip())
        else:
            self._add(raw.split('\\"', 1)[0])

    def _request(self, body: str) -> None:
        name, _, rest = body.partition(" ")
        rest = rest.split('\\"', 1)[0].strip()
        if not name or name.startswith("\\"):
            return
        if name in _DEFINITIONS:
            self.skip_until = ".."
        elif name in ("if", "ie", "el", "while"):
            if "\\{" in rest and "\\}" not in rest:
                self.skip_until = "\\}"
        elif name == "TS":
            self._break()
            self.table, self.cell_separator = 1, "\t"
        elif name in _HEADINGS:
            self._heading(name, unescape(" ".join(_arguments(rest))).strip())
        elif name in _VERBATIM_ON or name in _VERBATIM_OFF:
            self._break()
            self.verbatim = name in _VERBATIM_ON
        elif name == "br":
            self._end_line()
        elif name in _BREAKS:
            self._break()
            words = _arguments(rest)
            self.tag = name in ("TP", "TQ")
            if name == "IP" and words:
                self._add(words[0])  # the tag (a bullet, a number, an option); the indent after it is not text
            elif name in ("It", "Nd", "Dl", "D1") and words:
                self._add(("— " if name == "Nd" else "") + _mdoc_words(words))
        elif name in _MAN_FONTS:
            self._add(" ".join(_arguments(rest)))
        elif name in _MAN_ALTERNATING:
            self._add("".join(_arguments(rest)))
        elif name in _MDOC:
            self._add(_mdoc_words([name, *_arguments(rest)]))
        elif name in ("UE", "ME") and rest and self.lines and not self.dropping:
            self.lines[-1] += unescape(rest)  # punctuation right after a link's text
        # any other request only typesets the page (.TH, .in, .ft, .nr, .ds, .so, .IX, .UR, .ad, .PD, ...)

    def _heading(self, name: str, heading: str) -> None:
        self._break()
        if name in ("SH", "Sh"):
            self.dropping = re.sub(r"[\W_]+", "", heading.upper()) in TRANSLATION_SECTIONS
        if heading and not self.dropping:
            self.lines.append(heading)
            self._break()

    def _table_line(self, raw: str) -> None:
        if raw.startswith((".TE", "'TE")):
            self.table = 0
            self._break("\n")
        elif self.table == 1:
            separator = re.search(r"tab\s*\((.)\)", raw)
            self.cell_separator = separator.group(1) if separator else self.cell_separator
            if raw.rstrip().endswith("."):  # the last format line: the rows follow
                self.table = 2
        elif raw[:1] not in ".'" and not self.dropping:
            row = raw.replace("T{", "").replace("T}", "")
            cells = [unescape(c).strip() for c in row.split(self.cell_separator)]
            row = "  ".join(c for c in cells if c not in ("", "_", "="))
            if row:
                self.lines.append(row)

    def _add(self, raw: str) -> None:
        if self.dropping:
            return
        text = unescape(raw)
        if self.verbatim:
            self.lines.append(text.rstrip())
        elif text.strip():
            self.lines.append(text.strip())
            if self.tag:
                self.tag = False
                self._end_line()
        elif self.lines:  # a blank line in filled text ends the paragraph
            self._break()

    def _end_line(self) -> None:
        if self.lines and not self.verbatim:
            self.lines[-1] += "\n"

    def _break(self, joiner: str | None = None) -> None:
        if not self.lines:
            return
        if self.verbatim or joiner == "\n":
            paragraph = "\n".join(self.lines).strip("\n")
        else:
            paragraph = re.sub(r"[ \t]*\n[ \t]*", "\n", " ".join(self.lines)).strip()
            paragraph = re.sub(r"[ \t]{2,}", " ", paragraph)
        if paragraph.strip():
            self.paragraphs.append(paragraph)
        self.lines = []

    def text(self) -> str:
        self._break()
        return "\n\n".join(self.paragraphs)


def _mdoc_words(words: list[str]) -> str:
    """Return the words of an mdoc line as text: flags get their dash, cross references their section."""
    out: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else ""
        if word == "Fl":
            flag = following if following and following not in _MDOC else ""
            out.append("-" + flag)
            index += 2 if flag else 1
        elif word == "Xr" and index + 2 < len(words):
            out.append(f"{following}({words[index + 2]})")
            index += 3
        else:
            if word in _PUNCTUATION and out:
                out[-1] += word  # closing punctuation follows its word
            elif word not in _MDOC:
                out.append(word)
            index += 1
    return " ".join(out)
