"""`CrossCoder`: a (Dedicated Feature) crosscoder over two models of possibly different widths.

Latents are ordered `[A-exclusive | shared | B-exclusive]`. The partition is structural: model A's
encoder and decoder only have rows for latents `[0, nA + nS)` and model B's only for
`[nA, F)`, so an A-exclusive latent has no weights at all for model B (and vice versa) and can
never read from or write to it. Encoders are stored latent-major, like `nn.Linear.weight`.

Inputs and outputs of `encode`, `decode` and `forward` are raw model activations; the stored
scales map them to the normalized space the crosscoder works in (`x_normalized = x · scale`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.errors import CrossCoderError, disk_full_error, is_disk_full
from crossdiff_core.files import usual_permissions

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SUMMARY_FILE = "training.json"
"""The training summary `train` writes next to the weights (progress, final metrics, both configs)."""
WEIGHTS_SHA256_KEY = "crossdiff_tensors_sha256"
"""safetensors metadata key: SHA-256 of the tensors (`tensors_sha256`), checked on load."""
CONFIG_KEY = "crossdiff_config"
"""safetensors metadata key: the config fields the weights depend on, checked against `config.json` on load."""
_WEIGHT_CONFIG_FIELDS = ("d_a", "d_b", "dict_size", "sparsity", "k", "scale_a", "scale_b")

BLOCK_A_EXCLUSIVE = "A-exclusive"
BLOCK_SHARED = "shared"
BLOCK_B_EXCLUSIVE = "B-exclusive"


class CrossCoder(
    nn.Module, PyTorchModelHubMixin, library_name="crossdiff", tags=["crosscoder", "dfc", "model-diffing"]
):
    """A crosscoder whose latents are split into A-exclusive, shared and B-exclusive blocks.

    `save_pretrained(dir)` writes `config.json` and `model.safetensors`;
    `CrossCoder.from_pretrained(dir_or_hub_id)` restores it, buffers included.
    """

    def __init__(self, config: CrossCoderConfig | dict, seed: int | None = None):
        """Build a freshly initialized crosscoder (`seed` makes the initialization reproducible)."""
        super().__init__()
        if isinstance(config, dict):
            config = CrossCoderConfig.from_dict(config)
        self.config = config
        self.n_a = config.n_exclusive_a  # A-exclusive latents
        self.n_shared = config.n_shared  # shared latents
        self.n_b = config.n_exclusive_b  # B-exclusive latents
        self.dict_size = config.dict_size
        n_rows_a, n_rows_b = self.n_a + self.n_shared, self.n_shared + self.n_b

        self.W_enc_a = nn.Parameter(torch.empty(n_rows_a, config.d_a))
        self.W_enc_b = nn.Parameter(torch.empty(n_rows_b, config.d_b))
        self.b_enc = nn.Parameter(torch.zeros(config.dict_size))
        self.W_dec_a = nn.Parameter(torch.empty(n_rows_a, config.d_a))
        self.W_dec_b = nn.Parameter(torch.empty(n_rows_b, config.d_b))
        self.b_dec_a = nn.Parameter(torch.zeros(config.d_a))
        self.b_dec_b = nn.Parameter(torch.zeros(config.d_b))
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("scale_a", torch.tensor(1.0 if config.scale_a is None else float(config.scale_a)))
        self.register_buffer("scale_b", torch.tensor(1.0 if config.scale_b is None else float(config.scale_b)))
        self._initialize(seed)

    def _initialize(self, seed: int | None) -> None:
        """Set decoder rows to random directions of norm `dec_init_norm`, encoders to the decoders (tied init)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for W_dec, W_enc in ((self.W_dec_a, self.W_enc_a), (self.W_dec_b, self.W_enc_b)):
                W_dec.copy_(self._initial_rows(W_dec.shape, generator))
                W_enc.copy_(W_dec)

    def _initial_rows(self, shape: tuple[int, int], generator: torch.Generator | None) -> torch.Tensor:
        """Return CPU rows pointing in random directions, each of norm `dec_init_norm`."""
        direction = torch.randn(shape, generator=generator)
        direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return direction * self.config.dec_init_norm

    def move_to_exclusive(
        self, shared_N: torch.Tensor, exclusive_N: torch.Tensor, generator: torch.Generator | None = None
    ) -> None:
        """Move shared latents into exclusive latents of ONE block, then re-initialize the shared ones; return None.

        Shared latent `shared_N[i]` hands its encoder row, decoder row and encoder bias for the block's
        model to `exclusive_N[i]` (whose old weights are discarded); its weights for the other model are
        dropped. The vacated shared latents are re-drawn as at initialization (tied, random, zero bias).
        """
        on_a = bool((exclusive_N < self.n_a).all())
        if not on_a and not bool((exclusive_N >= self.slice_b_exclusive.start).all()):
            raise CrossCoderError("move_to_exclusive needs target latents of a single exclusive block")
        shared_N, exclusive_N = shared_N.to(self.b_enc.device), exclusive_N.to(self.b_enc.device)
        offset = 0 if on_a else self.n_a
        W_enc, W_dec = (self.W_enc_a, self.W_dec_a) if on_a else (self.W_enc_b, self.W_dec_b)
        with torch.no_grad():
            W_enc[exclusive_N - offset] = W_enc[shared_N - offset]
            W_dec[exclusive_N - offset] = W_dec[shared_N - offset]
            self.b_enc[exclusive_N] = self.b_enc[shared_N]
            self.b_enc[shared_N] = 0.0
            for W_enc, W_dec, offset in ((self.W_enc_a, self.W_dec_a, 0), (self.W_enc_b, self.W_dec_b, self.n_a)):
                rows_ND = self._initial_rows((shared_N.numel(), W_dec.shape[1]), generator)
                W_dec[shared_N - offset] = rows_ND.to(W_dec)
                W_enc[shared_N - offset] = rows_ND.to(W_enc)

    # ------------------------------------------------------------------ blocks

    @property
    def slice_a_exclusive(self) -> slice:
        """Return the latent range of the A-exclusive block."""
        return slice(0, self.n_a)

    @property
    def slice_shared(self) -> slice:
        """Return the latent range of the shared block."""
        return slice(self.n_a, self.n_a + self.n_shared)

    @property
    def slice_b_exclusive(self) -> slice:
        """Return the latent range of the B-exclusive block."""
        return slice(self.n_a + self.n_shared, self.dict_size)

    @property
    def slice_a(self) -> slice:
        """Return the latent range model A reads from and writes to (A-exclusive + shared)."""
        return slice(0, self.n_a + self.n_shared)

    @property
    def slice_b(self) -> slice:
        """Return the latent range model B reads from and writes to (shared + B-exclusive)."""
        return slice(self.n_a, self.dict_size)

    def block_of(self, latent: int) -> str:
        """Return the block of a latent index: "A-exclusive", "shared" or "B-exclusive"."""
        if not 0 <= latent < self.dict_size:
            raise CrossCoderError(f"latent {latent} is out of range: this crosscoder has {self.dict_size} latents")
        if latent < self.n_a:
            return BLOCK_A_EXCLUSIVE
        if latent < self.n_a + self.n_shared:
            return BLOCK_SHARED
        return BLOCK_B_EXCLUSIVE

    def block_names(self) -> list[str]:
        """Return the block name of every latent, in latent order (length F)."""
        return [BLOCK_A_EXCLUSIVE] * self.n_a + [BLOCK_SHARED] * self.n_shared + [BLOCK_B_EXCLUSIVE] * self.n_b

    # ------------------------------------------------------------------ math

    def normalize(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return raw activations mapped into the crosscoder's normalized space (× scale)."""
        return x_a_BD * self.scale_a, x_b_BD * self.scale_b

    def denormalize(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return normalized-space activations mapped back to raw model space (÷ scale)."""
        return x_a_BD / self.scale_a, x_b_BD / self.scale_b

    def pre_activations(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> torch.Tensor:
        """Return the [B, F] encoder pre-activations of NORMALIZED inputs (differentiable).

        This is the one dense matmul of a training step; it allocates a single [B, F] result.
        """
        pre_BF = self.b_enc.expand(x_a_BD.shape[0], -1).clone()
        pre_BF[:, self.slice_a].addmm_(x_a_BD, self.W_enc_a.T)
        pre_BF[:, self.slice_b].addmm_(x_b_BD, self.W_enc_b.T)
        return pre_BF

    @torch.no_grad()
    def encoder_products(
        self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor, workspace: EncoderWorkspace | None = None
    ) -> torch.Tensor:
        """Return the [B, F] pre-activations WITHOUT the encoder bias, not differentiable (the training fast path).

        One matmul `[x_a | x_b] · [W_enc_a | W_enc_b]ᵀ` over both models (inner dimension d_a + d_b) writes
        every product once, where a matmul per model would write the shared block twice. Leaving the bias
        out spares a full [B, F] copy: selection and gather add `b_enc` only where they look. With a
        `workspace` the result is its buffer, overwritten by the next call with that workspace.
        """
        workspace = workspace if workspace is not None else EncoderWorkspace()
        return workspace.products(self, torch.cat([x_a_BD, x_b_BD], dim=1))

    def decoder_norms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (norm_a_F, norm_b_F): each latent's decoder-row L2 norm per model, 0 where it has no weights."""
        norm_a_F = self.W_dec_a.new_zeros(self.dict_size)
        norm_b_F = self.W_dec_b.new_zeros(self.dict_size)
        norm_a_F[self.slice_a] = self.W_dec_a.norm(dim=1)
        norm_b_F[self.slice_b] = self.W_dec_b.norm(dim=1)
        return norm_a_F, norm_b_F

    def activate(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """Return latent activations from pre-activations: ReLU, then (BatchTopK) the inference threshold.

        Under BatchTopK an entry is kept when `relu(pre) · (‖d_a‖ + ‖d_b‖) > threshold`; under L1 it is plain ReLU.
        """
        f_BF = pre_BF.relu()
        if self.config.sparsity == "batchtopk":
            norm_a_F, norm_b_F = self.decoder_norms()
            f_BF = f_BF.where(f_BF * (norm_a_F + norm_b_F) > self.threshold, 0.0)
        return f_BF

    def encode(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> torch.Tensor:
        """Return the [B, F] latent activations of RAW model activations (inference)."""
        return self.activate(self.pre_activations(*self.normalize(x_a_BD, x_b_BD)))

    def decode_normalized(self, f_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x_hat_a_BD, x_hat_b_BD) in normalized space; model A only sees its latents, model B its own."""
        x_hat_a_BD = f_BF[:, self.slice_a] @ self.W_dec_a + self.b_dec_a
        x_hat_b_BD = f_BF[:, self.slice_b] @ self.W_dec_b + self.b_dec_b
        return x_hat_a_BD, x_hat_b_BD

    def decode(self, f_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x_hat_a_BD, x_hat_b_BD): reconstructions of both models in RAW model space."""
        return self.denormalize(*self.decode_normalized(f_BF))

    def forward(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (x_hat_a_BD, x_hat_b_BD, f_BF) for raw activations: reconstructions in raw space and latents."""
        f_BF = self.encode(x_a_BD, x_b_BD)
        x_hat_a_BD, x_hat_b_BD = self.decode(f_BF)
        return x_hat_a_BD, x_hat_b_BD, f_BF

    # ------------------------------------------------------------------ files

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> str | None:
        """Write `config.json` and `model.safetensors` (and a `README.md` card when there is none) into `save_directory`.

        Both files are written under temporary names first, so a failed write (a full disk raises
        `DiskFullError`) leaves the files already in the folder as they were. Other arguments are
        those of `PyTorchModelHubMixin.save_pretrained`.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self._staged_files = self._stage_files(save_directory)
        try:
            return super().save_pretrained(save_directory, **kwargs)
        finally:
            for tmp in self._staged_files:
                tmp.unlink(missing_ok=True)
            self._staged_files = None

    def _stage_files(self, save_directory: Path) -> tuple[Path, Path]:
        """Write the weights and config under temporary names in `save_directory` and return those paths.

        The weights file records a SHA-256 of its tensors and the config fields they depend on, so
        that `read_weights` and `from_pretrained` detect damage that still parses.
        """
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        metadata = {
            "format": "pt",
            WEIGHTS_SHA256_KEY: tensors_sha256(tensors),
            CONFIG_KEY: json.dumps({key: getattr(self.config, key) for key in _WEIGHT_CONFIG_FIELDS}),
        }
        weights_tmp = save_directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
        config_tmp = save_directory / f".{CONFIG_FILE}.tmp-{os.getpid()}"
        try:
            save_file(tensors, str(weights_tmp), metadata=metadata)
            usual_permissions(weights_tmp)
            config_tmp.write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        except (OSError, SafetensorError) as error:
            weights_tmp.unlink(missing_ok=True)
            config_tmp.unlink(missing_ok=True)
            if not is_disk_full(error):
                raise
            raise disk_full_error(
                save_directory / WEIGHTS_FILE,
                error,
                f"the crosscoder files already in {save_directory} are unchanged; free space on that disk and save again",
            ) from error
        return weights_tmp, config_tmp

    def _save_pretrained(self, save_directory: Path) -> None:
        """Move the staged `model.safetensors` and `config.json` into `save_directory` (renames need no space)."""
        weights_tmp, config_tmp = getattr(self, "_staged_files", None) or self._stage_files(save_directory)
        os.replace(weights_tmp, save_directory / WEIGHTS_FILE)
        os.replace(config_tmp, save_directory / CONFIG_FILE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> CrossCoder:
        """Return the crosscoder saved in a local directory or Hub repo (see `save_pretrained`)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CrossCoderError(
                f"{CONFIG_FILE} of {pretrained_model_name_or_path} is not valid JSON ({error}): the file is "
                "corrupt or truncated; re-download the crosscoder or save it again"
            ) from error

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict | CrossCoderConfig | None = None,
        map_location: str = "cpu",
        **_: object,
    ) -> CrossCoder:
        """Return the crosscoder built from `config` with weights read from `model.safetensors`."""
        if config is None:
            raise CrossCoderError(
                f"no readable {CONFIG_FILE} in {model_id}: it is not a saved crosscoder; "
                "point to the folder written by save_pretrained or train one"
            )
        try:
            model = cls(config)
        except CrossCoderError as error:
            raise CrossCoderError(
                f"{CONFIG_FILE} of {model_id} is not a valid crosscoder config ({error}); re-download the crosscoder "
                "or save it again"
            ) from error
        if os.path.isdir(model_id):
            weights_file = os.path.join(model_id, WEIGHTS_FILE)
        else:
            weights_file = hf_hub_download(
                repo_id=model_id, filename=WEIGHTS_FILE, revision=revision, cache_dir=cache_dir,
                force_download=force_download, token=token, local_files_only=local_files_only,
            )  # fmt: skip
        model.load_state_dict(read_weights(weights_file, model.state_dict()))
        _check_config_matches_weights(weights_file, model.config, model_id)
        return model.to(map_location).eval()


class EncoderWorkspace:
    """The buffers of `CrossCoder.encoder_products` that a training run keeps from step to step.

    Both encoders side by side, `[F, d_a + d_b]` with zeros where a model has no weights (copied from the
    encoders at each call; the zeros are written once), and the `[B, F]` result. On a CPU a new
    result of that size (32 MiB at F = 8192, batch 1024) is mapped afresh at every step and its pages
    are faulted in one by one, which costs more than the copy of the encoders.
    """

    def __init__(self) -> None:
        self.encoders_FD: torch.Tensor | None = None
        self.products_BF: torch.Tensor | None = None

    def products(self, crosscoder: CrossCoder, x_BD: torch.Tensor) -> torch.Tensor:
        """Return `x_BD · encodersᵀ` for inputs `[x_a | x_b]` (see `CrossCoder.encoder_products`)."""
        W_enc_a, W_enc_b = crosscoder.W_enc_a.detach(), crosscoder.W_enc_b.detach()
        d_a = W_enc_a.shape[1]
        shape = (crosscoder.dict_size, d_a + W_enc_b.shape[1])
        if not _fits(self.encoders_FD, shape, W_enc_a):
            self.encoders_FD = W_enc_a.new_zeros(shape)
        self.encoders_FD[crosscoder.slice_a, :d_a] = W_enc_a
        self.encoders_FD[crosscoder.slice_b, d_a:] = W_enc_b
        if not _fits(self.products_BF, (x_BD.shape[0], shape[0]), x_BD):
            self.products_BF = x_BD.new_empty(x_BD.shape[0], shape[0])
        return torch.mm(x_BD, self.encoders_FD.T, out=self.products_BF)


def _fits(buffer: torch.Tensor | None, shape: tuple[int, int], like: torch.Tensor) -> bool:
    """Return whether `buffer` exists with `shape` and the dtype and device of `like`."""
    return buffer is not None and buffer.shape == shape and buffer.dtype == like.dtype and buffer.device == like.device


def check_models(crosscoder: CrossCoder, model_a, model_b) -> None:
    """Raise `CrossCoderError` if the crosscoder was trained on another model pair, layer or tokenizer; return None.

    `model_a` and `model_b` are loaded models (`crossdiff_core.models.LoadedModel`, or anything with its
    `model_id`, `layer`, `tokenizer_fingerprint` and `d_model`); the crosscoder never imports the models.
    """
    crosscoder.config.check_pair(
        model_a.model_id, model_a.layer, model_a.tokenizer_fingerprint,
        model_b.model_id, model_b.layer, model_b.tokenizer_fingerprint,
    )  # fmt: skip
    crosscoder.config.check_widths(
        model_a.d_model, model_b.d_model, f"model A ({model_a.model_id})", f"model B ({model_b.model_id})"
    )


def read_weights(path: str | os.PathLike, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return the tensors (on CPU) of a crosscoder safetensors file after checking names and shapes against `expected`.

    Raises `CrossCoderError` naming the file when it is missing, corrupt, truncated or does not fit the config.
    """
    try:
        tensors = load_file(str(path))
    except FileNotFoundError as error:
        raise CrossCoderError(f"{path} is missing: re-download the crosscoder or save it again") from error
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CrossCoderError(
            f"{path} is corrupt or truncated ({error}); re-download the crosscoder or re-train it"
        ) from error
    recorded = _weights_metadata(path).get(WEIGHTS_SHA256_KEY)
    if recorded is not None and tensors_sha256(tensors) != recorded:
        raise CrossCoderError(
            f"{path} is corrupt (its tensors do not match the checksum saved with them); "
            "re-download the crosscoder or re-train it"
        )
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{name} {tuple(tensors[name].shape)} vs {tuple(ref.shape)}"
        for name, ref in expected.items()
        if name in tensors and tensors[name].shape != ref.shape
    ]
    if missing or unexpected or wrong:
        raise CrossCoderError(
            f"{path} does not match its {CONFIG_FILE} (missing {missing}, unexpected {unexpected}, "
            f"shape mismatches {wrong}); the files come from different crosscoders: re-download or re-train"
        )
    return tensors


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Return a SHA-256 over tensors' names, shapes, dtypes and bytes (what `model.safetensors` records of itself)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors.items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _weights_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the metadata of a safetensors file ({} when it has none)."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def _check_config_matches_weights(weights_file: str, config: CrossCoderConfig, model_id: str) -> None:
    """Raise `CrossCoderError` when `config.json` differs from the config saved with the weights in a field they depend on."""
    saved = _weights_metadata(weights_file).get(CONFIG_KEY)
    if saved is None:
        return  # written before the config was recorded with the weights
    differences = [
        f"{key}: {getattr(config, key)!r} in {CONFIG_FILE}, {value!r} with the weights"
        for key, value in json.loads(saved).items()
        if key in _WEIGHT_CONFIG_FIELDS and getattr(config, key) != value
    ]
    if differences:
        raise CrossCoderError(
            f"{CONFIG_FILE} of {model_id} does not match the crosscoder its {WEIGHTS_FILE} was saved with "
            f"({'; '.join(differences)}): the file is corrupt or was edited; re-download the crosscoder or re-train it"
        )
