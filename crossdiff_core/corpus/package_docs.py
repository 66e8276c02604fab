"""Documentation text already installed on the machine: the docstrings of Python's standard library and packages.

`builtin:large` (see `builtin_corpus.large_documents`) mixes these documents with `builtin:demo`, to
reach the millions of tokens a crosscoder needs, offline, without any text copied into the project.

Each document is one module, read with `ast` (nothing is imported or run): its docstring, then each
documented class and function as its signature line and its docstring, indented the way Python
writes them. That is English technical prose with code in it (signatures, doctest examples).

- Packages come from `PACKAGES`, in a fixed order; the standard library is read from the running
  Python's `stdlib` folder. Test suites, vendored copies and tools are skipped.
- A docstring already taken is not taken again (libraries copy docstrings between classes).
- Each package gives at most `char_cap` characters, from its modules in a seeded random order, so
  that no library dominates.

The text depends on the installed versions (pinned in `requirements.txt`) and the Python version;
`package_versions()` reports them, and the result is cached per process.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import logging
import random
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

STDLIB = "stdlib"
PACKAGES: tuple[str, ...] = (
    STDLIB, "torch", "transformers", "numpy", "pandas", "sympy", "networkx", "matplotlib", "huggingface_hub",
    "datasets", "gradio", "fontTools", "pydantic", "mpmath", "accelerate", "hypothesis", "_pytest", "pygments",
    "rich", "PIL", "fsspec", "click", "jinja2", "pyarrow", "anyio", "urllib3", "requests", "httpx", "fastapi",
    "tqdm", "markdown_it", "tomlkit", "starlette",
)  # fmt: skip
"""Import names read, in this order (a package that is not installed is skipped)."""

_SKIP_PARTS = frozenset({
    "tests", "test", "testing", "_vendor", "vendor", "site-packages", "dist-packages", "idlelib", "lib2to3",
    "turtledemo", "ensurepip", "__pycache__", "benchmarks", "conftest.py",
})  # fmt: skip
_MAX_FILE_BYTES = 2_000_000


@dataclass(frozen=True)
class DocDocument:
    """The documented API of one module."""

    package: str
    module: str
    """Path of the module inside its package, e.g. `nn/modules/linear.py`."""
    text: str


def package_root(name: str) -> Path | None:
    """Return the folder of an installed package (or of the standard library for `STDLIB`), or None."""
    if name == STDLIB:
        return Path(sysconfig.get_paths()["stdlib"])
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Return the installed version of each package that is read (the Python version for the standard library)."""
    distributions = importlib.metadata.packages_distributions()
    versions = {}
    for name in packages:
        if name == STDLIB:
            versions[name] = "Python " + sys.version.split()[0]
        elif package_root(name) is not None and distributions.get(name):
            versions[name] = importlib.metadata.version(distributions[name][0])
    return versions


def module_document(source: str, seen: set[bytes] | None = None) -> str:
    """Return the documented API of one module's source: docstrings under their signature lines ("" if none).

    Docstrings whose digest is in `seen` are left out, and those taken are added to it. Raises
    `SyntaxError` (or `ValueError` for null bytes) when `source` is not Python.
    """
    lines: list[str] = []
    _document(ast.parse(source), 0, lines, set() if seen is None else seen)
    return "\n".join(lines).strip()


def _document(node: ast.AST, depth: int, lines: list[str], seen: set[bytes]) -> None:
    indent = "    " * depth
    doc = ast.get_docstring(node) if isinstance(node, _DOCUMENTED) else None
    if doc and _first_time(doc, seen):
        lines.append(_quoted(doc, indent))
    for child in getattr(node, "body", []):
        if not isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if child.name.startswith("_") and not child.name.startswith("__"):
            continue  # private helpers: rarely documented for readers
        if not _has_docs(child):
            continue
        lines.append("")
        lines.append(indent + _signature(child))
        _document(child, depth + 1, lines, seen)


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _has_docs(node: ast.AST) -> bool:
    """Whether `node` or one of its public classes and functions has a docstring."""
    if ast.get_docstring(node):
        return True
    return any(isinstance(child, _DOCUMENTED) and not (child.name.startswith("_") and not child.name.startswith("__"))
               and _has_docs(child) for child in getattr(node, "body", []))  # fmt: skip


def _first_time(doc: str, seen: set[bytes]) -> bool:
    key = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=12).digest()
    if key in seen:
        return False
    seen.add(key)
    return True


def _signature(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)  # keywords (metaclass=...) left out
        return f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}:"


def _quoted(doc: str, indent: str) -> str:
    body = "\n".join((indent + line) if line.strip() else "" for line in doc.replace('"""', "'''").splitlines())
    return f'{indent}"""{body[len(indent) :]}\n{indent}"""' if "\n" in doc else f'{indent}"""{doc.strip()}"""'


def _modules(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(part in _SKIP_PARTS or part.startswith("test_") for part in parts):
            continue
        files.append(path)
    return sorted(files)


@lru_cache(maxsize=4)
def documents(char_cap: int = 3_000_000, packages: tuple[str, ...] = PACKAGES) -> tuple[DocDocument, ...]:
    """Return the documents of `packages`, at most `char_cap` characters each, identical for the same installs."""
    seen: set[bytes] = set()
    out: list[DocDocument] = []
    for name in packages:
        root = package_root(name)
        if root is None:
            log.info("package %s is not installed; its documentation is skipped", name)
            continue
        modules = _modules(root)
        random.Random(f"crossdiff-docs/{name}").shuffle(modules)
        taken = 0
        for path in modules:
            if taken >= char_cap:
                break
            try:
                if path.stat().st_size > _MAX_FILE_BYTES:
                    continue
                text = module_document(path.read_text(encoding="utf-8"), seen)
            except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
                continue  # not readable Python 3 source: nothing to take
            if len(text) < 200:
                continue
            out.append(DocDocument(name, path.relative_to(root).as_posix(), text))
            taken += len(text)
    return tuple(out)
