"""torch's CPU threads sleep when idle (OMP_WAIT_POLICY=PASSIVE) in the command line and the app, unless the
environment says otherwise, and only where it can still take effect (before torch loads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def policy_after(code: str, policy: str | None = None) -> str:
    """Return OMP_WAIT_POLICY as a fresh Python process sees it after running `code` ('-' when unset)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    script = f"{code}\nimport os\nprint(os.environ.get('OMP_WAIT_POLICY', '-'))\n"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()[-1]


CLI = "from crossdiff_core.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize(("code", "policy", "expected"), [
    (CLI, None, "PASSIVE"),
    (CLI, "ACTIVE", "ACTIVE"),  # the user's choice is kept
    ("import crossdiff_app", None, "PASSIVE"),
    ("import torch\nfrom crossdiff_core.cpu_threads import sleep_when_idle\nsleep_when_idle()", None, "-"),
])  # fmt: skip
def test_threads_sleep_when_idle_where_it_takes_effect(code, policy, expected):
    assert policy_after(code, policy) == expected


def test_torch_reads_the_policy_set_before_it_loads():
    """OpenMP starts with torch with threads that never spin (GNU OpenMP prints what it read: GOMP_SPINCOUNT is
    300000 by default, 0 when passive)."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"} | {"OMP_DISPLAY_ENV": "VERBOSE"}
    result = subprocess.run([sys.executable, "-c", CLI + "\nimport torch"], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    if "GOMP_SPINCOUNT" not in result.stderr:
        pytest.skip("torch does not run on GNU OpenMP here")
    assert "GOMP_SPINCOUNT = '0'" in result.stderr
