"""Tests for crossdiff_core.corpus.human_docs and `builtin:human`, with their readers (roff, html_text, dpkg, untranslated).

The tests that read Debian's installed manuals skip when the packages are not installed; `scripts/bootstrap.sh`
installs them where it runs as root with apt.
"""

from __future__ import annotations

import collections
import logging
import re
from pathlib import Path, PurePosixPath

import pytest

from crossdiff_core.corpus import dpkg, html_text, human_docs, package_docs, roff
from crossdiff_core.corpus.sources import describe, iter_documents
from crossdiff_core.corpus.untranslated import is_english
from crossdiff_core.errors import CorpusError

REPO = Path(__file__).resolve().parents[1]
INSTALL = "apt-get install --no-install-recommends " + " ".join(human_docs.PACKAGES)
needs_packages = pytest.mark.skipif(
    set(human_docs.package_versions()) != set(human_docs.PACKAGES),
    reason=f"Debian's manuals are not all installed; as root: {INSTALL} (or scripts/bootstrap.sh)",
)

PAGE = r""".\" Copyright: a comment, never shown
'\" t
.de Vb
.  ft CW
..
.TH GREET 1 "Mai 2024" "greet 1.0" "Benutzerbefehle"
.SH BEZEICHNUNG
greet \- grüßt freundlich
.SH ÜBERSICHT
\fBgreet\fP [\fI\,OPTION\/\fP]… \fIName\fR
.SH BESCHREIBUNG
.B greet
schreibt einen Gruß
an \fIName\fP auf die Standardausgabe.
Die Ausgabe endet mit einem Zeilenumbruch\(em immer.
.PP
Zitate: \*(lqHallo\*(rq, \(aqeinfach\(aq und caf\[u00E9].
.ie n .sp
.el \{\
.ft B
nur beim Setzen
.\}
.TP
.BR \-n ", " \-\-name =\fIName\fP
Der Name, der gegrüßt wird.
.IP \(bu 2
Ein Punkt einer Liste.
.SS Beispiel
.nf
$ greet \-n Welt
Hallo, Welt!
.fi
.TS
tab(;);
l l.
Code;Bedeutung
0;Erfolg
.TE
Siehe
.Xr hello 1
und
.Fl v .
.SH ÜBERSETZUNG
Die deutsche Übersetzung wurde von Jemand erstellt.
"""


def test_a_man_page_reads_as_its_paragraphs():
    assert roff.to_text(PAGE) == (
        "BEZEICHNUNG\n\ngreet - grüßt freundlich\n\nÜBERSICHT\n\ngreet [OPTION]… Name\n\nBESCHREIBUNG\n\n"
        "greet schreibt einen Gruß an Name auf die Standardausgabe. Die Ausgabe endet mit einem Zeilenumbruch— immer."
        "\n\nZitate: “Hallo”, 'einfach' und café.\n\n-n, --name=Name\nDer Name, der gegrüßt wird.\n\n"
        "• Ein Punkt einer Liste.\n\nBeispiel\n\n$ greet -n Welt\nHallo, Welt!\n\nCode  Bedeutung\n0  Erfolg\n\n"
        "Siehe hello(1) und -v."
    )
    assert roff.unescape(r"\(em\[u00E9]\*(lq\fBx\fP\s-1y\s0\&\-\e") == "—é“xy-\\"
    assert roff.to_text(".so man1/other.1\n") == ""  # a page that only points to another


def test_an_html_page_reads_as_its_prose():
    page = """<?xml version="1.0" encoding="UTF-8"?>
<html><head><title>Kapitel 6</title><style>p { color: red }</style></head>
<body><div id="banner"><a href="x">Download the ebook</a></div>
<ul class="docnav top"><li>Zurück</li><li>Weiter</li></ul>
<div class="chapter"><h1 class="title"><a id="apt"/>Kapitel 6. APT</h1>
<div class="toc"><dl class="toc"><dt>6.1. Quellen</dt></dl></div>
<p class="para">Der Befehl <code class="command">apt-cache</code>
   zeigt   Informationen&nbsp;an &amp; mehr.</p>
<table><tr><td>apt</td><td>A package manager</td></tr></table>
<ul><li>Erstens</li><li>Zweitens<br/>neue Zeile</li></ul>
<pre class="screen">$ apt-cache policy
  Installed: 1.0</pre>
<script>var x = "<p>never</p>";</script>
</div><div class="navfooter">Nach oben</div></body></html>"""
    assert html_text.to_text(page) == (
        "Kapitel 6. APT\n\nDer Befehl apt-cache zeigt Informationen an & mehr.\n\nErstens\n\nZweitens\nneue Zeile"
        "\n\n$ apt-cache policy\n  Installed: 1.0"
    )


def test_licences_come_from_the_machine_readable_copyright_file():
    copyright_text = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: greet

Files: man1/greet.1
Copyright: 2024 Someone
License: BSD-2-clause

Files: *
Copyright: 2024 Someone
License: GPL-3+

Files: debian/*
Copyright: 2024 A packager
License: GPL-2+

Files: po/de/*.po
       po/fr/*.po
Copyright: 2024 Translators
License: GPL-3+

License: GPL-3+
 This program is free software: you can redistribute it.
"""
    assert dpkg.parse_licences(copyright_text) == ("GPL-3+", "BSD-2-clause")
    assert dpkg.parse_licences("This package was debianized by someone.\n\nIt is under the GPL.\n") == ()
    assert dpkg.version("no-such-package-here") is None and dpkg.files("no-such-package-here") == []


def test_dpkg_records_give_versions_and_files(tmp_path, monkeypatch):
    (tmp_path / "info").mkdir()
    (tmp_path / "status").write_text(
        "Package: greet\nStatus: install ok installed\nVersion: 1.0-2\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 0.9\n"
    )
    man = tmp_path / "share" / "man" / "de" / "man1"
    man.mkdir(parents=True)
    (man / "greet.1.gz").write_bytes(b"")
    (man / "hello.1.gz").symlink_to(man / "greet.1.gz")
    (man.parent / "greet.conf").write_text("")
    listed = [tmp_path / "share", man, man / "greet.1.gz", man / "hello.1.gz", man.parent / "greet.conf"]
    (tmp_path / "info" / "greet.list").write_text("/.\n" + "".join(f"{p}\n" for p in listed))
    monkeypatch.setattr(dpkg, "DPKG_DIR", tmp_path)
    dpkg._installed_versions.cache_clear()
    try:
        assert dpkg.version("greet") == "1.0-2" and dpkg.version("gone") is None
        assert dpkg.files("greet") == [man.parent / "greet.conf", man / "greet.1.gz"]  # no folder, no link
        assert dpkg.files("greet", f"{tmp_path}/share/man/*/man[1-8]/*.gz") == [man / "greet.1.gz"]
        assert dpkg.files("greet", f"{tmp_path}/share/*.gz") == []  # `*` stays within a folder
    finally:
        dpkg._installed_versions.cache_clear()


def test_paragraphs_left_in_english_by_a_translation_are_recognised():
    english = "Installing the libpam-cracklib package enables you to force stricter password rules on the system."
    assert is_english(english, "de") and is_english(english, "fr") and is_english(english, "zh")
    assert not is_english(english, "en")
    assert not is_english("Die Bibliothek ist ein Backend für die Kameras, und sie wird von der Datei gesteuert.", "de")
    assert not is_english(
        "Le fichier contient la liste des adresses, et il est lu par le programme au démarrage.", "fr"
    )
    assert not is_english(
        "El programa lee el archivo de la configuración y lo usa para la conexión con el servidor.", "es"
    )
    assert not is_english(
        "在复制文件的时候，rsync(8) 比其他工具提供了更多的特性，and it is the one of them to use.", "zh"
    )
    assert not is_english("Run the tool", "de")  # too short to tell
    assert not is_english("$ apt-cache search package use::searching --names-only --full", "de")  # a command


def test_split_documents_cuts_at_paragraphs_and_drops_repeats_and_english():
    paragraphs = [f"Absatz {i}: " + "Wörter und Sätze der Seite. " * 20 for i in range(12)]
    boilerplate = "Diese Übersetzung ist Freie Dokumentation; lesen Sie die GNU General Public License."
    english = "This paragraph was never translated, so the German page keeps it in English for now."
    long = "Wort " * 2000
    text = "\n\n".join([boilerplate, *paragraphs[:6], english, boilerplate, long, *paragraphs[6:], "Ende."])
    seen: set[bytes] = set()
    docs = human_docs.split_documents(text, "de", seen)
    assert len(docs) > 3
    assert all(human_docs.MIN_DOC_CHARS <= len(d) <= human_docs.DOC_CHARS + human_docs.MIN_DOC_CHARS for d in docs)
    joined = "\n\n".join(docs)
    assert joined.count(boilerplate) == 1 and english not in joined
    assert all(joined.count(p.strip()) == 1 for p in paragraphs)
    assert joined.endswith("Ende.")  # the short last piece joined the document before it
    assert human_docs.split_documents(text, "de", seen) == []  # every long paragraph was taken already


@needs_packages
def test_documents_are_reproducible_deduplicated_capped_and_labelled():
    sources = tuple(
        s for s in human_docs.SOURCES if s.work.startswith("man pages") or s.package == "debian-reference-de"
    )
    first = human_docs.documents(12_000, sources)
    human_docs.documents.cache_clear()
    again = human_docs.documents(12_000, sources)
    assert first == again and first is not again
    by_source = collections.defaultdict(list)
    for doc in first:
        by_source[doc.package, doc.language].append(doc)
    assert set(by_source) == {(s.package, s.language) for s in sources}
    assert {d.language for d in first} == set(human_docs.LANGUAGES)
    patterns = {(s.package, s.language): s.pattern for s in sources}
    for key, docs in by_source.items():
        last_file = docs[-1].path
        # files are read until the cap is passed: everything before the last one is under it
        assert sum(len(d.text) for d in docs if d.path != last_file) < 12_000, key
        assert all(PurePosixPath(d.path).match(patterns[key]) for d in docs)
        assert docs[0].licence == "; ".join(dpkg.licences(key[0])) and all(d.licence == docs[0].licence for d in docs)
    assert by_source["manpages-de", "de"][0].licence == "GPL-3+"
    texts = [d.text for d in first]
    assert len(set(texts)) == len(texts)
    assert all(human_docs.MIN_DOC_CHARS <= len(t) <= human_docs.DOC_CHARS + human_docs.MIN_DOC_CHARS for t in texts)
    assert all(re.search(r"[\u4e00-\u9fff]", d.text) for d in by_source["manpages-zh", "zh"])
    german = "\n".join(d.text for d in by_source["manpages-de", "de"])
    assert "debian-l10n-german" not in german and "\\f" not in german  # no translators' credits, no roff left


@needs_packages
def test_builtin_human_holds_every_package_in_a_mixed_order(small_human):
    docs = small_human.human_documents()
    assert {d.source for d in docs} == set(human_docs.PACKAGES)
    assert {d.language for d in docs} == set(human_docs.LANGUAGES)
    first_half = {d.language for d in docs[: len(docs) // 2]}
    assert first_half == set(human_docs.LANGUAGES)  # mixed, not one package after another
    german = small_human.human_documents("de")
    assert german and all(d.language == "de" for d in german)
    assert next(iter_documents("builtin:human:de")) == german[0].text
    assert "Debian's man pages and manuals" in describe("builtin:human")
    comp = small_human.composition("human")
    assert comp["debian-handbook"]["language"] == "mixed" and comp["manpages-zh"]["language"] == "zh"
    assert sum(c["documents"] for c in comp.values()) == len(docs) and "en_history" not in comp


def test_builtin_human_has_no_code():
    with pytest.raises(CorpusError, match="builtin:human:<language>: the same but code"):
        iter_documents("builtin:human:code")


@pytest.fixture
def without_packages(monkeypatch, tmp_path, small_human):
    """As on a machine without Debian's manuals: dpkg's database is an empty folder."""
    monkeypatch.setattr(dpkg, "DPKG_DIR", tmp_path)
    dpkg._installed_versions.cache_clear()
    human_docs.documents.cache_clear()
    yield small_human
    dpkg._installed_versions.cache_clear()
    human_docs.documents.cache_clear()


def test_without_the_packages_builtin_human_says_how_to_install_them(without_packages, monkeypatch, caplog):
    with pytest.raises(CorpusError, match=re.escape(INSTALL)):
        iter_documents("builtin:human")
    # builtin:large goes on without it, saying so (the Python packages' documentation is left out here: seconds)
    monkeypatch.setattr(package_docs, "documents", lambda char_cap: ())
    without_packages._large_documents.cache_clear()
    with caplog.at_level(logging.WARNING, logger="crossdiff_core.corpus.builtin"):
        large = without_packages.large_documents()
    without_packages._large_documents.cache_clear()
    assert large and not {d.source for d in large} & set(human_docs.PACKAGES)
    assert "builtin:large is read without builtin:human" in caplog.text and INSTALL in caplog.text


@pytest.mark.skipif(dpkg.version("dpkg") is None, reason="not a Debian system: dpkg is not installed")
def test_installed_packages_without_their_files_say_why():
    nowhere = human_docs.HumanSource("dpkg", "en", "man pages", "/no/such/folder/*.gz")
    with pytest.raises(CorpusError, match="path-exclude in /etc/dpkg/dpkg.cfg.d/"):
        human_docs.documents(1000, (nowhere,))


def test_the_sources_table_lists_every_package_and_the_readme_links_it():
    table = (REPO / human_docs.SOURCES_TABLE).read_text(encoding="utf-8")
    assert all(f"| `{package}` |" in table for package in human_docs.PACKAGES)
    assert human_docs.SOURCES_TABLE in (REPO / "README.md").read_text(encoding="utf-8")
