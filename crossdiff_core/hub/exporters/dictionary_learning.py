"""Write a CrossDiff crosscoder as a dictionary_learning checkpoint with identical outputs (`export-dl`).

The inverse of `hub.importers.dictionary_learning`. What dfc_learning's classes read
(`dictionary_learning/dictionary.py`): `CrossCoder`, `BatchTopKCrossCoder`, `DedicatedFeatureCrossCoder` and
`DedicatedFeatureBatchTopKCrossCoder` all load a local file with `torch.load` with `weights_only=True` (the DFC
classes read no other local format; safetensors reach them only through the Hub mixin), build themselves from
its shapes, `k` and `_partition_config`, and `load_state_dict` strictly. So the export is that state dict, with
their names, shapes and dtypes, in `model_final.pt` (the name their training gives the final checkpoint):

    encoder.weight [2, d, F]   encoder.bias [F]   decoder.weight [2, F, d]   decoder.bias [2, d]   (float32)
    code_normalization_id = 1 (CROSSCODER)   target_rms []   activation_mean, activation_std [2, d]
    activation_global_scale [2]   k (int32), threshold (float32)   (BatchTopK)   _partition_config (DFC)

next to a `config.json` shaped like their training's (`{"trainer": {"dict_class": ..., ...}}`), `export.json`
(provenance) and `latent_mapping.json` (CrossDiff ids <-> theirs).

The conversion is exact by construction. Latents go from CrossDiff's `[A-exclusive | shared | B-exclusive]` to a
DFC's `[A-exclusive | B-exclusive | shared]` (the inverse of `source_latent_order`), and the weights a block has
no rows for are zeros, as a DFC keeps its forbidden weights. CrossDiff encodes `x · s` and decodes `y / s` per
model; their normalizer (keep_relative_variance=True, what `from_pretrained` builds) encodes `(x − μ) · g` and
decodes `y / (g + 1e-8) + μ`. With μ = 0 and g the float32 for which `g + 1e-8` rounds to s, decoding divides by
the same number; the encoder absorbs s / g (exactly 1 unless s is small), and the decoder, whose norms select
BatchTopK latents (`f · (‖d_a‖ + ‖d_b‖) > threshold`, their CROSSCODER code normalization), is unchanged. With
both scales 1 no normalizer is written (NaN statistics, as they store "none"). A crosscoder their format cannot
hold (two models of different widths) is refused with a `CrossCoderError` that says why.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from crossdiff_core import __version__
from crossdiff_core.crosscoder.model import CONFIG_FILE, WEIGHTS_FILE, CrossCoder
from crossdiff_core.errors import CrossCoderError, disk_full_error, is_disk_full
from crossdiff_core.files import file_sha256, write_folder_atomically, write_text_atomically
from crossdiff_core.hub.importers.dictionary_learning import (
    DENORMALIZE_EPS,
    VARIANCE_EPS,
    latent_mapping,
    source_latent_order,
)
from crossdiff_core.hub.repo import LATENT_MAPPING_FILE, open_crosscoder

EXPORT_WEIGHTS_FILE = "model_final.pt"
EXPORT_FILE = "export.json"
CROSSCODER_CODE_NORMALIZATION = 1
"""dictionary_learning's `CodeNormalization.CROSSCODER`: select on f · (‖d_a‖ + ‖d_b‖), as CrossDiff does."""


@dataclass
class ExportResult:
    """An exported checkpoint: where it is, the dfc_learning class that loads it, and how it was converted."""

    folder: Path
    dict_class: str
    crosscoder: CrossCoder
    normalization: str
    """"none" (both scales 1) or "relative-variance" (CrossDiff's scales as their per-model global scale)."""

    @property
    def weights_file(self) -> Path:
        """Return the state dict their `from_pretrained` loads."""
        return self.folder / EXPORT_WEIGHTS_FILE


@dataclass
class ExportedCheckpoint:
    """The state dict and `config.json` of the checkpoint, before it is written."""

    dict_class: str
    state_dict: dict
    trainer_config: dict
    normalization: str


def export_dictionary_learning(crosscoder: str | os.PathLike, out_dir: str | os.PathLike) -> ExportResult:
    """Write the crosscoder in `crosscoder` (a folder or Hub repo id) as a dictionary_learning checkpoint in `out_dir`.

    `out_dir` must be new or an empty folder. It receives `model_final.pt` (load it with
    `<dict_class>.from_pretrained(path)` of dfc_learning), `config.json`, `export.json` and `latent_mapping.json`.
    Raises `CrossCoderError` when `out_dir` is taken, `crosscoder` is not a CrossDiff crosscoder, or the format
    cannot hold it.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        kind = "a folder that is not empty" if out.is_dir() else "a file"
        raise CrossCoderError(f"{out} already exists and is {kind}: pick a new folder or delete it first")
    model, folder = open_crosscoder(crosscoder, feature_index=False)
    exported = dictionary_learning_checkpoint(model, str(crosscoder))
    source = {
        "source": str(crosscoder),
        "source_folder": str(folder.resolve()),
        "source_weights_sha256": file_sha256(folder / WEIGHTS_FILE),
        "source_config_sha256": file_sha256(folder / CONFIG_FILE),
    }

    def fill(tmp: Path) -> None:
        with open(tmp / EXPORT_WEIGHTS_FILE, "wb") as handle:  # Python's file: a full disk raises OSError
            torch.save(exported.state_dict, handle)
        write_text_atomically(tmp / CONFIG_FILE, json.dumps({"trainer": exported.trainer_config}, indent=4) + "\n")
        record = _provenance(model, exported, source, file_sha256(tmp / EXPORT_WEIGHTS_FILE))
        write_text_atomically(tmp / EXPORT_FILE, json.dumps(record, indent=2) + "\n")
        mapping = latent_mapping(model.n_a, model.n_b, model.dict_size)
        write_text_atomically(tmp / LATENT_MAPPING_FILE, json.dumps(mapping) + "\n")

    try:
        write_folder_atomically(out, fill)
    except OSError as error:
        if not is_disk_full(error):
            raise
        raise disk_full_error(
            out, error, f"nothing was written to {out}; free space on that disk and export again"
        ) from error
    return ExportResult(out, exported.dict_class, model, exported.normalization)


def dictionary_learning_checkpoint(crosscoder: CrossCoder, where: str = "this crosscoder") -> ExportedCheckpoint:
    """Return the dfc_learning class, state dict and trainer config equivalent to `crosscoder` (`where` names it)."""
    config = crosscoder.config
    if config.d_a != config.d_b:
        raise CrossCoderError(
            f"{where} reads model A with width {config.d_a} and model B with width {config.d_b}; dictionary_learning "
            "crosscoders stack both models' activations into one [2, d] tensor, so they need one width for both. "
            "A crosscoder across architectures of different widths cannot be exported"
        )
    weights = {name: tensor.detach().cpu().to(torch.float32) for name, tensor in crosscoder.state_dict().items()}
    broken = sorted(name for name, tensor in weights.items() if not bool(torch.isfinite(tensor).all()))
    if broken:
        raise CrossCoderError(f"{where} has NaN or infinite values in {', '.join(broken)}; the crosscoder is broken")
    d, size, n_a, n_b = config.d_a, crosscoder.dict_size, crosscoder.n_a, crosscoder.n_b
    scales = (float(weights["scale_a"]), float(weights["scale_b"]))
    normalizer, g_L = _normalizer(scales, d, where)
    ratio_L = torch.tensor(scales, dtype=torch.float32) / g_L  # what the encoder absorbs: s / g

    enc_LFD, dec_LFD = torch.zeros(2, size, d), torch.zeros(2, size, d)  # CrossDiff ids, latent-major
    enc_LFD[0, crosscoder.slice_a] = weights["W_enc_a"] * ratio_L[0]
    enc_LFD[1, crosscoder.slice_b] = weights["W_enc_b"] * ratio_L[1]
    dec_LFD[0, crosscoder.slice_a] = weights["W_dec_a"]
    dec_LFD[1, crosscoder.slice_b] = weights["W_dec_b"]
    order = torch.tensor(source_latent_order(n_a, n_b, size))  # their id of each CrossDiff latent
    enc_dl_LFD, dec_dl_LFD, b_enc_dl_F = torch.empty_like(enc_LFD), torch.empty_like(dec_LFD), torch.empty(size)
    enc_dl_LFD[:, order], dec_dl_LFD[:, order], b_enc_dl_F[order] = enc_LFD, dec_LFD, weights["b_enc"]

    state = normalizer | {"code_normalization_id": torch.tensor(CROSSCODER_CODE_NORMALIZATION)}
    trainer = {"activation_dim": d, "dict_size": size}
    batchtopk = config.sparsity == "batchtopk"
    if batchtopk:
        state |= {"k": torch.tensor(config.k, dtype=torch.int), "threshold": weights["threshold"].reshape(())}
        trainer["k"] = config.k
    state |= {
        "encoder.weight": enc_dl_LFD.transpose(1, 2).contiguous(), "encoder.bias": b_enc_dl_F,
        "decoder.bias": torch.stack([weights["b_dec_a"], weights["b_dec_b"]]), "decoder.weight": dec_dl_LFD,
    }  # fmt: skip
    trainer |= {"code_normalization": "CROSSCODER", "target_rms": 1.0}
    dfc = n_a + n_b > 0
    if dfc:
        partition = {"dict_size": size, "model_a_exclusive_pct": _exclusive_pct(n_a, size),
                     "model_b_exclusive_pct": _exclusive_pct(n_b, size)}  # fmt: skip
        state["_partition_config"] = partition
        trainer |= {key: value for key, value in partition.items() if key != "dict_size"}
    dict_class = ("DedicatedFeature" if dfc else "") + ("BatchTopKCrossCoder" if batchtopk else "CrossCoder")
    normalization = "none" if scales == (1.0, 1.0) else "relative-variance"
    return ExportedCheckpoint(dict_class, state, {"dict_class": dict_class, **trainer}, normalization)


def _normalizer(scales: tuple[float, float], d: int, where: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Return (their normalizer buffers, the global scale g per model [2]) reproducing CrossDiff's input scales.

    Both scales 1: no normalizer, as their classes store it (NaN statistics, global scale 1). Otherwise μ = 0, the
    global scale g, and a statistic σ per model (one value over its d dimensions) from which their
    `NormalizableMixin` would compute the same g (`target_rms / sqrt(Σσ² + 1e-8)` with target_rms 1); CrossDiff
    keeps no per-dimension statistics.
    """
    if scales == (1.0, 1.0):
        nan_LD = torch.full((2, d), math.nan)
        buffers = {"target_rms": torch.tensor(1.0), "activation_mean": nan_LD, "activation_std": nan_LD.clone(),
                   "activation_global_scale": torch.ones(2)}  # fmt: skip
        return buffers, torch.ones(2)
    g_L = torch.stack([_global_scale(scale, name, where) for scale, name in zip(scales, ("scale_a", "scale_b"))])
    sigma_L = torch.sqrt((1 / g_L.double() ** 2 - VARIANCE_EPS).clamp_min(0) / d).to(torch.float32)
    buffers = {"target_rms": torch.tensor(1.0), "activation_mean": torch.zeros(2, d),
               "activation_std": sigma_L[:, None].expand(2, d).contiguous(), "activation_global_scale": g_L}  # fmt: skip
    return buffers, g_L


def _global_scale(scale: float, name: str, where: str) -> torch.Tensor:
    """Return the float32 g > 0 for which their denominator, g + 1e-8 in float32, is exactly `scale`."""
    target = torch.tensor(scale, dtype=torch.float32)
    nearest = torch.tensor(scale - DENORMALIZE_EPS, dtype=torch.float32)
    for g in (nearest, torch.nextafter(nearest, target + 1), torch.nextafter(nearest, target - 1)):
        if g > 0 and torch.equal(g + DENORMALIZE_EPS, target):
            return g
    raise CrossCoderError(
        f"{where} has {name} = {scale:.6g}; dictionary_learning divides its reconstructions by (global scale + 1e-8), "
        "which cannot equal a scale this small, so its outputs would differ"
    )


def _exclusive_pct(n: int, dict_size: int) -> float:
    """Return the fraction for which their `FeaturePartition.from_percentages` gives n latents: int(dict_size · pct)."""
    pct = n / dict_size
    while int(dict_size * pct) < n:  # n / dict_size can round down by an ulp; one step up is enough
        pct = math.nextafter(pct, 1.0)
    return pct


def _provenance(crosscoder: CrossCoder, exported: ExportedCheckpoint, source: dict, weights_sha256: str) -> dict:
    """Return the JSON record of the export: the CrossDiff source and its sha256, the class, blocks and scaling."""
    config, state = crosscoder.config, exported.state_dict
    record = {"format": "dictionary_learning", "dict_class": exported.dict_class, "file": EXPORT_WEIGHTS_FILE,
              "sha256": weights_sha256, "load_with": f"{exported.dict_class}.from_pretrained(path)", **source}  # fmt: skip
    record |= {
        "dictionary_learning_latent_order": "[A-exclusive | B-exclusive | shared]",
        "crossdiff_latent_order": "[A-exclusive | shared | B-exclusive]",
        "dict_size": config.dict_size, "n_exclusive_a": config.n_exclusive_a,
        "n_exclusive_b": config.n_exclusive_b, "n_shared": config.n_shared,
        "sparsity": config.sparsity, "k": config.k if config.sparsity == "batchtopk" else None,
        "threshold": float(state["threshold"]) if "threshold" in state else None,
        "normalization": exported.normalization,
        "scale_a": float(crosscoder.scale_a), "scale_b": float(crosscoder.scale_b),
        "activation_global_scale": state["activation_global_scale"].tolist(),
        "model_a": config.model_a, "model_b": config.model_b, "layer_a": config.layer_a, "layer_b": config.layer_b,
        "latent_mapping_file": LATENT_MAPPING_FILE, "crossdiff_version": __version__,
    }  # fmt: skip
    return record
