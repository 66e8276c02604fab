#!/usr/bin/env bash
# Create .venv/ in the repository root and install what CrossDiff needs (idempotent).
#   scripts/bootstrap.sh app    runtime + demo models (+ Debian's manuals for builtin:human)
#   scripts/bootstrap.sh test   the same + test tools (+ Debian's chromium for the browser test)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-app}"
python3 -m venv .venv 2>/dev/null || python3 -m venv --without-pip .venv
files="requirements.txt requirements-demo.txt"
[ "$target" = test ] && files="$files requirements-dev.txt"
stamp=".venv/.installed-$target-$(cat $files | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-demo.txt
  [ "$target" = test ] && .venv/bin/python -m pip install -q -r requirements-dev.txt
  touch "$stamp"
fi
# The app's browser test drives Debian's chromium through Playwright (never `playwright install`); a small CJK
# font lets its screenshots show the Chinese examples. Installed only when missing and we are root.
if [ "$target" = test ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei) \
    >/dev/null 2>&1 || echo "bootstrap: could not install chromium; the browser test will be skipped" >&2
fi
# builtin:human reads Debian's manuals in five languages (crossdiff_core/corpus/human_docs.py lists the packages).
# Installed when missing and we are root; without them builtin:human says how to install them.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  manuals="$(.venv/bin/python -c 'from crossdiff_core.corpus.human_docs import PACKAGES; print(*PACKAGES)')" || manuals=""
  if [ -n "$manuals" ] && ! dpkg -s $manuals >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $manuals) \
      >/dev/null 2>&1 || echo "bootstrap: could not install Debian's manuals; builtin:human will not be available" >&2
  fi
fi
