"""`builtin:human`: text written by people, in English, Chinese, German, French and Spanish, from Debian's manuals.

Nothing is downloaded and nothing of it is stored in the project: it is read from Debian packages of
documentation installed on the machine (`SOURCES`; `scripts/bootstrap.sh` installs `PACKAGES` where
apt is available):

- man pages (gzipped roff, read by `roff`): the Linux man-pages project in English (`manpages`) and
  its translations with those of other tools (`manpages-de`, `manpages-fr`, `manpages-es`,
  `manpages-zh`, Simplified Chinese only: its Traditional pages are conversions of the same text);
- the Debian Reference (`debian-reference-*`) and the Debian Administrator's Handbook
  (`debian-handbook`), HTML read by `html_text`.

Each file's text is cut at paragraph boundaries into documents of at most `DOC_CHARS` characters
(a longer paragraph is cut at a space), and documents under `MIN_DOC_CHARS` are dropped (the last
piece of a page joins the one before). A paragraph of `MIN_DEDUP_CHARS` or more already taken is
not taken again (man pages repeat their boilerplate), nor is a document; paragraphs a translation
left in English are dropped (`untranslated`). Each source (a package in one language) is read file by
file, in a seeded random order, until `char_cap` characters are taken. Every document records its
package, language and the licences the package declares (`dpkg.licences`).

The text depends on the installed package versions (`package_versions()`); the result is cached per
process.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from crossdiff_core.corpus import dpkg, html_text, roff
from crossdiff_core.corpus.untranslated import is_english
from crossdiff_core.errors import CorpusError

log = logging.getLogger(__name__)

LANGUAGES = ("en", "zh", "es", "fr", "de")
DOC_CHARS = 3000
MIN_DOC_CHARS = 200
MIN_DEDUP_CHARS = 60
SOURCES_TABLE = "crossdiff_core/corpus/HUMAN_SOURCES.md"
"""The table of the packages read, their versions and licences (written by `scripts/human_sources.py`)."""


@dataclass(frozen=True)
class HumanSource:
    """The files of one Debian package that hold its text in one language."""

    package: str
    language: str
    work: str
    """What the files are, e.g. "man pages"."""
    pattern: str
    """The absolute paths of the files to read, as a glob pattern (`*` stays within a folder)."""


def _man(package: str, language: str, folder: str, project: str) -> HumanSource:
    return HumanSource(package, language, f"man pages ({project})", f"/usr/share/man/{folder}/*.gz")


def _reference(language: str, suffix: str) -> HumanSource:
    return HumanSource(f"debian-reference-{suffix}", language, "Debian Reference",
                       f"/usr/share/debian-reference/*.{suffix}.html")  # fmt: skip


def _handbook(language: str, folder: str) -> HumanSource:
    return HumanSource("debian-handbook", language, "The Debian Administrator's Handbook",
                       f"/usr/share/doc/debian-handbook/html/{folder}/*.html")  # fmt: skip


SOURCES: tuple[HumanSource, ...] = (
    _man("manpages", "en", "man[1-8]", "Linux man-pages project"),
    _man("manpages-zh", "zh", "zh_CN/man*", "Chinese man pages project, Simplified Chinese"),
    _man("manpages-es", "es", "es/man*", "manpages-l10n translations"),
    _man("manpages-fr", "fr", "fr/man*", "manpages-l10n translations"),
    _man("manpages-de", "de", "de/man*", "manpages-l10n translations"),
    _reference("en", "en"), _reference("zh", "zh-cn"), _reference("es", "es"), _reference("fr", "fr"),
    _reference("de", "de"),
    _handbook("en", "en-US"), _handbook("zh", "zh-CN"), _handbook("es", "es-ES"), _handbook("fr", "fr-FR"),
    _handbook("de", "de-DE"),
)  # fmt: skip
PACKAGES = tuple(dict.fromkeys(s.package for s in SOURCES))
"""The Debian packages read (`scripts/bootstrap.sh` installs them)."""


@dataclass(frozen=True)
class HumanDocument:
    """A piece of one page of a Debian manual."""

    package: str
    language: str
    licence: str
    """The licences the package's copyright file declares, e.g. `GPL-3+` (several separated by `; `)."""
    path: str
    """The file it was read from."""
    text: str


def page_text(path: Path) -> str:
    """Return the plain text of one installed page: a gzipped or plain man page, or an HTML file."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    return html_text.to_text(text) if path.name.endswith((".html", ".html.gz")) else roff.to_text(text)


def split_documents(text: str, language: str, seen: set[bytes]) -> list[str]:
    """Return `text` cut into documents of at most `DOC_CHARS` characters, without English or repeated paragraphs.

    Paragraphs of `MIN_DEDUP_CHARS` or more whose digest is in `seen` are dropped, and those taken
    are added to it. Documents under `MIN_DOC_CHARS` are dropped.
    """
    documents: list[list[str]] = [[]]
    for paragraph in (p.strip("\n") for p in re.split(r"\n\s*\n", text)):
        if not paragraph.strip() or is_english(paragraph, language):
            continue
        if len(paragraph) >= MIN_DEDUP_CHARS and not _first_time(paragraph, seen):
            continue
        for piece in _pieces(paragraph):
            if documents[-1] and sum(len(p) + 2 for p in documents[-1]) + len(piece) > DOC_CHARS:
                documents.append([])
            documents[-1].append(piece)
    texts = ["\n\n".join(d) for d in documents if d]
    if len(texts) > 1 and len(texts[-1]) < MIN_DOC_CHARS:
        texts[-2:] = [texts[-2] + "\n\n" + texts[-1]]
    return [t for t in texts if len(t) >= MIN_DOC_CHARS]


def _pieces(paragraph: str) -> list[str]:
    """Return `paragraph` cut into pieces of at most `DOC_CHARS` characters, at a space where there is one."""
    pieces = []
    while len(paragraph) > DOC_CHARS:
        cut = max(paragraph.rfind(" ", DOC_CHARS // 2, DOC_CHARS), paragraph.rfind("\n", DOC_CHARS // 2, DOC_CHARS))
        cut = cut if cut > 0 else DOC_CHARS
        pieces.append(paragraph[:cut].rstrip())
        paragraph = paragraph[cut:].lstrip()
    return [*pieces, paragraph] if paragraph else pieces


def _first_time(text: str, seen: set[bytes]) -> bool:
    key = hashlib.blake2b(" ".join(text.split()).encode("utf-8"), digest_size=12).digest()
    if key in seen:
        return False
    seen.add(key)
    return True


def source_files(source: HumanSource) -> list[Path]:
    """Return the installed files of `source`, sorted (none when its package is not installed)."""
    return dpkg.files(source.package, source.pattern)


def package_versions(sources: tuple[HumanSource, ...] = SOURCES) -> dict[str, str]:
    """Return the installed version of each package of `sources` (those not installed are left out)."""
    versions = {s.package: dpkg.version(s.package) for s in sources}
    return {package: v for package, v in versions.items() if v is not None}


@lru_cache(maxsize=4)
def documents(char_cap: int, sources: tuple[HumanSource, ...] = SOURCES) -> tuple[HumanDocument, ...]:
    """Return the documents of `sources`, about `char_cap` characters each, identical for the same installs.

    Raises `CorpusError` saying how to install the packages when none of them is installed, or when
    those installed have no text on the machine.
    """
    installed = package_versions(sources)
    packages = " ".join(dict.fromkeys(s.package for s in sources))
    if not installed:
        raise CorpusError(
            "builtin:human reads Debian's documentation packages, and none is installed; install them as root "
            f"with apt-get install --no-install-recommends {packages} (scripts/bootstrap.sh does it where apt is "
            "available), or use another corpus such as builtin:demo."
        )
    paragraphs_seen: set[bytes] = set()
    documents_seen: set[bytes] = set()
    out: list[HumanDocument] = []
    for source in sources:
        if source.package not in installed:
            log.info("Debian package %s is not installed; builtin:human has no text from it", source.package)
            continue
        licence = "; ".join(dpkg.licences(source.package)) or "see the package's copyright file"
        files = source_files(source)
        random.Random(f"crossdiff-human/{source.package}/{source.language}").shuffle(files)
        taken = 0
        for path in files:
            if taken >= char_cap:
                break
            try:
                text = page_text(path)
            except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
                continue  # unreadable or not UTF-8: nothing to take
            for doc in split_documents(text, source.language, paragraphs_seen):
                if _first_time(doc, documents_seen):
                    out.append(HumanDocument(source.package, source.language, licence, str(path), doc))
                    taken += len(doc)
    if not out:
        raise CorpusError(
            f"builtin:human found no text in the installed packages {', '.join(installed)}: their manuals are not "
            "on the machine (a path-exclude in /etc/dpkg/dpkg.cfg.d/ leaves out /usr/share/man and /usr/share/doc "
            f"in slim images); remove that rule and reinstall them with apt-get install --reinstall {packages}, "
            "or use another corpus such as builtin:demo."
        )
    return tuple(out)
