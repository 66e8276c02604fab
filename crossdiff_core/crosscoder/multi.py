"""`MultiCrossCoder`: a Dedicated Feature Crosscoder over N ≥ 2 models of possibly different widths.

Latents are ordered `[shared | model-0 exclusive | model-1 exclusive | … | model-(N−1) exclusive]`.
The partition is structural, as in the two-model `CrossCoder`: model m's encoder and decoder have
rows only for the shared latents and for its own exclusive block (row r < n_shared is shared latent
r, row n_shared + i is latent `slice_exclusive(m).start + i`), so an exclusive latent of model m has
no weights at all for any other model and can never read from or write to it. With every exclusive
block empty it is the standard N-model crosscoder.

Inputs and outputs of `encode`, `decode` and `forward` are lists of raw model activations, one per
model; the stored scales map them to the normalized space the crosscoder works in
(`x_normalized = x · scale`). Files: `config.json` (which says `"crosscoder_kind": "multi"`, so that
the two-model `CrossCoder` refuses it and this class refuses a two-model one) and `model.safetensors`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from crossdiff_core.crosscoder.config import KIND_KEY, MULTI_KIND, _block_count, _check_block_spec, config_from_dict
from crossdiff_core.crosscoder.model import (
    BLOCK_SHARED,
    CONFIG_FILE,
    CONFIG_KEY,
    WEIGHTS_FILE,
    WEIGHTS_SHA256_KEY,
    read_weights,
    tensors_sha256,
)
from crossdiff_core.errors import CrossCoderError, disk_full_error, is_disk_full
from crossdiff_core.files import usual_permissions

_WEIGHT_CONFIG_FIELDS = ("d", "dict_size", "exclusive", "k", "scales")
_PROVENANCE_FIELDS = ("models", "layers", "tokenizers")


@dataclass
class MultiCrossCoderConfig:
    """Everything needed to rebuild an N-model crosscoder and to know which models it belongs to."""

    d: list[int]
    """Width of each model's activations at its read layer, one entry per model (N ≥ 2)."""

    dict_size: int
    """Total number of latents F over all blocks."""

    exclusive: list[float | int] | float | int = 0.05
    """Size of each model's exclusive block: a fraction of `dict_size` if a float below 1, else a count;
    one value for every model, or a list with one per model. 0 everywhere = the standard crosscoder."""

    k: int = 32
    """Mean number of active latents per token under BatchTopK (the only sparsity an N-model crosscoder has)."""

    dec_init_norm: float = 0.1
    """L2 norm of each decoder row at initialization (per model)."""

    scales: list[float] | None = None
    """Per model: raw activation × scale = normalized activation (summed variance d_m); None = not fitted yet."""

    models: list[str | None] | None = None
    """Hub id or path of each model."""

    layers: list[int | None] | None = None
    """Layer of each model whose output activations are read."""

    tokenizers: list[str | None] | None = None
    """Fingerprint of each model's tokenizer."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_models(self) -> int:
        """Return the number of models N."""
        return len(self.d)

    @property
    def n_exclusive(self) -> list[int]:
        """Return the number of exclusive latents of each model."""
        specs = self.exclusive if isinstance(self.exclusive, list) else [self.exclusive] * self.n_models
        return [_block_count(spec, self.dict_size) for spec in specs]

    @property
    def n_shared(self) -> int:
        """Return the number of shared latents (read from and written to by every model)."""
        return self.dict_size - sum(self.n_exclusive)

    def validate(self) -> None:
        """Raise `CrossCoderError` saying what to change if the config is inconsistent; return None."""
        if not isinstance(self.d, list) or len(self.d) < 2:
            raise CrossCoderError(
                f"d={self.d!r} must list the activation width of each model, at least two (e.g. [576, 640, 896])"
            )
        for m, width in enumerate(self.d):
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise CrossCoderError(f"d[{m}]={width!r} must be a positive integer (model {m}'s activation width)")
        if isinstance(self.dict_size, bool) or not isinstance(self.dict_size, int) or self.dict_size < 1:
            raise CrossCoderError(f"dict_size={self.dict_size!r} must be a positive integer")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.dict_size:
            raise CrossCoderError(
                f"k={self.k!r} must be between 1 and dict_size={self.dict_size}: k is the mean number of active "
                "latents per token; use e.g. 32, or raise dict_size"
            )
        if not self.dec_init_norm > 0:
            raise CrossCoderError(f"dec_init_norm={self.dec_init_norm!r} must be > 0")
        if isinstance(self.exclusive, list):
            if len(self.exclusive) != self.n_models:
                raise CrossCoderError(
                    f"exclusive lists {len(self.exclusive)} block sizes for {self.n_models} models: give one per "
                    "model, or a single value for all"
                )
            for m, spec in enumerate(self.exclusive):
                _check_block_spec(f"exclusive[{m}]", spec)
        else:
            _check_block_spec("exclusive", self.exclusive)
        if self.n_shared < 0 or (self.n_shared == 0 and any(n == 0 for n in self.n_exclusive)):
            raise CrossCoderError(
                f"the exclusive blocks ({self.n_exclusive} latents) leave {self.n_shared} of dict_size="
                f"{self.dict_size} latents shared; lower exclusive or raise dict_size (0.05 per model is usual)"
            )
        for name in ("scales", *_PROVENANCE_FIELDS):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, list) or len(value) != self.n_models):
                raise CrossCoderError(
                    f"{name}={value!r} must be a list with one entry per model ({self.n_models}), or None"
                )
        for m, scale in enumerate(self.scales or []):
            if (
                isinstance(scale, bool)
                or not isinstance(scale, (int, float))
                or not (math.isfinite(scale) and scale > 0)
            ):
                raise CrossCoderError(
                    f"scales[{m}]={scale!r} must be a positive finite number (or scales=None before normalization "
                    "is fitted); check that the activations are not all zero or contain NaN"
                )

    def to_dict(self) -> dict:
        """Return the config as a JSON-serializable dict (the content of `config.json`), marked as multi-model."""
        return {KIND_KEY: MULTI_KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> MultiCrossCoderConfig:
        """Return the config stored in `data`; a two-model crosscoder's config is refused, saying what loads it."""
        return config_from_dict(cls, data, kind=MULTI_KIND)


def exclusive_block_name(m: int) -> str:
    """Return the name of model m's exclusive block, e.g. "model-1-exclusive"."""
    return f"model-{m}-exclusive"


class MultiCrossCoder(nn.Module):
    """A crosscoder over N models: one shared block all of them read and write, one exclusive block per model.

    Parameters per model m (`nn.ParameterList`s, indexed by m): `W_enc[m]` and `W_dec[m]`, each
    `[n_shared + n_exclusive[m], d[m]]` (latent-major, shared rows first), and `b_dec[m]`; `b_enc`
    is `[F]`. Buffers: the BatchTopK inference `threshold` and the per-model `scales` `[N]`.
    `save_pretrained(dir)` writes `config.json` and `model.safetensors`; `from_pretrained(dir)` restores it.
    """

    def __init__(self, config: MultiCrossCoderConfig | dict, seed: int | None = None):
        """Build a freshly initialized crosscoder (`seed` makes the initialization reproducible)."""
        super().__init__()
        if isinstance(config, dict):
            config = MultiCrossCoderConfig.from_dict(config)
        self.config = config
        self.n_models = config.n_models
        self.n_shared = config.n_shared
        self.n_exclusive = config.n_exclusive
        self.dict_size = config.dict_size
        rows = [self.n_shared + n for n in self.n_exclusive]
        self.W_enc = nn.ParameterList([nn.Parameter(torch.empty(r, d)) for r, d in zip(rows, config.d, strict=True)])
        self.W_dec = nn.ParameterList([nn.Parameter(torch.empty(r, d)) for r, d in zip(rows, config.d, strict=True)])
        self.b_enc = nn.Parameter(torch.zeros(config.dict_size))
        self.b_dec = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in config.d])
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("scales", torch.tensor(config.scales or [1.0] * self.n_models, dtype=torch.float32))
        starts = [self.n_shared + sum(self.n_exclusive[:m]) for m in range(self.n_models)]
        self._exclusive_slices = [slice(s, s + n) for s, n in zip(starts, self.n_exclusive, strict=True)]
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for W_dec, W_enc in zip(self.W_dec, self.W_enc, strict=True):
                W_dec.copy_(self.initial_rows(W_dec.shape, generator))
                W_enc.copy_(W_dec)

    def initial_rows(self, shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
        """Return CPU rows pointing in random directions, each of norm `dec_init_norm` (the tied initialization)."""
        direction = torch.randn(shape, generator=generator)
        direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return direction * self.config.dec_init_norm

    # ------------------------------------------------------------------ blocks

    @property
    def slice_shared(self) -> slice:
        """Return the latent range of the shared block (the first `n_shared` latents)."""
        return slice(0, self.n_shared)

    def slice_exclusive(self, m: int) -> slice:
        """Return the latent range of model m's exclusive block."""
        return self._exclusive_slices[m]

    def latents_of(self, m: int) -> torch.Tensor:
        """Return the latent index of each of model m's weight rows, int64 [n_shared + n_exclusive[m]]."""
        block = self.slice_exclusive(m)
        return torch.cat([torch.arange(self.n_shared), torch.arange(block.start, block.stop)])

    def weight_rows(self, m: int) -> torch.Tensor:
        """Return, for every latent, its row in `W_enc[m]`/`W_dec[m]`, int64 [F]; −1 where model m has no weights."""
        rows_F = torch.full((self.dict_size,), -1, dtype=torch.int64)
        rows_F[self.latents_of(m)] = torch.arange(self.n_shared + self.n_exclusive[m])
        return rows_F

    def block_names(self) -> list[str]:
        """Return the block name of every latent, in latent order (length F): "shared", "model-m-exclusive"."""
        names = [BLOCK_SHARED] * self.n_shared
        for m, n in enumerate(self.n_exclusive):
            names += [exclusive_block_name(m)] * n
        return names

    # ------------------------------------------------------------------ math

    def normalize(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return raw activations (one [B, d_m] tensor per model) mapped into the normalized space (× scale)."""
        return [x_BD * self.scales[m] for m, x_BD in enumerate(xs)]

    def denormalize(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Return normalized-space activations mapped back to raw model space (÷ scale)."""
        return [x_BD / self.scales[m] for m, x_BD in enumerate(xs)]

    def pre_activations(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Return the [B, F] encoder pre-activations of NORMALIZED inputs (differentiable).

        Each model's rows are one matmul `x_m · W_enc[m]ᵀ`; the shared columns are summed over models,
        the exclusive ones placed in their blocks. The cost is Σ_m B · d_m · (n_shared + n_exclusive[m]).
        """
        if len(xs) != self.n_models:
            raise CrossCoderError(f"got activations of {len(xs)} models; this crosscoder reads {self.n_models}")
        products = [x_BD @ W_enc.T for x_BD, W_enc in zip(xs, self.W_enc, strict=True)]
        shared_BS = products[0][:, : self.n_shared]
        for product in products[1:]:
            shared_BS = shared_BS + product[:, : self.n_shared]
        return torch.cat([shared_BS, *(p[:, self.n_shared :] for p in products)], dim=1) + self.b_enc

    def decoder_norms(self) -> torch.Tensor:
        """Return [N, F]: each latent's decoder-row L2 norm per model, 0 where the model has no weights for it."""
        norms_NF = self.b_enc.new_zeros(self.n_models, self.dict_size)
        for m, W_dec in enumerate(self.W_dec):
            row_norms = W_dec.norm(dim=1)
            norms_NF[m, self.slice_shared] = row_norms[: self.n_shared]
            norms_NF[m, self.slice_exclusive(m)] = row_norms[self.n_shared :]
        return norms_NF

    def activate(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """Return latent activations: ReLU, kept where `relu(pre) · Σ_m ‖d_m‖ > threshold` (BatchTopK at inference)."""
        f_BF = pre_BF.relu()
        return f_BF.where(f_BF * self.decoder_norms().sum(0) > self.threshold, 0.0)

    def encode(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Return the [B, F] latent activations of RAW model activations (inference)."""
        return self.activate(self.pre_activations(self.normalize(xs)))

    def decode_normalized(self, f_BF: torch.Tensor) -> list[torch.Tensor]:
        """Return each model's reconstruction in normalized space; model m only sees the shared block and its own."""
        out = []
        for m, (W_dec, b_dec) in enumerate(zip(self.W_dec, self.b_dec, strict=True)):
            x_hat_BD = torch.addmm(b_dec, f_BF[:, self.slice_shared], W_dec[: self.n_shared])
            if self.n_exclusive[m]:
                x_hat_BD = x_hat_BD + f_BF[:, self.slice_exclusive(m)] @ W_dec[self.n_shared :]
            out.append(x_hat_BD)
        return out

    def decode(self, f_BF: torch.Tensor) -> list[torch.Tensor]:
        """Return each model's reconstruction in RAW model space."""
        return self.denormalize(self.decode_normalized(f_BF))

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return (reconstructions in raw space, one per model; f_BF) for raw activations."""
        f_BF = self.encode(xs)
        return self.decode(f_BF), f_BF

    @torch.no_grad()
    def move_to_exclusive(
        self, m: int, shared_N: torch.Tensor, exclusive_N: torch.Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Move shared latents into exclusive latents of model m, then re-draw the shared ones; return None.

        Shared latent `shared_N[i]` hands its model-m encoder row, decoder row and encoder bias to
        `exclusive_N[i]` (latents of `slice_exclusive(m)`), whose old weights are discarded; its
        weights for the other models are dropped. The vacated shared latents are re-drawn as at
        initialization (tied, random, zero bias). Row of a latent: `exclusive_row(m, latents)`.
        """
        rows_N = self.exclusive_row(m, exclusive_N)
        self.W_enc[m][rows_N] = self.W_enc[m][shared_N]
        self.W_dec[m][rows_N] = self.W_dec[m][shared_N]
        self.b_enc[exclusive_N] = self.b_enc[shared_N]
        self.b_enc[shared_N] = 0.0
        for W_enc, W_dec in zip(self.W_enc, self.W_dec, strict=True):
            rows_ND = self.initial_rows((shared_N.numel(), W_dec.shape[1]), generator).to(W_dec)
            W_dec[shared_N] = rows_ND
            W_enc[shared_N] = rows_ND

    def exclusive_row(self, m: int, latents_N: torch.Tensor) -> torch.Tensor:
        """Return the rows of `W_enc[m]`/`W_dec[m]` that hold latents of model m's exclusive block."""
        return latents_N - self.slice_exclusive(m).start + self.n_shared

    # ------------------------------------------------------------------ files

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `config.json` and `model.safetensors` into `save_directory`; return None.

        Both are written under temporary names first and then renamed, so a failed write (a full
        disk raises `DiskFullError`) leaves the files already there as they were. The weights file
        records a SHA-256 of its tensors and the config fields they depend on (checked on load).
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        config = self.config.to_dict()
        metadata = {
            "format": "pt",
            WEIGHTS_SHA256_KEY: tensors_sha256(tensors),
            CONFIG_KEY: json.dumps({key: config[key] for key in _WEIGHT_CONFIG_FIELDS}),
        }
        weights_tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        config_tmp = folder / f".{CONFIG_FILE}.tmp-{os.getpid()}"
        try:
            save_file(tensors, str(weights_tmp), metadata=metadata)
            usual_permissions(weights_tmp)
            config_tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            os.replace(weights_tmp, folder / WEIGHTS_FILE)
            os.replace(config_tmp, folder / CONFIG_FILE)
        except (OSError, SafetensorError) as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(
                folder / WEIGHTS_FILE, error, f"the crosscoder files already in {folder} are unchanged; free space"
            ) from error
        finally:
            weights_tmp.unlink(missing_ok=True)
            config_tmp.unlink(missing_ok=True)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, map_location: str = "cpu") -> MultiCrossCoder:
        """Return the N-model crosscoder saved in a local folder by `save_pretrained`, in eval mode."""
        folder = Path(folder)
        config_path = folder / CONFIG_FILE
        try:
            data = json.loads(config_path.read_text())
        except FileNotFoundError as error:
            raise CrossCoderError(
                f"no {CONFIG_FILE} in {folder}: it is not a saved crosscoder; point to the folder save_pretrained wrote"
            ) from error
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CrossCoderError(
                f"{config_path} is not valid JSON ({error}): the file is corrupt or truncated; save the crosscoder again"
            ) from error
        try:
            model = cls(MultiCrossCoderConfig.from_dict(data))
        except CrossCoderError as error:
            raise CrossCoderError(f"{config_path} is not a valid N-model crosscoder config: {error}") from error
        weights_file = folder / WEIGHTS_FILE
        model.load_state_dict(read_weights(weights_file, model.state_dict()))
        with safe_open(str(weights_file), framework="pt") as handle:
            saved = (handle.metadata() or {}).get(CONFIG_KEY)
        current = model.config.to_dict()
        differences = [
            f"{key}: {current[key]!r} in {CONFIG_FILE}, {value!r} with the weights"
            for key, value in (json.loads(saved).items() if saved else ())
            if current.get(key) != value
        ]
        if differences:
            raise CrossCoderError(
                f"{config_path} does not match the crosscoder its {WEIGHTS_FILE} was saved with "
                f"({'; '.join(differences)}): a file is corrupt or was edited; save or train the crosscoder again"
            )
        return model.to(map_location).eval()
