#!/usr/bin/env bash
# Create .venv/ in the repository root and install what CrossDiff needs (idempotent).
#   scripts/bootstrap.sh app    runtime + demo models
#   scripts/bootstrap.sh test   runtime + demo models + test tools
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
