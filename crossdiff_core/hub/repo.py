"""Publish, find and load CrossDiff crosscoders on the Hugging Face Hub.

- `push_to_hub(crosscoder, repo_id)` uploads `config.json`, `model.safetensors`, any `feature_index/`
  folder and a generated model card (`README.md`) whose front matter says `library_name: crossdiff`,
  tags it `crosscoder`, `dfc`, `model-diffing`, names both models as `base_model` and records the pair
  under a `crossdiff:` key. The card body is `model_card_template.md` (next to this module), filled in.
- `load_crosscoder(repo_id_or_path)` loads a local folder, or downloads only the files it needs from a
  Hub repo (honouring `HF_HUB_OFFLINE`: then only the local cache is used). `open_crosscoder` does the
  same and also returns the local folder, with the repo's `feature_index/` downloaded next to the weights
  when it has one (so labels and the index come along).
- `find_on_hub(model_a, model_b)` lists the published crosscoders of a model pair, in either order.

The endpoint, cache and offline mode are huggingface_hub's own (`HF_ENDPOINT`, `HF_HUB_CACHE`,
`HF_HUB_OFFLINE`). Tokens go straight to huggingface_hub: CrossDiff never logs them, writes them to
disk or puts them in an error message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, ModelCardData, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils import validate_repo_id

from crossdiff_core import __version__
from crossdiff_core.crosscoder.config import CrossCoderConfig, is_multi_folder
from crossdiff_core.crosscoder.model import CONFIG_FILE, SUMMARY_FILE, WEIGHTS_FILE, CrossCoder
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.models import identify

LIBRARY_NAME = "crossdiff"
CARD_TAGS = ("crosscoder", "dfc", "model-diffing")
CARD_FILE = "README.md"
FEATURE_INDEX_DIR = "feature_index"
CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"
CARD_METADATA_KEY = "crossdiff"
"""Front-matter key of the card that records the model pair, layers and block sizes (read by `find_on_hub`)."""
IMPORT_FILE = "import.json"
"""Written by `import-dl`: the source file, its sha256, its config and how it was converted."""
LATENT_MAPPING_FILE = "latent_mapping.json"
"""Written by `import-dl`: source latent id ↔ CrossDiff latent id, both directions."""

_LOAD_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
_IMPORT_FILES = (IMPORT_FILE, LATENT_MAPPING_FILE)
_RESERVED_NAMES = frozenset({CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, FEATURE_INDEX_DIR, *_IMPORT_FILES})


@dataclass(frozen=True)
class HubCrosscoder:
    """A crosscoder published on the Hub for a model pair, as `find_on_hub` reports it."""

    repo_id: str
    """The Hub repo holding the crosscoder; pass it to `load_crosscoder`."""

    model_a: str
    """The crosscoder's model A (its first block reads from this model)."""

    model_b: str
    """The crosscoder's model B."""

    layer_a: int | None
    """Layer of model A whose activations the crosscoder reads."""

    layer_b: int | None
    """Layer of model B whose activations the crosscoder reads."""

    dict_size: int | None
    """Total number of latents."""

    n_exclusive_a: int | None
    """Number of A-exclusive latents (0 for a standard crosscoder)."""

    n_exclusive_b: int | None
    """Number of B-exclusive latents (0 for a standard crosscoder)."""

    swapped: bool
    """True when the repo's model A is the model you asked for as model B (and vice versa)."""

    last_modified: datetime | None
    """When the repo last changed on the Hub."""

    def describe(self) -> str:
        """Return a one-line description, saying so when models A and B are swapped relative to the query."""
        layers = f"layers {self.layer_a} / {self.layer_b}"
        blocks = f"{self.n_exclusive_a} A-exclusive + {self.n_exclusive_b} B-exclusive of {self.dict_size} latents"
        line = f"{self.repo_id}: A = {self.model_a}, B = {self.model_b} ({layers}; {blocks})"
        if self.swapped:
            line += "; models A and B are swapped relative to your query: its model A is the model you gave as B"
        return line


# ---------------------------------------------------------------------------------------------- push


def push_to_hub(
    crosscoder: CrossCoder | str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    extra_files: Sequence[str | os.PathLike] = (),
    commit_message: str = "Upload CrossDiff crosscoder",
) -> str:
    """Upload a crosscoder (a `CrossCoder` or its saved folder) with a generated model card; return the repo URL.

    A folder of a crosscoder of three models or more goes through `hub.multi.push_multi_to_hub`.

    From a folder, `config.json` and `model.safetensors` are uploaded, plus `feature_index/` and the files
    `import-dl` writes (`import.json`, `latent_mapping.json`) when present; `training.json` (if any) fills
    the card's training section, `import.json` its import section. `extra_files` (files or folders) are
    uploaded next to them under their own names. The repo is created if needed (`private` only applies then).
    """
    if not isinstance(crosscoder, CrossCoder) and is_multi_folder(crosscoder):
        from crossdiff_core.hub.multi import push_multi_to_hub

        if extra_files:
            raise CrossCoderError("extra files are not published with a crosscoder of three models or more yet")
        return push_multi_to_hub(crosscoder, repo_id, token, private, commit_message)
    require_online("pushing to the Hub")
    check_token(token)
    with tempfile.TemporaryDirectory(prefix="crossdiff-push-") as tmp:
        staging = Path(tmp)
        config, training = _stage_crosscoder(crosscoder, staging)
        for extra in extra_files:
            _stage_extra(Path(extra), staging)
        card = render_model_card(
            config, repo_id, training, has_feature_index=(staging / FEATURE_INDEX_DIR).is_dir(),
            provenance=_read_json_object(staging / IMPORT_FILE),
        )  # fmt: skip
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        return upload_staged(staging, repo_id, token, private, commit_message)


def upload_staged(staging: Path, repo_id: str, token: str | None, private: bool, commit_message: str) -> str:
    """Create the repo if needed and upload the staged folder as one commit; return the repo URL."""
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=staging, commit_message=commit_message)
    except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as error:
        raise hub_error(error, f"pushing to {repo_id}", token, write=True) from None
    return str(url)


def _stage_crosscoder(
    crosscoder: CrossCoder | str | os.PathLike, staging: Path
) -> tuple[CrossCoderConfig, dict | None]:
    """Put the crosscoder's files into `staging`; return its config and training summary (None if absent)."""
    if isinstance(crosscoder, CrossCoder):
        crosscoder.save_pretrained(staging)
        return crosscoder.config, None
    folder = Path(crosscoder)
    config = _read_config(folder, str(folder))
    if not (folder / WEIGHTS_FILE).is_file():
        raise CrossCoderError(f"{folder} has no {WEIGHTS_FILE}: save the crosscoder with save_pretrained first")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        _link_or_copy(folder / name, staging / name)
    if (folder / FEATURE_INDEX_DIR).is_dir():
        shutil.copytree(folder / FEATURE_INDEX_DIR, staging / FEATURE_INDEX_DIR)
    for name in _IMPORT_FILES:
        if (folder / name).is_file():
            _link_or_copy(folder / name, staging / name)
    return config, _read_json_object(folder / SUMMARY_FILE)


def _stage_extra(path: Path, staging: Path) -> None:
    """Copy one extra file or folder into `staging` under its own name; refuse names the crosscoder already uses."""
    if not path.exists():
        raise CrossCoderError(f"extra file {path} does not exist; check the path")
    if path.name in _RESERVED_NAMES:
        raise CrossCoderError(
            f"extra file {path} would replace the crosscoder's own {path.name}; rename it or leave it out"
        )
    if path.is_dir():
        shutil.copytree(path, staging / path.name)
    else:
        _link_or_copy(path, staging / path.name)


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (no copy of large weights), or copy it where linking is impossible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _read_json_object(path: Path) -> dict | None:
    """Return the JSON object in `path` (a training summary, an import record), None when absent or unreadable."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


# ---------------------------------------------------------------------------------------------- card


def card_metadata(config: CrossCoderConfig) -> dict:
    """Return the card front matter for a crosscoder: library, tags, base models and the `crossdiff:` pair record."""
    base_models = [hub_id for hub_id in (identify(config.model_a).hub_id, identify(config.model_b).hub_id) if hub_id]
    record = {
        "model_a": _name(config.model_a), "model_b": _name(config.model_b),
        "layer_a": config.layer_a, "layer_b": config.layer_b,
        "d_a": config.d_a, "d_b": config.d_b, "dict_size": config.dict_size,
        "n_exclusive_a": config.n_exclusive_a, "n_shared": config.n_shared, "n_exclusive_b": config.n_exclusive_b,
        "sparsity": config.sparsity,
    }  # fmt: skip
    if config.sparsity == "batchtopk":
        record["k"] = config.k
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        tags=list(CARD_TAGS),
        base_model=list(dict.fromkeys(base_models)) or None,
        **{CARD_METADATA_KEY: record},
    )
    return data.to_dict()


def render_model_card(
    config: CrossCoderConfig,
    repo_id: str,
    training: dict | None,
    has_feature_index: bool,
    provenance: dict | None = None,
) -> str:
    """Return the full model card (YAML front matter + the filled-in template) for a crosscoder.

    `provenance` is the `import.json` record of a crosscoder converted by `import-dl`: the card then says
    where it came from and how its latent ids map to the source's.
    """
    try:
        template = string.Template(CARD_TEMPLATE.read_text(encoding="utf-8"))
    except OSError as error:
        raise CrossCoderError(
            f"the model card template {CARD_TEMPLATE} is missing ({error}): this CrossDiff installation is "
            "incomplete; reinstall it (pip install .) or run from a checkout"
        ) from error
    is_dfc = config.n_exclusive_a + config.n_exclusive_b > 0
    values = {
        "title": f"CrossDiff {'DFC' if is_dfc else 'crosscoder'}: {_name(config.model_a)} × {_name(config.model_b)}",
        "kind": "Dedicated Feature Crosscoder (DFC)" if is_dfc else "standard crosscoder (no exclusive latents)",
        "model_a": _name(config.model_a), "model_b": _name(config.model_b),
        "layer_a": _value(config.layer_a), "layer_b": _value(config.layer_b),
        "n_exclusive_a": config.n_exclusive_a, "n_shared": config.n_shared, "n_exclusive_b": config.n_exclusive_b,
        "dict_size": config.dict_size,
        "config_table": _config_table(config),
        "training": _training_section(training),
        "feature_index": (
            f"The `{FEATURE_INDEX_DIR}/` folder holds the feature index computed for this crosscoder."
            if has_feature_index else "No feature index was published with this crosscoder."
        ),
        "repo_id": repo_id,
        "origin": _origin(provenance),
        "provenance": _provenance_section(provenance),
    }  # fmt: skip
    try:
        body = template.substitute(values)
    except (KeyError, ValueError) as error:
        raise CrossCoderError(
            f"the model card template {CARD_TEMPLATE} uses an unknown or malformed field ({error}); "
            f"available fields: {', '.join(sorted(values))}"
        ) from error
    body = re.sub(r"\n{3,}", "\n\n", body)  # an empty section leaves no gap
    front_matter = ModelCardData(**card_metadata(config)).to_yaml()
    return f"---\n{front_matter}\n---\n\n{body.strip()}\n"


def _config_table(config: CrossCoderConfig) -> str:
    """Return a Markdown table of the settings a reader needs to use the crosscoder."""
    sparsity = (
        f"BatchTopK, k = {config.k} (threshold at inference)"
        if config.sparsity == "batchtopk"
        else (f"ReLU + decoder-norm-weighted L1 (coefficient {config.l1_coeff})")
    )
    rows = [
        ("", "model A", "model B"),
        ("model", _name(config.model_a), _name(config.model_b)),
        ("revision", _value(config.revision_a), _value(config.revision_b)),
        ("layer read", _value(config.layer_a), _value(config.layer_b)),
        ("activation width", config.d_a, config.d_b),
        ("input scale (raw × scale = normalized)", _value(config.scale_a), _value(config.scale_b)),
        ("tokenizer fingerprint", _value(config.tokenizer_a), _value(config.tokenizer_b)),
    ]
    lines = [_row(rows[0]), "|---|---|---|", *(_row(row) for row in rows[1:])]
    return "\n".join(lines) + f"\n\nSparsity: {sparsity}."


def _origin(provenance: dict | None) -> str:
    """Return how the card's first sentence says the crosscoder was made."""
    if provenance is None:
        return "trained with CrossDiff"
    return "trained with dictionary_learning / dfc_learning (converted by CrossDiff's `import-dl`)"


def _provenance_section(provenance: dict | None) -> str:
    """Return the card's import section: the source file and its sha256, and how to map latent ids."""
    if provenance is None:
        return ""
    n_a, n_b = int(provenance.get("n_exclusive_a") or 0), int(provenance.get("n_exclusive_b") or 0)
    size = int(provenance.get("dict_size") or 0)
    n_s = size - n_a - n_b
    where = f"Hub repo `{provenance['hub_repo']}`, file " if provenance.get("hub_repo") else ""
    lines = [
        "## Imported from dictionary_learning",
        "",
        f"Converted from {where}`{provenance.get('file')}` (sha256 `{provenance.get('sha256')}`) by "
        f"`python -m crossdiff_core import-dl`. Its input normalization ({provenance.get('normalization')}) is folded "
        "into the weights, so encode and decode on raw activations give the source's outputs. "
        f"`{IMPORT_FILE}` records the source and `{LATENT_MAPPING_FILE}` the latent ids.",
        "",
        "### Latent ids",
        "",
    ]
    if n_a + n_b == 0:
        lines.append("This is a standard crosscoder: CrossDiff latent `i` is source latent `i`.")
        return "\n".join(lines)
    lines += [
        "dictionary_learning orders a DFC's latents `[A-exclusive | B-exclusive | shared]`, CrossDiff orders them "
        f"`[A-exclusive | shared | B-exclusive]` (nA = {n_a}, nB = {n_b}, nS = {n_s}):",
        "",
        "| block | source ids | CrossDiff ids | CrossDiff id of source id `i` |",
        "|---|---|---|---|",
        f"| A-exclusive | 0 – {n_a - 1} | 0 – {n_a - 1} | `i` |" if n_a else "| A-exclusive | none | none | |",
        f"| B-exclusive | {n_a} – {n_a + n_b - 1} | {size - n_b} – {size - 1} | `i + {n_s}` |"
        if n_b
        else "| B-exclusive | none | none | |",
        f"| shared | {n_a + n_b} – {size - 1} | {n_a} – {size - n_b - 1} | `i − {n_b}` |",
        "",
        f"`{LATENT_MAPPING_FILE}` lists `source_to_crossdiff[i]` and `crossdiff_to_source[j]` for every latent.",
    ]
    return "\n".join(lines)


def _training_section(training: dict | None) -> str:
    """Return the card's training section: progress and final metrics from `training.json`, when published."""
    if not training:
        return f"No training summary (`{SUMMARY_FILE}`) was published with this crosscoder."
    progress = [
        ("steps", f"{_value(training.get('steps_done'))} of {_value(training.get('total_steps'))}"),
        ("tokens seen", _value(training.get("tokens_seen"))),
        ("finished", _value(training.get("finished"))),
    ]
    metrics = training.get("final_metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    scalars = [(key, value) for key, value in metrics.items() if isinstance(value, (int, float, str, bool))]
    lines = ["| | |", "|---|---|", *(_row(row) for row in progress + scalars)]
    return "Final metrics of the training run:\n\n" + "\n".join(lines)


def _row(cells: Iterable) -> str:
    """Return one Markdown table row, numbers formatted compactly."""
    return "| " + " | ".join(f"{cell:.4g}" if isinstance(cell, float) else str(cell) for cell in cells) + " |"


def _name(model: str | None) -> str:
    """Return how the card names a model: its Hub id when it has one, else the spec, `unknown` when not recorded."""
    return identify(model).hub_id or model or "unknown"


def _value(value: object) -> object:
    """Return a config value for display, `—` when unknown."""
    return "—" if value is None else value


# ---------------------------------------------------------------------------------------------- load


def load_crosscoder(
    repo_id_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    feature_index: bool = False,
) -> CrossCoder:
    """Return the crosscoder in a local folder or a Hub repo (downloading only config, weights and card).

    With `feature_index=True` a Hub repo's `feature_index/` is downloaded into the cache too (see
    `open_crosscoder`, which also returns where it is). With `HF_HUB_OFFLINE=1` only the local cache is used.
    A Hub repo that is not a CrossDiff crosscoder raises `CrossCoderError` saying what it is instead.
    """
    return open_crosscoder(repo_id_or_path, revision=revision, token=token, feature_index=feature_index)[0]


def open_crosscoder(
    repo_id_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    feature_index: bool = True,
) -> tuple[CrossCoder, Path]:
    """Return `(crosscoder, folder)`: the crosscoder and the local folder holding its files.

    A local folder is used as it is. For a Hub repo the folder is its snapshot in the huggingface_hub cache,
    holding config, weights, card and (with `feature_index`, when the repo has one) `feature_index/`, so the
    feature index loads from it like from a local folder. Read-only: write nothing into a Hub snapshot.
    """
    path = Path(repo_id_or_path).expanduser()
    if path.is_dir():
        return _load_folder(path, str(path), offline=False), path
    if path.exists():
        raise CrossCoderError(f"{path} is a file: pass the folder that holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    repo_id = str(repo_id_or_path)
    patterns = _LOAD_FILES + ((f"{FEATURE_INDEX_DIR}/*",) if feature_index else ())
    folder = download_repo_files(repo_id, patterns, revision=revision, token=token)
    return _load_folder(folder, f"Hub repo {repo_id}", offline=hub_constants.is_offline_mode()), folder


def download_repo_files(
    repo_id: str, patterns: Sequence[str], revision: str | None = None, token: str | None = None
) -> Path:
    """Return the local snapshot folder of the files of a Hub repo matching `patterns` (from the cache when offline).

    Raises `CrossCoderError` for an invalid id, a missing repo or revision, no access, or (offline) files not cached.
    """
    check_repo_id(repo_id)
    check_token(token)
    offline = hub_constants.is_offline_mode()
    where = repo_id if revision is None else f"{repo_id}@{revision}"
    try:
        folder = snapshot_download(
            repo_id, revision=revision, token=token, allow_patterns=list(patterns), local_files_only=offline,
            library_name=LIBRARY_NAME, library_version=__version__,
        )  # fmt: skip
    except LocalEntryNotFoundError as error:
        if offline:
            raise CrossCoderError(
                f"offline and not in the cache: {where} (HF_HUB_OFFLINE is set). Unset HF_HUB_OFFLINE and connect "
                "once to download it, or pass a local folder"
            ) from None
        raise CrossCoderError(
            f"could not reach the Hub to download {where} and it is not in the cache ({_scrub(str(error), token)}); "
            "check your network or HF_ENDPOINT, or pass a local folder"
        ) from None
    except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as error:
        raise hub_error(error, f"downloading {where}", token) from None
    return Path(folder)


def _load_folder(folder: Path, source: str, offline: bool) -> CrossCoder:
    """Return the crosscoder in `folder` after checking it is one (`source` names it in errors)."""
    card = folder / CARD_FILE
    library = _card_library(card)
    if library is not None and library != LIBRARY_NAME:
        raise CrossCoderError(
            f"{source} is not a CrossDiff crosscoder: its model card says library_name: {library}. "
            "Load it with that library, or pick a repo from find_on_hub()"
        )
    if offline and not (folder / CONFIG_FILE).is_file():
        raise CrossCoderError(
            f"offline and not in the cache: {source} ({CONFIG_FILE} is not cached). Unset HF_HUB_OFFLINE and "
            "connect once to download it"
        )
    _read_config(folder, source)
    if not (folder / WEIGHTS_FILE).is_file():
        if offline:
            raise CrossCoderError(
                f"offline and not in the cache: {source} ({WEIGHTS_FILE} is not cached). Unset HF_HUB_OFFLINE "
                "and connect once to download it"
            )
        raise CrossCoderError(f"{source} has {CONFIG_FILE} but no {WEIGHTS_FILE}: it is incomplete; re-upload it")
    return CrossCoder.from_pretrained(str(folder))


def _read_config(folder: Path, source: str) -> CrossCoderConfig:
    """Return the CrossDiff config in `folder`, or raise `CrossCoderError` saying why it is not a crosscoder."""
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CrossCoderError(
            f"{source} is not a CrossDiff crosscoder: it has no {CONFIG_FILE}. Pass a folder written by "
            "save_pretrained or a repo published with push_to_hub"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CrossCoderError(
            f"{CONFIG_FILE} of {source} is not valid JSON ({error}); re-download or re-save it"
        ) from error
    required = ("d_a", "d_b", "dict_size")
    if not isinstance(data, dict) or any(key not in data for key in required):
        hint = (
            " It looks like a dictionary_learning crosscoder: convert it with "
            "crossdiff_core.hub.importers.import_dictionary_learning"
            if isinstance(data, dict) and "activation_dim" in data
            else ""
        )
        if isinstance(data, dict) and ("model_type" in data or "architectures" in data):
            hint = (
                f" It looks like a transformers model (model_type {data.get('model_type', '?')}): pass it as "
                "--model-a or --model-b, and pass a crosscoder trained for it (find_on_hub() lists published ones)"
            )
        raise CrossCoderError(
            f"{source} is not a CrossDiff crosscoder: its {CONFIG_FILE} lacks {', '.join(required)}.{hint}"
        )
    return CrossCoderConfig.from_dict(data)


def _card_library(card: Path) -> str | None:
    """Return the `library_name` in a model card's front matter, or None when there is no card or no such key."""
    if not card.is_file():
        return None
    try:
        metadata = metadata_load(card)
    except (ValueError, OSError, UnicodeDecodeError):
        return None
    library = (metadata or {}).get("library_name")
    return str(library) if library is not None else None


# ---------------------------------------------------------------------------------------------- find


def find_on_hub(model_a: str, model_b: str, token: str | None = None) -> list[HubCrosscoder]:
    """Return the CrossDiff crosscoders published for a model pair (either order), newest first.

    Each result's `swapped` says whether the repo's model A is your `model_b`. Demo names
    (`smollm2-135m`) stand for their Hub ids.
    """
    require_online("searching the Hub")
    want_a, want_b = identify(model_a).hub_id, identify(model_b).hub_id
    anchor = want_a or want_b
    if anchor is None:
        raise CrossCoderError(
            f"neither {model_a!r} nor {model_b!r} is a Hub model id, so no published crosscoder can name them; "
            "pass Hub ids such as HuggingFaceTB/SmolLM2-135M-Instruct"
        )
    check_token(token)
    api = HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)
    try:
        query = api.list_models(filter=[LIBRARY_NAME, f"base_model:{anchor}"], expand=["cardData", "lastModified"])
        listed = list(query)
    except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as error:
        raise hub_error(error, "searching the Hub", token) from None
    found = []
    for info in listed:
        record = info.card_data.get(CARD_METADATA_KEY) if info.card_data is not None else None
        if not isinstance(record, dict):
            continue
        pair = (_same_model(record.get("model_a"), model_a), _same_model(record.get("model_b"), model_b))
        crossed = (_same_model(record.get("model_a"), model_b), _same_model(record.get("model_b"), model_a))
        if all(pair) or all(crossed):
            found.append(
                HubCrosscoder(
                    repo_id=info.id,
                    model_a=str(record["model_a"]),
                    model_b=str(record["model_b"]),
                    layer_a=record.get("layer_a"),
                    layer_b=record.get("layer_b"),
                    dict_size=record.get("dict_size"),
                    n_exclusive_a=record.get("n_exclusive_a"),
                    n_exclusive_b=record.get("n_exclusive_b"),
                    swapped=not all(pair),
                    last_modified=info.last_modified,
                )
            )
    return sorted(found, key=lambda hit: hit.last_modified.timestamp() if hit.last_modified else 0.0, reverse=True)


def _same_model(recorded, asked: str) -> bool:
    """Return True when a model recorded on a card and a model spec name the same model (demo names resolved)."""
    if not recorded:
        return False
    return (identify(str(recorded)).hub_id or str(recorded)).lower() == (identify(asked).hub_id or asked).lower()


# ---------------------------------------------------------------------------------------------- errors


def require_online(action: str) -> None:
    """Raise `CrossCoderError` when huggingface_hub is in offline mode; `action` says what needs the network."""
    if hub_constants.is_offline_mode():
        raise CrossCoderError(f"{action} needs the network but HF_HUB_OFFLINE is set; unset it (or set it to 0)")


def check_token(token: str | None) -> None:
    """Raise `CrossCoderError` when `token` has characters no Hub token has (spaces, line breaks, non-ASCII).

    Such a token would be refused by the HTTP layer with an error that quotes the header, token included; the
    message here never shows the token.
    """
    if token is None:
        return
    if not isinstance(token, str) or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise CrossCoderError(
            "the Hub token contains spaces, line breaks or characters a token cannot have; copy the token again "
            "(only the token, on one line)"
        )


def check_repo_id(repo_id: str) -> None:
    """Raise `CrossCoderError` unless `repo_id` is a well-formed Hub repo id."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise CrossCoderError(
            f"{repo_id!r} is neither an existing folder nor a Hub repo id (owner/name); check the path or id"
        ) from None


def hub_error(error: Exception, action: str, token: str | None, write: bool = False) -> CrossCoderError:
    """Return a `CrossCoderError` that explains a huggingface_hub failure and what to do; never includes the token."""
    if isinstance(error, OfflineModeIsEnabled):
        return CrossCoderError(f"{action} needs the network but HF_HUB_OFFLINE is set; unset it (or set it to 0)")
    if isinstance(error, GatedRepoError):
        return CrossCoderError(f"{action}: the repo is gated; accept its conditions on the Hub and pass a token")
    if isinstance(error, RevisionNotFoundError):
        return CrossCoderError(f"{action}: that revision does not exist in the repo; check the branch, tag or commit")
    if isinstance(error, RepositoryNotFoundError):
        return CrossCoderError(
            f"{action}: the repo does not exist, or it is private and the token gives no access; "
            "check the id, or pass a token that can read it (token=..., the HF_TOKEN variable or `hf auth login`)"
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None and error.response.status_code in (401, 403):
        need = "write access to it" if write else "read access to it"
        return CrossCoderError(
            f"{action}: the Hub refused the request (HTTP {error.response.status_code}); log in with "
            f"`hf auth login` or pass a token with {need}"
        )
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        return CrossCoderError(f"{action} failed: the Hub answered HTTP {status} ({_scrub(str(error), token)})")
    return CrossCoderError(
        f"{action} failed: could not reach the Hub ({_scrub(str(error), token)}); check your network or HF_ENDPOINT"
    )


_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
"""What a Hub access token looks like (`hf_` and 34 letters and digits): also redacted when it is not ours."""
_BEARER = re.compile(r"(Bearer\s+)[^\s'\"]+", re.IGNORECASE)


def _scrub(message: str, token: str | None) -> str:
    """Return the first line of `message` with any token (ours, escaped or quoted, or any `hf_...`) replaced by `***`.

    The stored token of `hf auth login` is not known here (token None), so anything that looks like a token or an
    `Authorization: Bearer` value is redacted too.
    """
    if token:
        for form in {token, token.encode("unicode_escape").decode("ascii"), repr(token)[1:-1],
                     repr(token.encode("utf-8", "backslashreplace"))[2:-1]}:  # fmt: skip
            message = message.replace(form, "***")
    first_line = message.strip().splitlines()[0] if message.strip() else "no details"
    return _TOKEN_LIKE.sub("hf_***", _BEARER.sub(r"\1***", first_line))
