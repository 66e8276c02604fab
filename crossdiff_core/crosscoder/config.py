"""`CrossCoderConfig`: the shape, sparsity and provenance of one crosscoder.

A crosscoder with `exclusive_a = exclusive_b = 0` is the standard crosscoder; anything else is a
Dedicated Feature Crosscoder (DFC). Latents are ordered `[A-exclusive | shared | B-exclusive]`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from crossdiff_core.errors import CrossCoderError

SPARSITY_KINDS = ("batchtopk", "l1")

KIND_KEY = "crosscoder_kind"
"""`config.json` key that marks an N-model crosscoder (`crossdiff_core.crosscoder.multi`); absent in a two-model one."""

MULTI_KIND = "multi"
"""The value of `KIND_KEY` in an N-model crosscoder's `config.json`."""

# Fields `check_pair` compares, as (name, label shown to the user).
_PAIR_FIELDS = (("model", "model"), ("revision", "revision"), ("layer", "layer"), ("tokenizer", "tokenizer"))


@dataclass
class CrossCoderConfig:
    """Everything needed to rebuild a crosscoder and to know which models it belongs to."""

    d_a: int
    """Width of model A's activations at the read layer (e.g. 576 for SmolLM2-135M)."""

    d_b: int
    """Width of model B's activations at the read layer; may differ from `d_a`."""

    dict_size: int
    """Total number of latents F over all three blocks."""

    exclusive_a: float | int = 0.05
    """Size of the A-exclusive block: a fraction of `dict_size` if a float below 1, else a count."""

    exclusive_b: float | int = 0.05
    """Size of the B-exclusive block: a fraction of `dict_size` if a float below 1, else a count."""

    sparsity: str = "batchtopk"
    """`"batchtopk"` (keep the k·batch largest latent scores per batch) or `"l1"` (ReLU + L1 penalty)."""

    k: int = 32
    """Mean number of active latents per token under BatchTopK."""

    l1_coeff: float = 1.0
    """Weight of the decoder-norm-weighted L1 penalty when `sparsity == "l1"`."""

    dec_init_norm: float = 0.1
    """L2 norm of each decoder row at initialization (per model)."""

    scale_a: float | None = None
    """Raw model-A activation × `scale_a` = normalized activation (mean squared norm `d_a`); None = not fitted yet."""

    scale_b: float | None = None
    """Raw model-B activation × `scale_b` = normalized activation (mean squared norm `d_b`); None = not fitted yet."""

    model_a: str | None = None
    """Hub id or path of model A."""

    model_b: str | None = None
    """Hub id or path of model B."""

    revision_a: str | None = None
    """Revision (commit, tag, file hash) of model A."""

    revision_b: str | None = None
    """Revision (commit, tag, file hash) of model B."""

    layer_a: int | None = None
    """Layer of model A whose output activations are read."""

    layer_b: int | None = None
    """Layer of model B whose output activations are read."""

    tokenizer_a: str | None = None
    """Fingerprint of model A's tokenizer."""

    tokenizer_b: str | None = None
    """Fingerprint of model B's tokenizer."""

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ block sizes

    @property
    def n_exclusive_a(self) -> int:
        """Return the number of A-exclusive latents."""
        return _block_count(self.exclusive_a, self.dict_size)

    @property
    def n_exclusive_b(self) -> int:
        """Return the number of B-exclusive latents."""
        return _block_count(self.exclusive_b, self.dict_size)

    @property
    def n_shared(self) -> int:
        """Return the number of shared latents (read from and written to both models)."""
        return self.dict_size - self.n_exclusive_a - self.n_exclusive_b

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Raise `CrossCoderError` saying what to change if the config is inconsistent; return None."""
        for name in ("d_a", "d_b", "dict_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CrossCoderError(f"{name}={value!r} must be a positive integer")
        if self.sparsity not in SPARSITY_KINDS:
            raise CrossCoderError(
                f"sparsity={self.sparsity!r} is not supported; use one of {', '.join(SPARSITY_KINDS)}"
            )
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.dict_size:
            raise CrossCoderError(
                f"k={self.k!r} must be between 1 and dict_size={self.dict_size}: k is the mean number of active "
                "latents per token; use e.g. 32, or raise dict_size"
            )
        if not self.l1_coeff >= 0:
            raise CrossCoderError(f"l1_coeff={self.l1_coeff!r} must be >= 0")
        if not self.dec_init_norm > 0:
            raise CrossCoderError(f"dec_init_norm={self.dec_init_norm!r} must be > 0")
        for name in ("scale_a", "scale_b"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise CrossCoderError(
                    f"{name}={value!r} must be a positive finite number (or None before normalization is fitted); "
                    "check that the activations are not all zero or contain NaN"
                )
        for name in ("exclusive_a", "exclusive_b"):
            _check_block_spec(name, getattr(self, name))
        fractions = [v for v in (self.exclusive_a, self.exclusive_b) if isinstance(v, float) and v < 1]
        if len(fractions) == 2 and sum(fractions) >= 1:
            raise CrossCoderError(
                f"exclusive_a={self.exclusive_a} + exclusive_b={self.exclusive_b} must sum to less than 1 "
                "so that shared latents remain (the paper default is 0.05 each)"
            )
        if self.n_exclusive_a + self.n_exclusive_b > self.dict_size:
            raise CrossCoderError(
                f"{self.n_exclusive_a} A-exclusive + {self.n_exclusive_b} B-exclusive latents exceed "
                f"dict_size={self.dict_size}; lower exclusive_a/exclusive_b or raise dict_size"
            )

    def check_pair(
        self,
        model_a: str | None,
        layer_a: int | None,
        tokenizer_a: str | None,
        model_b: str | None,
        layer_b: int | None,
        tokenizer_b: str | None,
        *,
        revision_a: str | None = None,
        revision_b: str | None = None,
    ) -> None:
        """Raise `CrossCoderError` if this crosscoder was trained on another model pair; return None.

        A field is only compared when both the config and the caller know it (neither is None).
        When the two models are given the other way round, the message says so.
        """
        given = {
            "model_a": model_a, "layer_a": layer_a, "tokenizer_a": tokenizer_a, "revision_a": revision_a,
            "model_b": model_b, "layer_b": layer_b, "tokenizer_b": tokenizer_b, "revision_b": revision_b,
        }  # fmt: skip
        mismatches = _pair_mismatches(self, given)
        if not mismatches:
            return
        swapped = {f"{field}_{side}": given[f"{field}_{other}"] for field, _ in _PAIR_FIELDS
                   for side, other in (("a", "b"), ("b", "a"))}  # fmt: skip
        if not _pair_mismatches(self, swapped):
            raise CrossCoderError(
                f"models A and B are swapped: this crosscoder was trained with model A = {self.model_a!r} "
                f"(layer {self.layer_a}) and model B = {self.model_b!r} (layer {self.layer_b}); "
                "pass them the other way round"
            )
        raise CrossCoderError(
            "this crosscoder was trained on a different model pair: "
            + "; ".join(mismatches)
            + ". Use the crosscoder trained for these models and layers, or train a new one"
        )

    def check_widths(self, d_a: int, d_b: int, name_a: str = "model A", name_b: str = "model B") -> None:
        """Raise `CrossCoderError` unless the models' activation widths are the crosscoder's `d_a`, `d_b`; return None.

        This catches a crosscoder used with other models even when its config does not record them.
        """
        wrong = [
            f"{name} gives {got}-wide activations but the crosscoder reads {want}"
            for name, got, want in ((name_a, d_a, self.d_a), (name_b, d_b, self.d_b))
            if got != want
        ]
        if wrong:
            raise CrossCoderError(
                "this crosscoder was trained on other models: "
                + "; ".join(wrong)
                + ". Use the crosscoder trained for these models, or train a new one"
            )

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict:
        """Return the config as a JSON-serializable dict (the content of `config.json`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CrossCoderConfig:
        """Return the config stored in `data`.

        Unknown keys are ignored with a warning; missing optional keys take their defaults.
        """
        return config_from_dict(cls, data, kind=None)


def config_from_dict(cls: type, data: dict, kind: str | None):
    """Return the config of dataclass `cls` stored in `data`, a `config.json` whose `KIND_KEY` must be `kind`.

    Unknown keys are ignored with a warning; missing optional keys take their defaults. A config of the
    other kind of crosscoder (two-model for `kind=None`, N-model for `MULTI_KIND`) is refused, saying what loads it.
    """
    if not isinstance(data, dict):
        raise CrossCoderError(
            f"a crosscoder config must be a JSON object, got {type(data).__name__}; the config.json is corrupt"
        )
    if data.get(KIND_KEY) != kind:
        if kind is None:
            raise CrossCoderError(
                f"this config.json is an N-model crosscoder's ({len(data.get('d') or [])} models): load it with "
                "MultiCrossCoder.from_pretrained (crossdiff_core.crosscoder.multi)"
            )
        raise CrossCoderError(
            f'this config.json is not an N-model crosscoder\'s (it has no "{KIND_KEY}": "{kind}"): load a '
            "two-model crosscoder with CrossCoder.from_pretrained"
        )
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known - {KIND_KEY})
    if unknown:
        warnings.warn(
            f"ignoring unknown crosscoder config keys {unknown} (written by a newer CrossDiff?)", stacklevel=3
        )
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise CrossCoderError(
            f"crosscoder config lacks required keys {missing}; the config.json is incomplete: re-download or re-train"
        )
    return cls(**{key: value for key, value in data.items() if key in known})


def is_multi_folder(folder: str | os.PathLike) -> bool:
    """Return whether `folder` holds an N-model crosscoder (its `config.json` says `"crosscoder_kind": "multi"`).

    False for a two-model crosscoder, a folder without a readable `config.json`, or one that is not JSON.
    """
    try:
        data = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get(KIND_KEY) == MULTI_KIND


def _check_block_spec(name: str, value: float) -> None:
    """Raise `CrossCoderError` unless `value` is a fraction in [0, 1) or a non-negative integer count."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CrossCoderError(f"{name}={value!r} must be a fraction in [0, 1) or a non-negative integer count")
    if value < 0 or (isinstance(value, float) and value >= 1 and not value.is_integer()):
        raise CrossCoderError(
            f"{name}={value!r} must be a fraction in [0, 1) (e.g. 0.05) or a non-negative integer count (e.g. 400)"
        )


def _block_count(spec: float, dict_size: int) -> int:
    """Return the latent count a block spec (fraction below 1, or count) stands for."""
    if isinstance(spec, float) and spec < 1:
        return round(spec * dict_size)
    return int(spec)


def _pair_mismatches(config: CrossCoderConfig, given: dict) -> list[str]:
    """Return one message per pair field where `given` and `config` both have a value and they differ."""
    out = []
    for side in ("a", "b"):
        for field, label in _PAIR_FIELDS:
            key = f"{field}_{side}"
            trained, asked = getattr(config, key), given[key]
            if trained is not None and asked is not None and trained != asked:
                out.append(
                    f"{label} of model {side.upper()} is {asked!r} but the crosscoder was trained on {trained!r}"
                )
    return out
