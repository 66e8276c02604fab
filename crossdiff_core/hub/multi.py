"""Crosscoders of three models or more on the Hub: publish one with its model card, and open one from a repo id.

`push_to_hub` sends an N-model crosscoder folder here (`push_multi_to_hub`): its config, weights and training
summary, and a card that names every model, layer and block. `multi_crosscoder_folder` tells whether a source (a
folder or a Hub repo id) is an N-model crosscoder and returns the folder holding its files (a Hub repo's snapshot
in the huggingface_hub cache, read-only), so that `info` and `diff` read it as they read a local one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from huggingface_hub import ModelCardData
from huggingface_hub import constants as hub_constants

from crossdiff_core.crosscoder.config import is_multi_folder
from crossdiff_core.crosscoder.model import CONFIG_FILE, SUMMARY_FILE, WEIGHTS_FILE
from crossdiff_core.crosscoder.multi import MultiCrossCoderConfig
from crossdiff_core.errors import CrossCoderError, CrossDiffError
from crossdiff_core.hub.repo import (
    CARD_FILE,
    CARD_METADATA_KEY,
    CARD_TAGS,
    LIBRARY_NAME,
    _card_library,
    _link_or_copy,
    _name,
    _read_json_object,
    _row,
    _training_section,
    _value,
    check_token,
    download_repo_files,
    require_online,
    upload_staged,
)
from crossdiff_core.models import identify

MULTI_TAG = "multi-model"


def push_multi_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload CrossDiff crosscoder",
) -> str:
    """Upload the N-model crosscoder in `folder` (config, weights, `training.json` when present) with a generated
    model card; return the repo URL. The repo is created if needed (`private` only applies then)."""
    require_online("pushing to the Hub")
    check_token(token)
    folder = Path(folder)
    config = MultiCrossCoderConfig.from_dict(_read_json_object(folder / CONFIG_FILE) or {})
    if not (folder / WEIGHTS_FILE).is_file():
        raise CrossCoderError(f"{folder} has no {WEIGHTS_FILE}: save the crosscoder with save_pretrained first")
    with tempfile.TemporaryDirectory(prefix="crossdiff-push-") as tmp:
        staging = Path(tmp)
        for name in (CONFIG_FILE, WEIGHTS_FILE, SUMMARY_FILE):
            if (folder / name).is_file():
                _link_or_copy(folder / name, staging / name)
        training = _read_json_object(folder / SUMMARY_FILE)
        (staging / CARD_FILE).write_text(render_multi_card(config, repo_id, training), encoding="utf-8")
        return upload_staged(staging, repo_id, token, private, commit_message)


def render_multi_card(config: MultiCrossCoderConfig, repo_id: str, training: dict | None) -> str:
    """Return the model card (YAML front matter + body) of an N-model crosscoder."""
    models = config.models or [None] * config.n_models
    layers = config.layers or [None] * config.n_models
    names = [_name(m) for m in models]
    is_dfc = sum(config.n_exclusive) > 0
    record = {"models": names, "layers": layers, "d": config.d, "dict_size": config.dict_size,
              "n_shared": config.n_shared, "n_exclusive": config.n_exclusive, "k": config.k}  # fmt: skip
    base_models = [hub_id for hub_id in (identify(m).hub_id for m in models if m) if hub_id]
    front = ModelCardData(
        library_name=LIBRARY_NAME,
        tags=[*CARD_TAGS, MULTI_TAG],
        base_model=list(dict.fromkeys(base_models)) or None,
        **{CARD_METADATA_KEY: record},
    ).to_yaml()
    kind = "Dedicated Feature Crosscoder (DFC)" if is_dfc else "standard crosscoder (no exclusive latents)"
    blocks = [_row(("shared", config.n_shared, f"all {config.n_models} models"))]
    blocks += [_row((f"model {m} exclusive", n, f"{names[m]} only")) for m, n in enumerate(config.n_exclusive)]
    scales = config.scales or [None] * config.n_models
    tokenizers = config.tokenizers or [None] * config.n_models
    model_rows = [
        _row((m, names[m], _value(layers[m]), config.d[m], _value(scales[m]), _value(tokenizers[m])))
        for m in range(config.n_models)
    ]
    body = "\n".join([
        f"# CrossDiff {'DFC' if is_dfc else 'crosscoder'} of {config.n_models} models: {' × '.join(names)}",
        "",
        f"A {kind} trained with CrossDiff on the activations of {config.n_models} models at the positions where all "
        "their tokenizers have read the same text. It was trained to find what one model represents that the others "
        "do not.",
        "",
        "## Latent blocks",
        "",
        "| block | latents | reads from and writes to |",
        "|---|---:|---|",
        *blocks,
        f"| **total** | **{config.dict_size}** | |",
        "",
        "Latents are ordered `[shared | model 0 exclusive | model 1 exclusive | …]`. The partition is structural: an "
        "exclusive latent has no encoder or decoder weights for any other model.",
        "",
        "## Models",
        "",
        "| model | name | layer read | activation width | input scale (raw × scale = normalized) | tokenizer |",
        "|---|---|---|---|---|---|",
        *model_rows,
        "",
        f"Sparsity: BatchTopK, k = {config.k} (threshold at inference).",
        "",
        "## Training",
        "",
        _training_section(training),
        "",
        "## Use",
        "",
        "```bash",
        f"python -m crossdiff_core info {repo_id}",
        f'python -m crossdiff_core diff --crosscoder {repo_id} "some text"   # per model: only here, missing only here',
        "```",
    ])  # fmt: skip
    return f"---\n{front}\n---\n\n{body}\n"


def multi_crosscoder_folder(source: str, revision: str | None = None, token: str | None = None) -> Path | None:
    """Return the folder holding the N-model crosscoder `source` names (a local folder, or a Hub repo id whose config
    says so: its snapshot with config, weights and card), or None when it names anything else (a two-model
    crosscoder, or nothing that can be reached: the two-model path then says what is wrong)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path if is_multi_folder(path) else None
    if path.exists() or str(source).startswith((".", "/", "~")) or str(source).count("/") != 1:
        return None
    try:
        folder = download_repo_files(str(source), (CONFIG_FILE, CARD_FILE), revision=revision, token=token)
    except CrossDiffError:
        return None
    if not is_multi_folder(folder):
        return None
    library = _card_library(folder / CARD_FILE)
    if library is not None and library != LIBRARY_NAME:
        raise CrossCoderError(f"Hub repo {source} is not a CrossDiff crosscoder: its model card says library_name: "
                              f"{library}. Load it with that library")  # fmt: skip
    folder = download_repo_files(str(source), (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, SUMMARY_FILE), revision, token)
    if not (folder / WEIGHTS_FILE).is_file():
        where = "offline and not in the cache" if hub_constants.is_offline_mode() else "incomplete"
        raise CrossCoderError(f"Hub repo {source}: {WEIGHTS_FILE} is {where}; connect once, or re-upload it")
    return folder
