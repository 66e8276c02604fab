"""Write `crossdiff_core/corpus/HUMAN_SOURCES.md`: the Debian packages `builtin:human` reads, their versions and licences.

    python scripts/human_sources.py

Run it with the packages installed (`scripts/bootstrap.sh` installs them where apt is available), and
again when their versions change. The licences are those each package's copyright file declares.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossdiff_core.corpus import dpkg, human_docs

INTRO = """# Sources of `builtin:human`

`builtin:human` (and the part of `builtin:large` written by people) is read from these Debian
packages, installed on the machine; nothing of them is copied into the project. Written by
`python scripts/human_sources.py` from the packages installed when it ran.

Licences are the short names each package's machine-readable copyright file
(`/usr/share/doc/<package>/copyright`) declares, that of `Files: *` first, the packaging's own
(`debian/*`) left out. Each document of the corpus carries its package's list
(`HumanDocument.licence` in `crossdiff_core/corpus/human_docs.py`). Read the copyright file for
which file is under which licence.
"""


def table() -> str:
    """Return the Markdown page: one row per package with its version, languages, what it holds and its licences."""
    rows = ["| package | version | language | what is read | licences |", "|---|---|---|---|---|"]
    for package in human_docs.PACKAGES:
        sources = [s for s in human_docs.SOURCES if s.package == package]
        languages = ", ".join(s.language for s in sources)
        version = dpkg.version(package) or "not installed"
        licences = "; ".join(f"`{name}`" for name in dpkg.licences(package)) or "see its copyright file"
        rows.append(f"| `{package}` | {version} | {languages} | {sources[0].work} | {licences} |")
    command = "apt-get install --no-install-recommends " + " ".join(human_docs.PACKAGES)
    return f"{INTRO}\n" + "\n".join(rows) + f"\n\nInstall them (as root):\n\n```bash\n{command}\n```\n"


def main() -> None:
    """Write the page, unless none of the packages is installed."""
    if not human_docs.package_versions():
        raise SystemExit("none of the Debian packages of builtin:human is installed; run scripts/bootstrap.sh as root")
    out = ROOT / human_docs.SOURCES_TABLE
    out.write_text(table(), encoding="utf-8")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
