"""Convert crosscoders of the dictionary_learning family into CrossDiff crosscoders with identical outputs.

Sources: `crosscoder_learning` (science-of-finetuning: `CrossCoder`, `BatchTopKCrossCoder`) and
`dfc_learning` (Dedicated Feature Crosscoders), trained on two models that share a tokenizer (base vs
chat). They come as a `.pt` state dict or as PyTorchModelHubMixin files (`model.safetensors` +
`config.json`), locally or on the Hub. Their tensors and inference rule:

    encoder.weight [2, d, F]   encoder.bias [F]   decoder.weight [2, F, d]   decoder.bias [2, d]
    k, threshold               (BatchTopK only)   code_normalization_id     (1 = CROSSCODER, ...)
    activation_mean, activation_std [2, d], target_rms [], activation_global_scale [2] or []   (optional)

    f     = relu(Σ_m x_n^m W_enc^m + b_enc)
    f     = f · (f · Σ_m ‖d_j^m‖ > threshold)          BatchTopK at inference
    x̂^m  = denormalize(f W_dec^m + b_dec^m)

Their `NormalizableMixin` normalizes only when mean and std are set (no NaN), in one of two modes:

    relative variance (keep_relative_variance=True, the default; g^m = target_rms / sqrt(Σ_d σ^m² + 1e-8)
    per model, stored as activation_global_scale [2]; a scalar [] in dictionary_learning of late June 2025)
        x_n^m = (x^m − μ^m) · g^m                 denormalize(y^m) = y^m / (g^m + 1e-8) + μ^m
    per dimension (keep_relative_variance=False, which stores ones as the global scale; and dictionary_learning
    of June 2025 before target_rms existed, which stores neither buffer)
        x_n^m = (x^m − μ^m) / (σ^m + 1e-8)        denormalize(y^m) = y^m · (σ^m + 1e-8) + μ^m

Model A is layer 0 and model B layer 1. A DFC orders its latents `[A-exclusive | B-exclusive | shared]`
and stores the forbidden weights as zeros; its partition comes from `_partition_config` or
`model_a_exclusive_pct`/`model_b_exclusive_pct` (sizes `int(dict_size · pct)`, as their code computes them).

The conversion is exact by construction: latents are permuted to CrossDiff's
`[A-exclusive | shared | B-exclusive]` (see `source_latent_order`), the zero forbidden weights are
dropped (after checking they are zero), and the relative-variance normalization is folded into the
weights, biases and CrossDiff's per-model input scales (affine maps compose), leaving the decoder, and
therefore the latent selection `f · (‖d_a‖ + ‖d_b‖) > threshold`, unchanged. The per-dimension
normalization is folded into encoder and decoder (input scales 1); that changes the decoder norms, so it is
exact for L1 crosscoders and refused for BatchTopK ones, whose selection reads those norms. Variants whose
outputs CrossDiff cannot reproduce exactly are refused with a `CrossCoderError` that says why.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from crossdiff_core import __version__
from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.crosscoder.model import CONFIG_FILE, WEIGHTS_FILE, CrossCoder
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.files import file_sha256, write_text_atomically
from crossdiff_core.hub.repo import (
    CARD_FILE,
    IMPORT_FILE,
    LATENT_MAPPING_FILE,
    download_repo_files,
    render_model_card,
)

PICKLE_SUFFIXES = (".pt", ".pth")
CROSSCODER_CLASSES = (
    "CrossCoder",
    "BatchTopKCrossCoder",
    "DedicatedFeatureCrossCoder",
    "DedicatedFeatureBatchTopKCrossCoder",
)
CODE_NORMALIZATIONS = {1: "CROSSCODER", 2: "SAE", 3: "MIXED", 4: "NONE", 5: "DECOUPLED"}
"""dictionary_learning's `CodeNormalization` enum: `code_normalization_id` → name."""

_CORE_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
_COMPILED_PREFIX = "_orig_mod."  # state dicts saved from a torch.compile'd module
VARIANCE_EPS = 1e-8
"""Their global scale is target_rms / sqrt(Σσ² + 1e-8)."""
DENORMALIZE_EPS = 1e-8
"""Their decoder output is divided by (global scale + 1e-8), or multiplied by (σ + 1e-8)."""
NORMALIZATION_AUTO = "auto"
NORMALIZATION_RELATIVE = "relative-variance"
NORMALIZATION_PER_DIMENSION = "per-dimension"
NORMALIZATION_CHOICES = (NORMALIZATION_AUTO, NORMALIZATION_RELATIVE, NORMALIZATION_PER_DIMENSION)
"""How to read a source's input normalization: from its buffers (auto), or as keep_relative_variance=True / False."""


@dataclass
class SourceCrosscoder:
    """A dictionary_learning crosscoder as read from its files, before conversion."""

    tensors: dict[str, torch.Tensor]
    """Every tensor of the state dict (names as saved)."""

    metadata: dict
    """`config.json` next to the weights, merged with the non-tensor entries of a `.pt` file."""

    source: str
    """What the files are, for messages (a path or `Hub repo owner/name`)."""

    file: Path | None = None
    """The weights file read (in the huggingface_hub cache for a Hub source)."""

    config_file: Path | None = None
    """The `config.json` read next to it, None when there was none."""

    hub_spec: str | None = None
    """The Hub id it was downloaded from (`owner/name` or `owner/name/path/ae.pt`), None for a local source."""


@dataclass
class ImportResult:
    """A converted crosscoder and what it was converted from (the files `import-dl` writes next to it)."""

    crosscoder: CrossCoder
    source: SourceCrosscoder
    normalization: str
    """The source normalization folded into the weights: "none", "relative-variance" or "per-dimension"."""

    order: list[int]
    """`order[i]` is the source id of CrossDiff latent `i` (see `source_latent_order`)."""

    def provenance(self) -> dict:
        """Return the JSON record of the import: source file and sha256, its config, partition, normalization."""
        config = self.crosscoder.config
        files = [("file", "sha256", self.source.file), ("config_file", "config_sha256", self.source.config_file)]
        record = {"format": "dictionary_learning", "source": self.source.hub_spec or self.source.source}
        for key, hash_key, path in files:
            record[key] = None if path is None else str(path)
            record[hash_key] = None if path is None else file_sha256(path)
        record |= {
            "hub_repo": self.source.hub_spec,
            "source_latent_order": "[A-exclusive | B-exclusive | shared]",
            "crossdiff_latent_order": "[A-exclusive | shared | B-exclusive]",
            "dict_size": config.dict_size, "n_exclusive_a": config.n_exclusive_a,
            "n_exclusive_b": config.n_exclusive_b, "n_shared": config.n_shared,
            "normalization": self.normalization, "latent_mapping_file": LATENT_MAPPING_FILE,
            "crossdiff_version": __version__,
        }  # fmt: skip
        return record

    def latent_mapping(self) -> dict:
        """Return the latent id mapping in both directions, with the block ranges (see `latent_mapping`)."""
        return latent_mapping(self.crosscoder.n_a, self.crosscoder.n_b, self.crosscoder.dict_size)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the crosscoder, `import.json`, `latent_mapping.json` and a model card into `out_dir`; return it."""
        out = Path(out_dir)
        self.crosscoder.save_pretrained(out)
        provenance = self.provenance()
        write_text_atomically(out / IMPORT_FILE, json.dumps(provenance, indent=2) + "\n")
        write_text_atomically(out / LATENT_MAPPING_FILE, json.dumps(self.latent_mapping()) + "\n")
        card = render_model_card(self.crosscoder.config, str(out), None, has_feature_index=False, provenance=provenance)
        write_text_atomically(out / CARD_FILE, card)
        return out


@dataclass
class _Sparsity:
    """How the source picks active latents at inference."""

    kind: str  # "batchtopk" or "l1"
    k: int | None
    threshold: float


def import_dictionary_learning(
    path_or_repo: str | os.PathLike,
    model_a: str | None = None,
    model_b: str | None = None,
    layer_a: int | None = None,
    layer_b: int | None = None,
    normalization: str = NORMALIZATION_AUTO,
) -> CrossCoder:
    """Return a CrossDiff crosscoder with the same outputs as a dictionary_learning crosscoder.

    `path_or_repo` is a `.pt`/`.safetensors` file, a folder holding one, a Hub repo (`owner/name`, whose
    `model.safetensors` + `config.json` are downloaded) or a file in a Hub repo (`owner/name/path/ae.pt`);
    an existing local path wins over a Hub id. A `config.json` next to the weights supplies the metadata.
    The model ids and layers are recorded in the config (the source files do not hold them reliably).
    CrossDiff latent `i` is source latent `source_latent_order(...)[i]`. `normalization` says how the
    source normalized its inputs (`NORMALIZATION_CHOICES`; "auto" reads it from the buffers and refuses
    when they cannot tell). `import_with_provenance` also returns where it came from.
    """
    return import_with_provenance(path_or_repo, model_a, model_b, layer_a, layer_b, normalization).crosscoder


def import_with_provenance(
    path_or_repo: str | os.PathLike,
    model_a: str | None = None,
    model_b: str | None = None,
    layer_a: int | None = None,
    layer_b: int | None = None,
    normalization: str = NORMALIZATION_AUTO,
) -> ImportResult:
    """Return the converted crosscoder with its source, normalization and latent order (`ImportResult.save` writes them)."""
    source = read_source(path_or_repo)
    return convert_with_provenance(source, model_a, model_b, layer_a, layer_b, normalization)


def source_latent_order(n_exclusive_a: int, n_exclusive_b: int, dict_size: int) -> list[int]:
    """Return, for each CrossDiff latent in order, the index of the same latent in the dictionary_learning file."""
    start_shared = n_exclusive_a + n_exclusive_b
    return [*range(n_exclusive_a), *range(start_shared, dict_size), *range(n_exclusive_a, start_shared)]


def latent_mapping(n_exclusive_a: int, n_exclusive_b: int, dict_size: int) -> dict:
    """Return the `latent_mapping.json` record: dictionary_learning ("source") ids <-> CrossDiff ids, and the blocks."""
    order = source_latent_order(n_exclusive_a, n_exclusive_b, dict_size)
    source_to_crossdiff = [0] * dict_size
    for crossdiff_id, source_id in enumerate(order):
        source_to_crossdiff[source_id] = crossdiff_id
    n_a, n_b, size = n_exclusive_a, n_exclusive_b, dict_size
    return {
        "description": (
            "source_to_crossdiff[i] is the CrossDiff id of source (dictionary_learning) latent i; "
            "crossdiff_to_source[j] is the source id of CrossDiff latent j"
        ),
        "blocks": {  # [start, stop) in each numbering
            "A-exclusive": {"source": [0, n_a], "crossdiff": [0, n_a]},
            "B-exclusive": {"source": [n_a, n_a + n_b], "crossdiff": [size - n_b, size]},
            "shared": {"source": [n_a + n_b, size], "crossdiff": [n_a, size - n_b]},
        },
        "source_to_crossdiff": source_to_crossdiff,
        "crossdiff_to_source": order,
    }


# ---------------------------------------------------------------------------------------------- reading


def read_source(path_or_repo: str | os.PathLike) -> SourceCrosscoder:
    """Return the tensors and metadata of a dictionary_learning crosscoder (local file or folder, or Hub)."""
    path = Path(path_or_repo).expanduser()
    hub_spec = None
    if not path.exists():
        path, hub_spec = _download(str(path_or_repo)), str(path_or_repo)
    if path.is_dir():
        path = _weights_in_folder(path)
    config_file = path.parent / CONFIG_FILE
    metadata = _read_json(config_file)
    files = {"file": path, "config_file": config_file if config_file.is_file() else None, "hub_spec": hub_spec}
    if path.suffix == ".safetensors":
        return SourceCrosscoder(_load_safetensors(path), metadata, str(path), **files)
    if path.suffix in PICKLE_SUFFIXES:
        tensors, embedded = _load_pickle(path)
        return SourceCrosscoder(tensors, {**metadata, **embedded}, str(path), **files)
    raise CrossCoderError(
        f"{path} is neither a .safetensors nor a .pt file; pass the crosscoder's weights file or its folder"
    )


def _download(spec: str) -> Path:
    """Return the local path of a Hub crosscoder: `owner/name` (mixin files) or `owner/name/path/file.pt`."""
    if Path(spec).is_absolute() or spec.startswith((".", "~")):
        raise CrossCoderError(f"{spec} does not exist; check the path")
    parts = spec.split("/")
    repo_id, inner = "/".join(parts[:2]), "/".join(parts[2:])
    if any(part in ("..", ".") for part in parts) or "\\" in spec:
        raise CrossCoderError(
            f"{spec} does not exist, and as a Hub file it is not a plain path inside a repo (no '..', '.' or "
            "backslashes); give owner/name or owner/name/path/to/ae.pt"
        )
    patterns = [CONFIG_FILE, WEIGHTS_FILE]
    if inner:
        patterns = [inner, str(PurePosixPath(inner).parent / CONFIG_FILE).removeprefix("./")]
    try:
        folder = download_repo_files(repo_id, patterns)
    except CrossCoderError as error:
        raise CrossCoderError(f"{spec} is not a local file or folder, and as a Hub repo: {error}") from None
    target = folder / inner if inner else folder / WEIGHTS_FILE
    if not target.is_file():
        if inner:
            raise CrossCoderError(f"Hub repo {repo_id} has no file {inner}; check the path inside the repo")
        raise CrossCoderError(
            f"Hub repo {repo_id} has no {WEIGHTS_FILE}; if it holds .pt checkpoints, name one: {repo_id}/<path>.pt"
        )
    return target


def _weights_in_folder(folder: Path) -> Path:
    """Return the weights file in a folder: `model.safetensors`, else its only `.pt`/`.pth` file."""
    if (folder / WEIGHTS_FILE).is_file():
        return folder / WEIGHTS_FILE
    candidates = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CrossCoderError(f"{folder} holds neither {WEIGHTS_FILE} nor a .pt file; pass the weights file itself")
    names = ", ".join(p.name for p in candidates)
    raise CrossCoderError(f"{folder} holds several checkpoints ({names}); pass the one to import")


def _read_json(path: Path) -> dict:
    """Return the JSON object in `path`, {} when there is no such file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CrossCoderError(f"{path} is not valid JSON ({error}); re-download it or remove it") from error
    if not isinstance(data, dict):
        raise CrossCoderError(f"{path} is not a JSON object; it is not a dictionary_learning config")
    return data


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Return the tensors of a safetensors file."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CrossCoderError(f"{path} is corrupt or truncated ({error}); download it again") from error


def _load_pickle(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Return (tensors, other entries) of a `.pt` state dict, loaded with `weights_only=True` only."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(str(error))
        if "GLOBAL" not in reason:
            raise CrossCoderError(f"{path} is corrupt or not a PyTorch file ({reason}); download it again") from None
        raise CrossCoderError(
            f"{path} holds Python objects other than tensors and plain containers ({reason}). CrossDiff loads .pt "
            "files with torch.load(weights_only=True) only and will not run code a pickle can carry; re-save the "
            "state dict as plain tensors (or as safetensors) in the library that wrote it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CrossCoderError(f"{path} is corrupt or not a PyTorch file ({error}); download it again") from error
    if not isinstance(payload, dict):
        raise CrossCoderError(
            f"{path} holds a {type(payload).__name__}, not a state dict; pass the crosscoder's state dict"
        )
    tensors = {key: value for key, value in payload.items() if isinstance(value, torch.Tensor)}
    return tensors, {key: value for key, value in payload.items() if not isinstance(value, torch.Tensor)}


def _unpickler_reason(message: str) -> str:
    """Return the part of torch's weights-only refusal that says what was refused (not its advice to unpickle).

    A class or function the file asks to import is named on a line with `GLOBAL` (`Unsupported global: GLOBAL
    io.open`, or for a blocked module such as `os`: `Trying to load unsupported GLOBAL posix.system ...`).
    """
    for line in message.splitlines():
        if "GLOBAL " in line:
            line = line.split("WeightsUnpickler error:")[-1].strip()
            return line.split(" was not an allowed global")[0].removesuffix(".")
    _, _, detail = message.partition("WeightsUnpickler error:")
    detail = detail.strip().split("\n")[0].strip() or message.strip().split("\n")[0]
    return detail.split(" was not an allowed global")[0]


# ---------------------------------------------------------------------------------------------- conversion


def convert(
    source: SourceCrosscoder,
    model_a: str | None = None,
    model_b: str | None = None,
    layer_a: int | None = None,
    layer_b: int | None = None,
    normalization: str = NORMALIZATION_AUTO,
) -> CrossCoder:
    """Return the CrossDiff crosscoder equivalent to `source`, or raise `CrossCoderError` for unsupported variants."""
    return convert_with_provenance(source, model_a, model_b, layer_a, layer_b, normalization).crosscoder


def convert_with_provenance(
    source: SourceCrosscoder,
    model_a: str | None = None,
    model_b: str | None = None,
    layer_a: int | None = None,
    layer_b: int | None = None,
    normalization: str = NORMALIZATION_AUTO,
) -> ImportResult:
    """Return `convert`'s crosscoder with the normalization folded in and the latent order."""
    if normalization not in NORMALIZATION_CHOICES:
        raise CrossCoderError(f"normalization={normalization!r} is not one of {', '.join(NORMALIZATION_CHOICES)}")
    tensors = {key.removeprefix(_COMPILED_PREFIX): value for key, value in source.tensors.items()}
    where = source.source
    _check_class(source.metadata, where)
    W_enc_LDF, b_enc_F, W_dec_LFD, b_dec_LD = _core_weights(tensors, where)
    d, dict_size = W_enc_LDF.shape[1], W_enc_LDF.shape[2]
    sparsity = _sparsity(tensors, dict_size, where)
    _check_code_normalization(tensors, source.metadata, sparsity, where)
    _check_layer_options(source.metadata, where)
    n_a, n_b = _partition(source.metadata, dict_size, where)
    _check_forbidden_zero(W_enc_LDF, W_dec_LFD, n_a, n_b, where)

    scale_L = torch.ones(2)
    norm = _normalization(tensors, d, where, normalization)
    if norm.mode == NORMALIZATION_RELATIVE:
        # Per model, with G = g + 1e-8:  (x − μ)·g·W = (x·G)·(W·g/G) − g·μ·W  and  (f·W_dec + b)/G + μ = (f·W_dec + b + μ·G)/G.
        # The decoder is unchanged, and with it the BatchTopK selection.
        g_L = norm.factor_LD[:, 0]
        scale_L = g_L + DENORMALIZE_EPS  # in float32, as they compute it
        b_enc_F = b_enc_F - torch.einsum("ld,ldf->f", norm.mean_LD * g_L[:, None], W_enc_LDF)
        W_enc_LDF = W_enc_LDF * (g_L / scale_L)[:, None, None]
        b_dec_LD = b_dec_LD + norm.mean_LD * scale_L[:, None]
    elif norm.mode == NORMALIZATION_PER_DIMENSION:
        if sparsity.kind == "batchtopk":
            raise CrossCoderError(
                f"{where} normalizes its inputs per dimension ((x − mean) / (std + 1e-8): {norm.why}) and selects "
                "latents with BatchTopK on f·(‖d_a‖ + ‖d_b‖) in that normalized space. CrossDiff scales each model's "
                "inputs by one number, so the per-dimension scale must go into its decoder, which changes those norms "
                "and with them the active latents; it cannot be imported exactly. If it was in fact trained with "
                "keep_relative_variance=True, pass --normalization relative-variance"
            )
        # (x − μ)/S·W = x·(W/S) − (μ/S)·W  and  (f·W_dec + b)·S + μ = f·(W_dec·S) + (b·S + μ), with S = σ + 1e-8.
        S_LD = norm.factor_LD
        b_enc_F = b_enc_F - torch.einsum("ld,ldf->f", norm.mean_LD / S_LD, W_enc_LDF)
        W_enc_LDF = W_enc_LDF / S_LD[:, :, None]
        W_dec_LFD = W_dec_LFD * S_LD[:, None, :]
        b_dec_LD = b_dec_LD * S_LD + norm.mean_LD

    order_list = source_latent_order(n_a, n_b, dict_size)
    order = torch.tensor(order_list)
    n_shared = dict_size - n_a - n_b
    rows_a, rows_b = order[: n_a + n_shared], order[n_a:]
    scale_a, scale_b = float(scale_L[0]), float(scale_L[1])
    config = CrossCoderConfig(
        d_a=d, d_b=d, dict_size=dict_size, exclusive_a=n_a, exclusive_b=n_b, sparsity=sparsity.kind,
        k=sparsity.k or min(CrossCoderConfig.k, dict_size),  # k is unused by an L1 crosscoder
        scale_a=scale_a, scale_b=scale_b, model_a=model_a, model_b=model_b, layer_a=layer_a, layer_b=layer_b,
    )  # fmt: skip
    state = {
        "W_enc_a": W_enc_LDF[0][:, rows_a].T, "W_enc_b": W_enc_LDF[1][:, rows_b].T, "b_enc": b_enc_F[order],
        "W_dec_a": W_dec_LFD[0][rows_a], "W_dec_b": W_dec_LFD[1][rows_b],
        "b_dec_a": b_dec_LD[0], "b_dec_b": b_dec_LD[1],
        **{name: torch.tensor(value, dtype=torch.float32)
           for name, value in (("threshold", sparsity.threshold), ("scale_a", scale_a), ("scale_b", scale_b))},
    }  # fmt: skip
    with torch.device("meta"):  # no random init of weights that are replaced right away
        model = CrossCoder(config)
    model.load_state_dict({name: t.contiguous() for name, t in state.items()}, assign=True)
    return ImportResult(model.eval(), source, norm.mode, order_list)


def _check_class(metadata: dict, where: str) -> None:
    """Raise `CrossCoderError` when the metadata names a dictionary class that is not a two-model crosscoder."""
    dict_class = _find_key(metadata, "dict_class")
    if dict_class is not None and str(dict_class) not in CROSSCODER_CLASSES:
        raise CrossCoderError(
            f"{where} holds a {dict_class}, not a crosscoder CrossDiff can import; supported classes: "
            f"{', '.join(CROSSCODER_CLASSES)}"
        )


def _core_weights(tensors: dict[str, torch.Tensor], where: str) -> tuple[torch.Tensor, ...]:
    """Return (W_enc_LDF, b_enc_F, W_dec_LFD, b_dec_LD) in float32 after checking names, shapes and values.

    float32 is CrossDiff's dtype; half-precision sources are widened, and no float64 copy of a large
    dictionary is ever made.
    """
    missing = [key for key in _CORE_KEYS if key not in tensors]
    if missing:
        raise CrossCoderError(f"{where} is not a dictionary_learning crosscoder: {_what_it_is(tensors, missing)}")
    W_enc, b_enc, W_dec, b_dec = (tensors[key] for key in _CORE_KEYS)
    if W_enc.ndim == 2:
        raise CrossCoderError(
            f"{where} is a sparse autoencoder (encoder.weight is 2-D), not a crosscoder; CrossDiff imports "
            "crosscoders over two models"
        )
    if W_enc.ndim != 3:
        raise CrossCoderError(f"{where}: encoder.weight has shape {tuple(W_enc.shape)}, expected [2, d, F]")
    n_layers, d, dict_size = W_enc.shape
    if n_layers != 2:
        raise CrossCoderError(
            f"{where} is a crosscoder over {n_layers} layers; CrossDiff crosscoders pair exactly two models "
            "(model A = layer 0, model B = layer 1)"
        )
    expected = {"encoder.bias": (dict_size,), "decoder.weight": (2, dict_size, d), "decoder.bias": (2, d)}
    wrong = [f"{key} {tuple(tensors[key].shape)} (expected {shape})" for key, shape in expected.items()
             if tuple(tensors[key].shape) != shape]  # fmt: skip
    if wrong:
        raise CrossCoderError(
            f"{where} has inconsistent shapes: {'; '.join(wrong)}; encoder.weight is {tuple(W_enc.shape)}. "
            "Multi-decoder or embedding-bag variants are not supported"
        )
    weights = tuple(t.detach().to(torch.float32) for t in (W_enc, b_enc, W_dec, b_dec))
    if not all(torch.isfinite(t).all() for t in weights):
        raise CrossCoderError(f"{where} contains NaN or infinite weights; the checkpoint is broken")
    return weights


def _what_it_is(tensors: dict[str, torch.Tensor], missing: list[str]) -> str:
    """Return why a state dict is not a dictionary_learning crosscoder, naming what it looks like instead."""
    if "W_enc_a" in tensors:
        return "it is already a CrossDiff crosscoder; load it with crossdiff_core.hub.repo.load_crosscoder"
    if "W_enc" in tensors or "log_threshold" in tensors:
        return "it looks like a JumpReLU/single-layer autoencoder (W_enc, threshold), which CrossDiff does not import"
    if any(key.startswith("decoder.layers.") for key in tensors):
        return "its decoder is an embedding-bag decoder (decoder.layers.*), which CrossDiff does not import"
    names = ", ".join(sorted(tensors)[:8]) or "none"
    return f"it lacks {', '.join(missing)} (tensors found: {names})"


def _sparsity(tensors: dict[str, torch.Tensor], dict_size: int, where: str) -> _Sparsity:
    """Return the source's inference sparsity: BatchTopK with a fixed threshold, or plain ReLU (L1 training)."""
    if "k" not in tensors and "threshold" not in tensors:
        return _Sparsity("l1", None, 0.0)
    if "k" not in tensors or "threshold" not in tensors:
        raise CrossCoderError(f"{where} has only one of k and threshold; a BatchTopK crosscoder stores both")
    threshold_T = tensors["threshold"]
    if threshold_T.numel() != 1:
        raise CrossCoderError(
            f"{where} has a threshold of shape {tuple(threshold_T.shape)}: per-layer thresholds (decoupled code "
            "normalization) or per-latent ones (JumpReLU) select latents differently from CrossDiff's single threshold"
        )
    k, threshold = int(tensors["k"].item()), float(threshold_T.item())
    if not 1 <= k <= dict_size:
        raise CrossCoderError(f"{where} has k={k}, outside 1..dict_size={dict_size}; the checkpoint is broken")
    if not math.isfinite(threshold) or threshold < 0:
        raise CrossCoderError(
            f"{where} has threshold={threshold}: the inference threshold was never estimated (training stopped "
            "before it started updating). Without it the source picks latents per batch, which no fixed rule "
            "reproduces; import a checkpoint from later in training"
        )
    return _Sparsity("batchtopk", k, threshold)


def _check_code_normalization(
    tensors: dict[str, torch.Tensor], metadata: dict, sparsity: _Sparsity, where: str
) -> None:
    """Raise `CrossCoderError` unless the code normalization leaves the outputs reproducible by CrossDiff."""
    if "code_normalization_id" in tensors:
        code_id = int(tensors["code_normalization_id"].item())
        if code_id not in CODE_NORMALIZATIONS:
            raise CrossCoderError(
                f"{where} has code_normalization_id={code_id}, which dictionary_learning does not define "
                f"(known: {CODE_NORMALIZATIONS}); it comes from an unsupported fork"
            )
        name = CODE_NORMALIZATIONS[code_id]
    elif _find_key(metadata, "code_normalization") is not None:
        name = str(_find_key(metadata, "code_normalization")).upper()
        if name not in CODE_NORMALIZATIONS.values():
            raise CrossCoderError(f"{where} has code_normalization={name!r}, which CrossDiff does not know")
    else:
        warnings.warn(
            f"{where} does not record its code normalization; assuming CROSSCODER, as dictionary_learning does",
            stacklevel=2,
        )
        name = "CROSSCODER"
    if name == "DECOUPLED":
        raise CrossCoderError(
            f"{where} uses decoupled code normalization (one latent code per model); CrossDiff crosscoders have one "
            "code for both models and cannot reproduce it"
        )
    if sparsity.kind == "batchtopk" and name != "CROSSCODER":
        raise CrossCoderError(
            f"{where} selects latents on f times its {name} code normalization, but CrossDiff selects on "
            "f·(‖d_a‖ + ‖d_b‖) (CROSSCODER); the active latents would differ, so it is not imported"
        )


def _check_layer_options(metadata: dict, where: str) -> None:
    """Raise `CrossCoderError` for encoder-layer selections or decoder types CrossDiff cannot express."""
    for key in ("encoder_layers", "encoder_layers_indices"):
        layers = _find_key(metadata, key)
        if layers is not None and list(layers) != [0, 1]:
            raise CrossCoderError(
                f"{where} encodes from layers {list(layers)} only ({key}); CrossDiff crosscoders read both models"
            )
    decoder_type = _find_key(metadata, "decoder_type")
    if decoder_type is not None and decoder_type != "linear":
        raise CrossCoderError(f"{where} has decoder_type={decoder_type!r}; only the linear decoder is supported")


def _partition(metadata: dict, dict_size: int, where: str) -> tuple[int, int]:
    """Return (A-exclusive, B-exclusive) latent counts of a DFC, (0, 0) for a standard crosscoder."""
    spec = _find_key(metadata, "_partition_config")
    spec = spec if isinstance(spec, dict) else {
        key: _find_key(metadata, key) for key in ("model_a_exclusive_pct", "model_b_exclusive_pct")
    }  # fmt: skip
    if "model_a_exclusive_size" in spec and "model_b_exclusive_size" in spec:
        n_a, n_b = spec["model_a_exclusive_size"], spec["model_b_exclusive_size"]
    elif spec.get("model_a_exclusive_pct") is not None and spec.get("model_b_exclusive_pct") is not None:
        total = spec.get("dict_size", dict_size)
        n_a, n_b = int(total * spec["model_a_exclusive_pct"]), int(total * spec["model_b_exclusive_pct"])
    else:
        if "DedicatedFeature" in str(_find_key(metadata, "dict_class")):
            raise CrossCoderError(
                f"{where} is a Dedicated Feature Crosscoder without its partition (_partition_config or "
                "model_a_exclusive_pct/model_b_exclusive_pct); put the config.json it was saved with next to it"
            )
        return 0, 0
    if spec.get("dict_size", dict_size) != dict_size:
        raise CrossCoderError(
            f"{where}: the partition is for dict_size={spec['dict_size']} but the weights have {dict_size} latents; "
            "the config and weights come from different crosscoders"
        )
    if not (isinstance(n_a, int) and isinstance(n_b, int) and n_a >= 0 and n_b >= 0 and n_a + n_b <= dict_size):
        raise CrossCoderError(
            f"{where} has an invalid partition ({n_a} A-exclusive + {n_b} B-exclusive of {dict_size} latents)"
        )
    return n_a, n_b


def _check_forbidden_zero(W_enc_LDF: torch.Tensor, W_dec_LFD: torch.Tensor, n_a: int, n_b: int, where: str) -> None:
    """Raise `CrossCoderError` unless each model's weights for the other model's exclusive latents are exactly zero."""
    block_a, block_b = slice(0, n_a), slice(n_a, n_a + n_b)
    forbidden = {
        "model A's encoder weights for B-exclusive latents": W_enc_LDF[0][:, block_b],
        "model B's encoder weights for A-exclusive latents": W_enc_LDF[1][:, block_a],
        "model A's decoder weights for B-exclusive latents": W_dec_LFD[0][block_b],
        "model B's decoder weights for A-exclusive latents": W_dec_LFD[1][block_a],
    }
    nonzero = [f"{name} (largest |w| = {weights.abs().max().item():.3g})"
               for name, weights in forbidden.items() if weights.numel() and weights.abs().max() > 0]  # fmt: skip
    if nonzero:
        raise CrossCoderError(
            f"{where} is not a valid DFC for a partition of {n_a} A-exclusive and {n_b} B-exclusive latents: "
            f"{'; '.join(nonzero)} are not zero. CrossDiff has no such weights, so importing would change the "
            "outputs; check the partition sizes in its config"
        )


@dataclass
class _Normalization:
    """How the source normalizes its inputs."""

    mode: str  # "none", NORMALIZATION_RELATIVE or NORMALIZATION_PER_DIMENSION
    mean_LD: torch.Tensor | None = None
    factor_LD: torch.Tensor | None = None
    """Relative variance: the global scale g per model, broadcast to [2, d]. Per dimension: σ + 1e-8."""
    why: str = ""
    """What in the state dict (or the caller) chose the mode, for messages."""


def _normalization(tensors: dict[str, torch.Tensor], d: int, where: str, requested: str) -> _Normalization:
    """Return how the source normalizes its inputs (float32 tensors), following `requested` (see NORMALIZATION_CHOICES)."""
    mean, std = tensors.get("activation_mean"), tensors.get("activation_std")
    if mean is None or std is None or torch.isnan(mean).any() or torch.isnan(std).any():
        return _Normalization("none")  # their rule: normalization is off unless both buffers are set
    if tuple(mean.shape) != (2, d) or tuple(std.shape) != (2, d):
        raise CrossCoderError(
            f"{where} has activation_mean {tuple(mean.shape)} / activation_std {tuple(std.shape)}; expected [2, {d}]"
        )
    mean_LD, std_LD = mean.to(torch.float32), std.to(torch.float32)
    if not (torch.isfinite(mean_LD).all() and torch.isfinite(std_LD).all()):
        raise CrossCoderError(f"{where} has infinite activation_mean or activation_std; the checkpoint is broken")
    stored = _stored_global_scale(tensors, where)
    derived = _derived_global_scale(tensors, std_LD)
    if requested == NORMALIZATION_AUTO:
        requested, why = _detect_mode(stored, derived, where)
    elif requested == NORMALIZATION_PER_DIMENSION and stored is not None and not bool((stored == 1).all()):
        raise CrossCoderError(
            f"{where} stores activation_global_scale = {_fmt(stored)}, not the ones keep_relative_variance=False "
            "writes: it normalizes by relative variance. Leave out --normalization per-dimension"
        )
    else:
        why = f"as requested ({requested})"
    if requested == NORMALIZATION_PER_DIMENSION:
        if not bool((std_LD >= 0).all()):
            raise CrossCoderError(f"{where} has a negative activation_std; the checkpoint is broken")
        return _Normalization(NORMALIZATION_PER_DIMENSION, mean_LD, std_LD + DENORMALIZE_EPS, why)
    g_L = stored if stored is not None else derived
    if g_L is None:
        raise CrossCoderError(
            f"{where} has activation_mean/std but neither activation_global_scale nor target_rms, so its "
            "relative-variance scale is unknown; pass --normalization per-dimension if it normalizes per dimension"
        )
    if not bool((torch.isfinite(g_L) & (g_L > 0)).all()):
        raise CrossCoderError(
            f"{where} normalizes with a global scale of {_fmt(g_L)}; it must be positive and finite for both models"
        )
    return _Normalization(NORMALIZATION_RELATIVE, mean_LD, g_L[:, None].expand(2, d), why)


def _stored_global_scale(tensors: dict[str, torch.Tensor], where: str) -> torch.Tensor | None:
    """Return `activation_global_scale` as a float32 [2] tensor (a scalar applies to both models), None if absent."""
    scale = tensors.get("activation_global_scale")
    if scale is None:
        return None
    if scale.numel() == 1:  # dictionary_learning of late June 2025: one scale over both models
        return scale.reshape(()).to(torch.float32).expand(2).clone()
    if tuple(scale.shape) != (2,):
        raise CrossCoderError(
            f"{where} has activation_global_scale of shape {tuple(scale.shape)}; expected [2] (one per model) or []"
        )
    return scale.to(torch.float32)


def _derived_global_scale(tensors: dict[str, torch.Tensor], std_LD: torch.Tensor) -> torch.Tensor | None:
    """Return target_rms / sqrt(Σ_d σ² + 1e-8) per model, as their NormalizableMixin computes it; None without target_rms."""
    if "target_rms" not in tensors or tensors["target_rms"].numel() != 1:
        return None
    return tensors["target_rms"].reshape(()).to(torch.float32) / torch.sqrt((std_LD**2).sum(dim=-1) + VARIANCE_EPS)


def _detect_mode(stored: torch.Tensor | None, derived: torch.Tensor | None, where: str) -> tuple[str, str]:
    """Return (mode, why) read from the buffers, or raise `CrossCoderError` when they cannot tell."""
    if stored is None and derived is None:
        return NORMALIZATION_PER_DIMENSION, "it has activation_mean/std but no global scale or target_rms"
    if stored is None:
        return NORMALIZATION_RELATIVE, "its global scale is derived from target_rms and activation_std"
    if not bool((stored == 1).all()):
        return NORMALIZATION_RELATIVE, "its activation_global_scale is not 1"
    if derived is not None and torch.allclose(derived, stored, rtol=1e-4, atol=0):
        return NORMALIZATION_RELATIVE, "its activation_global_scale of 1 matches target_rms and activation_std"
    implied = "" if derived is None else f" although target_rms and activation_std give {_fmt(derived)}"
    raise CrossCoderError(
        f"{where} normalizes with activation_mean/std, and its activation_global_scale is 1 for both models{implied}. "
        "That is what keep_relative_variance=False (per-dimension normalization, (x − mean) / (std + 1e-8)) writes, "
        "but the state dict does not record that flag. Pass --normalization per-dimension (Python: "
        "normalization='per-dimension') if it was trained with keep_relative_variance=False, or --normalization "
        "relative-variance to use the stored scale of 1, as dictionary_learning's own from_pretrained does"
    )


def _fmt(values: torch.Tensor) -> str:
    """Return a short display of a few numbers."""
    return "[" + ", ".join(f"{float(v):.6g}" for v in values.reshape(-1)) + "]"


def _find_key(metadata: dict, key: str):
    """Return the value of `key` in `metadata` or in the dicts nested in it (breadth first), None if absent."""
    pending = [metadata]
    while pending:
        current = pending.pop(0)
        if key in current:
            return current[key]
        pending.extend(value for value in current.values() if isinstance(value, dict))
    return None
