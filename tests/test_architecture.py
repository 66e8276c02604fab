"""The import rules of ARCHITECTURE.md, read from every import statement of the core and the app (those inside
functions too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "crossdiff_core"
APP = ROOT / "crossdiff_app"
APP_SHARED = {"state", "render", "estimates", "errors", "gpu", "server", "known_answer"}
"""The app's modules that every tab uses: they never import a tab or `ui`."""

# The stages of ARCHITECTURE.md, top to bottom: a stage may import its own row and the rows above it.
STAGES = [
    {"errors", "files", "distributed", "cpu_threads", "__init__"},
    {"corpus"},
    {"compute_dtype", "allocator", "embedding_storage", "models", "planning"},
    {"alignment"},
    {"crosscoder"},
    {"activations"},
    {"training"},
    {"analysis"},
    {"hub"},
    {"organisms", "demo_corpus", "synthetic", "synthetic_multi"},
    {"workspace"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}
NO_MODELS = {"crossdiff_core.models", "transformers"}
FORBIDDEN = {
    "crosscoder": NO_MODELS,
    "training": NO_MODELS,
    "corpus": NO_MODELS | {"torch"},
}


def stage_of(module: str) -> str:
    """Return the stage of a dotted `crossdiff_core` module: its first component under the package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def core_imports(package: Path | None = None) -> list[tuple[str, int, str]]:
    """Return `(module, line, imported module)` for every import in `package` (default `crossdiff_core`), outside
    `if TYPE_CHECKING:`, and every module a package's `_LAZY` table imports on first use."""
    found = []
    for path in sorted((package or CORE).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}  # fmt: skip
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                found += [(module, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "crossdiff_core":  # `from crossdiff_core import cli` imports a stage
                    found += [(module, node.lineno, f"crossdiff_core.{alias.name}") for alias in node.names]
                else:
                    found.append((module, node.lineno, node.module))
            elif isinstance(node, ast.ImportFrom) and node.level > 0:
                found.append((module, node.lineno, f"relative import (level {node.level})"))
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
                # a package's names imported on first use: {name: "module that defines it"}
                found += [(module, v.lineno, v.value) for v in node.value.values if isinstance(v, ast.Constant)]
    return found


def test_every_stage_is_named_in_the_rules():
    stages = {stage_of(m) for m, _, _ in core_imports()} | {
        p.stem if p.is_file() else p.name for p in CORE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
    }
    assert stages <= RANK.keys(), f"add these to ARCHITECTURE.md and STAGES: {sorted(stages - RANK.keys())}"


def test_imports_only_go_up_the_stages():
    wrong = []
    for module, line, imported in core_imports():
        if imported.startswith("relative import"):
            wrong.append(f"{module}:{line} uses a {imported}; import absolutely")
            continue
        if not imported.startswith("crossdiff_core"):
            continue
        here, there = stage_of(module), stage_of(imported)
        if imported == "crossdiff_core.__version__":
            continue
        if RANK[there] > RANK[here]:
            wrong.append(f"{module}:{line} imports {imported} (stage {there} is below {here})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stages_that_must_not_load_models(stage):
    wrong = [
        f"{module}:{line} imports {imported}"
        for module, line, imported in core_imports()
        if stage_of(module) == stage and any(imported == f or imported.startswith(f + ".") for f in FORBIDDEN[stage])
    ]
    assert not wrong, "\n".join(wrong)


def test_the_core_never_imports_the_app():
    wrong = [
        f"{module}:{line} imports {imported}"
        for module, line, imported in core_imports()
        if imported.split(".")[0] in {"app", "crossdiff_app", "gradio", "gradio_client"}
    ]
    assert not wrong, "\n".join(wrong)


def test_the_cli_parser_imports_no_torch():
    """`python -m crossdiff_core --help` answers at once: the parser reads its defaults from torch-free modules, and
    the commands import torch, transformers and the models only when they run."""
    code = (
        "import sys\n"
        "from crossdiff_core.cli.main import COMMANDS\n"
        "from crossdiff_core.cli.args import build_parser\n"
        "build_parser().parse_args(['train', '--store', 's', '--out', 'o'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'crossdiff_core.models') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"building the CLI's parser imported {result.stdout.strip()}"


def test_lazy_package_names_resolve():
    """Every name a package imports on first use is defined where its `_LAZY` table says."""
    import crossdiff_core.analysis
    import crossdiff_core.crosscoder

    for package in (crossdiff_core.analysis, crossdiff_core.crosscoder):
        assert set(package._LAZY) <= set(package.__all__)
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018


def test_the_app_imports_absolutely_and_its_shared_modules_import_no_tab():
    wrong = []
    for module, line, imported in core_imports(APP):
        if imported.startswith("relative import"):
            wrong.append(f"{module}:{line} uses a {imported}; import absolutely")
        elif module.split(".")[1] in APP_SHARED and imported.startswith(("crossdiff_app.tabs", "crossdiff_app.ui")):
            wrong.append(f"{module}:{line} imports {imported} (a shared module of the app imports no tab)")
        elif module.startswith("crossdiff_app.tabs") and imported.startswith("crossdiff_app.ui"):
            wrong.append(f"{module}:{line} imports {imported} (ui puts the tabs together, not the other way round)")
    assert {module.split(".")[1] for module, _, _ in core_imports(APP)} >= APP_SHARED | {"tabs", "ui"}
    assert not wrong, "\n".join(wrong)


def test_the_rules_catch_a_broken_import(tmp_path, monkeypatch):
    """The checks read real files: a training module that loads a model, and a crosscoder module that imports
    the analysis, must be reported."""
    fake = tmp_path / "crossdiff_core"
    (fake / "training").mkdir(parents=True)
    (fake / "training" / "bad.py").write_text("def f():\n    from crossdiff_core.models import load_model\n")
    (fake / "crosscoder").mkdir()
    (fake / "crosscoder" / "bad.py").write_text("from crossdiff_core.analysis.scores import rank\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    monkeypatch.setattr(f"{__name__}.CORE", fake)
    with pytest.raises(AssertionError, match="training.bad:2 imports crossdiff_core.models"):
        test_stages_that_must_not_load_models("training")
    with pytest.raises(AssertionError, match="crosscoder.bad:1 imports crossdiff_core.analysis.scores"):
        test_imports_only_go_up_the_stages()
