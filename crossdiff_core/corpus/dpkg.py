"""What Debian's package manager records about an installed package: its version, its files and its licences.

Read from dpkg's database (`DPKG_DIR`: `status` and `info/<package>.list`) and from the package's
`copyright` file under `DOC_DIR`, without running dpkg: on a machine without Debian packages every
package reads as not installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

DPKG_DIR = Path("/var/lib/dpkg")
DOC_DIR = Path("/usr/share/doc")


@cache
def _installed_versions() -> dict[str, str]:
    """Return the version of every package dpkg's status file marks installed (empty without dpkg)."""
    try:
        text = (DPKG_DIR / "status").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    versions = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Status|Version): *(.*)$", stanza, re.MULTILINE))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def version(package: str) -> str | None:
    """Return the installed version of a Debian package, or None when it is not installed."""
    return _installed_versions().get(package)


def files(package: str, pattern: str = "/**") -> list[Path]:
    """Return the regular files (not folders, not links) an installed package put on the machine, sorted.

    Only those whose absolute path matches the glob `pattern` (all by default; see `_glob`).
    """
    info = DPKG_DIR / "info"
    matches = _glob(pattern)
    paths = set()
    for listing in sorted(info.glob(f"{package}.list")) + sorted(info.glob(f"{package}:*.list")):
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            if matches(line):
                path = Path(line)
                if path.is_file() and not path.is_symlink():
                    paths.add(path)
    return sorted(paths)


def _glob(pattern: str) -> Callable[[str], re.Match | None]:
    """Return a test of whole absolute paths against a glob: `**` for anything, `*` and `?` within a folder, `[...]`."""
    pieces = re.split(r"(\*\*|\*|\?|\[[^\]]+\])", pattern)
    translated = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    regex = "".join(translated.get(p) or (p if p.startswith("[") else re.escape(p)) for p in pieces)
    return re.compile(regex + r"\Z").match


def licences(package: str) -> tuple[str, ...]:
    """Return the short names of the licences a package's copyright file declares (see `parse_licences`)."""
    try:
        text = (DOC_DIR / package / "copyright").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    return parse_licences(text)


def parse_licences(copyright_text: str) -> tuple[str, ...]:
    """Return the licence short names of a machine-readable Debian copyright file, that of `Files: *` first.

    Only paragraphs that name files count (the others spell out a licence's text), and those about
    the packaging alone (`Files: debian/*`) are left out. A copyright file in free form gives ().
    """
    names: list[str] = []
    for paragraph in re.split(r"\n\s*\n", copyright_text):
        files_field = re.search(r"^Files:[ \t]*(.*(?:\n[ \t]+.*)*)", paragraph, re.MULTILINE)
        licence = re.search(r"^License:[ \t]*(.+)$", paragraph, re.MULTILINE)
        if not files_field or not licence:
            continue
        patterns = files_field.group(1).split()
        if patterns and all(p.startswith("debian/") for p in patterns):
            continue
        name = licence.group(1).strip()
        if name in names:
            continue
        if patterns == ["*"]:
            names.insert(0, name)
        else:
            names.append(name)
    return tuple(names)
