"""Tests for the readers of Debian's manuals: roff and HTML as text, dpkg's records, untranslated paragraphs."""

from __future__ import annotations

from crossdiff_core.corpus import dpkg, html_text, roff
from crossdiff_core.corpus.untranslated import is_english

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
