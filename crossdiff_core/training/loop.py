"""Train a crosscoder (DFC or standard) on a stream of paired activations, with resumable checkpoints.

`train(config, train_config, source, out_dir)` fits the normalization scales, builds the
crosscoder, and runs Adam (linear warmup, then linear decay to 0) on

    loss = Σ_m mean_tokens ‖x̂_m − x_m‖²  (normalized space)
           + auxk_coeff · (d_a + d_b) · auxk loss              (BatchTopK)
           or + l1_coeff · mean_tokens Σ_j f_j (‖d_a,j‖ + ‖d_b,j‖)   (L1)

Normalization scales each model so that its variance around its mean, summed over dimensions, is
d_m (the mean itself goes to the decoder bias, which starts there). Scaling by the raw second
moment instead lets a residual stream with a large constant component (Gemma-3: about 17 times its
variance) count for little in the loss, and tilts every latent's decoder norms toward the other model.

The auxk loss is relative (residual error over residual variance); the reconstruction term is in
units where model m's variance is d_m, so the auxk term is scaled by d_a + d_b to keep
`auxk_coeff` the weight it has against a normalized reconstruction loss (Gao et al. 2024).
In a DFC, every `relocate_every` steps an alive shared latent that only writes to one model
(relative decoder norm beyond `relocate_relative_norm`) moves into a dead latent of that model's
exclusive block: shared latents pick up one-model features as easily as exclusive ones do, and
nothing else would carry such a feature to the block that says what it is.

BatchTopK steps use the sparse kernels of `crossdiff_core.crosscoder.sparse_ops`; the L1 baseline
is dense. Every `checkpoint_every` steps the full training state is written atomically to
`out_dir/checkpoint/`; a later call with the same arguments continues from there and ends with
the same weights as an uninterrupted run. The finished crosscoder is written with
`save_pretrained(out_dir)` next to `metrics.jsonl` and `training.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as nnf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from crossdiff_core.activations.batches import BatchSource
from crossdiff_core.crosscoder.batchtopk import (
    LatentSelection,
    default_k_aux,
    select_batch_topk,
    select_dead_topk,
    updated_threshold,
)
from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.crosscoder.model import SUMMARY_FILE, CrossCoder
from crossdiff_core.crosscoder.sparse_ops import SPARSE, LatentOps
from crossdiff_core.distributed import Dist, RankSource
from crossdiff_core.errors import (
    CheckpointError,
    CrossCoderError,
    NotEnoughMemoryError,
    disk_full_error,
    is_disk_full,
    is_out_of_memory,
)
from crossdiff_core.files import file_sha256, usual_permissions, write_text_atomically

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.safetensors"
CHECKPOINT_META_FILE = "checkpoint.json"
METRICS_FILE = "metrics.jsonl"

_PREVIOUS_CHECKPOINT_DIR = ".checkpoint-previous"
_PARTIAL_CHECKPOINT_PREFIX = ".checkpoint-partial-"
_CHECKPOINT_FORMAT = 1
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
# Train-config fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("checkpoint_every", "log_every", "device")
PAIR_INFO_KEYS = ("model_a", "model_b", "revision_a", "revision_b", "layer_a", "layer_b", "tokenizer_a", "tokenizer_b")


@dataclass
class TrainConfig:
    """How to train: schedule, optimizer, dead-latent handling, checkpoints and hardware."""

    steps: int = 10_000
    """Number of optimizer steps."""

    batch_size: int = 1024
    """Tokens (paired activations) per step; BatchTopK selects k·batch_size latents per batch."""

    lr: float | None = None
    """Adam learning rate; None scales it with the dictionary size: 2e-4 / sqrt(dict_size / 16384)."""

    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""

    warmup_steps: int = 100
    """Steps over which the learning rate rises linearly from 0 to `lr`."""

    decay_start: float = 0.8
    """Fraction of `steps` after which the learning rate decays linearly to 0 at the last step."""

    auxk_coeff: float = 1 / 32
    """Weight of the auxk loss that revives dead latents, against a normalized reconstruction loss (BatchTopK)."""

    auxk_exclusive: bool = False
    """Let auxk revive dead exclusive latents too (DFC). Off, exclusive latents are filled by
    relocation only. On synthetic ground truth (benchmarks/synthetic) turning it on makes about a
    third of the exclusive latents copies of one side of a shared feature and costs shared recovery;
    on a short real run, where no latent becomes one-sided, it is what keeps the blocks alive."""

    k_aux: int | None = None
    """Dead latents the auxk loss uses per token; None = half the wider model's width."""

    dead_after_tokens: int | None = None
    """A latent is dead once it has not fired for this many tokens; dead latents feed the auxk loss and
    receive relocated latents. None (the default) = automatic, scaled with the run (`dead_after`):
    5% of the run's tokens (steps × batch_size / 20), at least 4 batches, at most 10M tokens. A fixed
    count meant for long runs (10M) never marks a latent dead in a run of a few hundred thousand
    tokens, so auxk and relocation would never act."""

    relocate_every: int = 100
    """Steps between moves of one-model shared latents into dead exclusive latents (DFC only)."""

    relocate_relative_norm: float = 0.9
    """A shared latent writes to one model only when ‖d_a‖/(‖d_a‖+‖d_b‖) is above this (A) or below 1 − this (B)."""

    threshold_decay: float = 0.99
    """EMA decay of the BatchTopK inference threshold (the smallest selected score per batch)."""

    seed: int = 0
    """Seeds the initialization and the data order; same seed and data ⇒ same crosscoder."""

    checkpoint_every: int = 1000
    """Steps between checkpoints (a checkpoint is also written at the end and when stopped)."""

    log_every: int = 10
    """Steps between logged metrics (and progress callbacks); the last step is always logged."""

    device: str | None = None
    """Torch device ("cpu", "cuda", "cuda:1"); None = CUDA when available, else CPU."""

    dtype: str = "float32"
    """Parameter and activation dtype: "float32", "bfloat16", "float16" or "float64"."""

    def dead_after(self) -> int:
        """Return the tokens without firing after which a latent is dead: `dead_after_tokens`, or when that is
        None, `auto_dead_after_tokens(steps, batch_size)`."""
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        return auto_dead_after_tokens(self.steps, self.batch_size)

    def validate(self) -> None:
        """Raise `CrossCoderError` saying what to change if a field is out of range; return None."""
        positive = ("steps", "batch_size", "dead_after_tokens", "relocate_every", "checkpoint_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if name == "dead_after_tokens" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                more = " (or None for automatic)" if name == "dead_after_tokens" else ""
                raise CrossCoderError(f"{name}={value!r} must be a positive integer{more}")
        if self.lr is not None and not self.lr > 0:
            raise CrossCoderError(f"lr={self.lr!r} must be > 0 (or None for the size-scaled default)")
        if self.warmup_steps < 0 or not 0 <= self.decay_start <= 1:
            raise CrossCoderError(
                f"warmup_steps={self.warmup_steps} must be >= 0 and decay_start={self.decay_start} in [0, 1]"
            )
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise CrossCoderError(f"betas={self.betas!r} must be two numbers in [0, 1)")
        if self.auxk_coeff < 0 or (self.k_aux is not None and self.k_aux < 1):
            raise CrossCoderError(f"auxk_coeff={self.auxk_coeff} must be >= 0 and k_aux={self.k_aux} >= 1 (or None)")
        if not 0.5 < self.relocate_relative_norm < 1:
            raise CrossCoderError(f"relocate_relative_norm={self.relocate_relative_norm} must be in (0.5, 1)")
        if not 0 <= self.threshold_decay < 1:
            raise CrossCoderError(f"threshold_decay={self.threshold_decay} must be in [0, 1)")
        if self.dtype not in _DTYPES:
            raise CrossCoderError(f"dtype={self.dtype!r} is not supported; use one of {', '.join(_DTYPES)}")

    def to_dict(self) -> dict:
        """Return the config as a JSON-serializable dict."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Return the config stored in `data` (unknown keys are ignored, missing ones take defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


MAX_DEAD_AFTER_TOKENS = 10_000_000
"""The automatic dead-latent window never exceeds this (the usual fixed value for long runs)."""

LEGACY_DEAD_AFTER_TOKENS = 10_000_000
"""What checkpoints written before the automatic rule store as `dead_after_tokens` (the old default)."""


def auto_dead_after_tokens(steps: int, batch_size: int) -> int:
    """Return the automatic dead-latent window: 5% of the run's tokens, at least 4 batches, at most 10M tokens.

    min(10_000_000, max(4 · batch_size, steps · batch_size // 20)): a latent that has not fired for a
    twentieth of the run is dead; a window of fewer than 4 batches would call latents dead that are
    merely rare.
    """
    return min(MAX_DEAD_AFTER_TOKENS, max(4 * batch_size, steps * batch_size // 20))


@dataclass
class TrainProgress:
    """What the progress callback receives at every logged step."""

    step: int
    """Optimizer steps done so far (1-based after the first step)."""

    total_steps: int
    """Steps the run will do in total."""

    tokens_seen: int
    """Tokens trained on so far (step × batch_size)."""

    metrics: dict[str, float]
    """Metrics of this step (see `train` for the keys)."""

    elapsed_s: float
    """Training time so far, including earlier runs this one resumed."""


@dataclass
class TrainResult:
    """The outcome of `train`."""

    crosscoder: CrossCoder
    """The trained (or, if stopped early, partly trained) crosscoder, in eval mode."""

    metrics: dict[str, float]
    """Metrics of the last logged step (empty if no step was logged)."""

    history: list[dict[str, float]]
    """Metrics of every logged step, including those of runs this one resumed."""

    out_dir: Path
    """Where the crosscoder, checkpoint and logs were written."""

    steps_done: int
    """Optimizer steps completed (equals `TrainConfig.steps` unless stopped early)."""

    resumed_from: int | None
    """The checkpoint step training continued from, or None for a fresh start."""


@dataclass
class StepOutput:
    """The loss of one training step and what the step needs besides the gradient."""

    loss: torch.Tensor
    """Scalar loss to backpropagate."""

    stats: dict[str, torch.Tensor]
    """Detached scalar statistics: mse, fvu_a, fvu_b, l0, and auxk_loss or l1_loss."""

    fired_F: torch.Tensor
    """Boolean [F]: which latents fired on this batch."""

    selection: LatentSelection | None = None
    """The BatchTopK selection (None for L1), used to update the inference threshold."""


# ---------------------------------------------------------------------------- losses


def training_loss(
    model: CrossCoder,
    x_a_BD: torch.Tensor,
    x_b_BD: torch.Tensor,
    dead_F: torch.Tensor,
    train_config: TrainConfig,
    ops: LatentOps = SPARSE,
    group: Dist | None = None,
) -> StepOutput:
    """Return the loss and statistics of one step on NORMALIZED activations.

    `dead_F` marks dead latents (for auxk). `ops` chooses the BatchTopK kernels: the sparse fast
    path, or `sparse_ops.DENSE_REFERENCE` to check it. With a data-parallel `group` the batch is
    this rank's part of the global batch; the selection and the auxk normalization are global, and
    the loss is scaled so that DDP's gradient average is the gradient of the global batch's loss.
    """
    if model.config.sparsity == "l1":
        return _l1_loss(model, x_a_BD, x_b_BD)
    batch = x_a_BD.shape[0]
    with torch.no_grad():
        pre_BF = model.encoder_products(x_a_BD, x_b_BD)  # without b_enc: selection and gather add it
        norm_a_F, norm_b_F = model.decoder_norms()
    selection = select_batch_topk(pre_BF, norm_a_F + norm_b_F, model.config.k, group, bias_F=model.b_enc.detach())
    values_N = _gather(ops, model, pre_BF, selection, x_a_BD, x_b_BD)
    x_hat_a_BD, x_hat_b_BD = _decode_active(ops, model, selection, values_N, batch)
    err_a_BD = x_hat_a_BD + model.b_dec_a - x_a_BD
    err_b_BD = x_hat_b_BD + model.b_dec_b - x_b_BD
    mse = err_a_BD.pow(2).sum(1).mean() + err_b_BD.pow(2).sum(1).mean()
    auxk = _auxk_loss(model, dead_F, train_config, x_a_BD, x_b_BD, err_a_BD.detach(), err_b_BD.detach(), group)
    fired_F = torch.zeros(model.dict_size, dtype=torch.bool, device=x_a_BD.device)
    fired_F[selection.latents_N] = True
    stats = _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD)
    stats["auxk_loss"] = auxk.detach()
    stats["l0"] = torch.tensor(selection.latents_N.numel() / batch)
    auxk_weight = train_config.auxk_coeff * (model.config.d_a + model.config.d_b)
    return StepOutput(loss=mse + auxk_weight * auxk, stats=stats, fired_F=fired_F, selection=selection)


def _l1_loss(model: CrossCoder, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor) -> StepOutput:
    """Return the dense L1-crosscoder step: reconstruction + decoder-norm-weighted L1 of the latents."""
    f_BF = model.pre_activations(x_a_BD, x_b_BD).relu()
    x_hat_a_BD, x_hat_b_BD = model.decode_normalized(f_BF)
    err_a_BD, err_b_BD = x_hat_a_BD - x_a_BD, x_hat_b_BD - x_b_BD
    mse = err_a_BD.pow(2).sum(1).mean() + err_b_BD.pow(2).sum(1).mean()
    norm_a_F, norm_b_F = model.decoder_norms()
    l1 = (f_BF * (norm_a_F + norm_b_F)).sum(1).mean()
    active_BF = f_BF.detach() > 0
    stats = _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD)
    stats["l1_loss"] = l1.detach()
    stats["l0"] = active_BF.sum(1).float().mean()
    return StepOutput(loss=mse + model.config.l1_coeff * l1, stats=stats, fired_F=active_BF.any(0))


def _gather(ops, model, pre_BF, selection: LatentSelection, x_a_BD, x_b_BD) -> torch.Tensor:
    """Return the selected pre-activations, differentiable w.r.t. the encoders."""
    return ops.gather_preacts(
        pre_BF, selection.rows_N, selection.latents_N, x_a_BD, model.W_enc_a, x_b_BD, model.W_enc_b, model.b_enc
    )


def _decode_active(ops, model: CrossCoder, selection: LatentSelection, values_N: torch.Tensor, batch: int):
    """Return (x̂_a, x̂_b) without decoder biases from active values; each model decodes only its own latents."""
    in_a = selection.latents_N < model.slice_a.stop
    in_b = selection.latents_N >= model.slice_b.start
    x_hat_a_BD = ops.decode(selection.rows_N[in_a], selection.latents_N[in_a], values_N[in_a], model.W_dec_a, batch)
    x_hat_b_BD = ops.decode(
        selection.rows_N[in_b], selection.latents_N[in_b] - model.slice_b.start, values_N[in_b], model.W_dec_b, batch
    )
    return x_hat_a_BD, x_hat_b_BD


def _auxk_loss(model: CrossCoder, dead_F, train_config, x_a_BD, x_b_BD, err_a_BD, err_b_BD, group=None) -> torch.Tensor:
    """Return the auxk loss: how well the top dead latents reconstruct the residual, relative to its variance.

    Zero when no latent is dead or `auxk_coeff` is 0. With `auxk_exclusive` off, dead exclusive
    latents are left out: one model's residual is mostly shared content not learned yet, so auxk
    can turn them into copies of one side of shared features; they are then filled by relocation
    only (see `relocate_one_sided`). Each token uses its `k_aux` largest dead pre-activations. With
    k_aux = d/2 the [B, n_dead] activation matrix is dense in practice, so it is computed with dense
    matmuls over the dead latents only (never over all F). With a data-parallel `group` the
    residual variance is the global batch's, and the loss is this rank's error times the world size
    over it (DDP averages gradients over ranks).
    """
    zero = x_a_BD.new_zeros(())
    if train_config.auxk_exclusive:
        dead_K = dead_F.nonzero().squeeze(1)
    else:
        dead_K = dead_F[model.slice_shared].nonzero().squeeze(1) + model.slice_shared.start
    if train_config.auxk_coeff == 0 or dead_K.numel() == 0:
        return zero
    # Sorted dead latents: the first n_in_a belong to model A, those from b_start on to model B.
    n_in_a = int((dead_K < model.slice_a.stop).sum())
    b_start = int((dead_K < model.slice_b.start).sum())
    dead_a_K, dead_b_K = dead_K[:n_in_a], dead_K[b_start:] - model.slice_b.start
    n_dead = dead_K.numel()
    pre_BK = (
        model.b_enc[dead_K]
        + nnf.pad(x_a_BD @ _rows(model.W_enc_a, dead_a_K).T, (0, n_dead - n_in_a))
        + nnf.pad(x_b_BD @ _rows(model.W_enc_b, dead_b_K).T, (b_start, 0))
    )
    k_aux = train_config.k_aux or default_k_aux(model.config.d_a, model.config.d_b)
    f_BK = pre_BK.relu() * select_dead_topk(pre_BK.detach(), k_aux)
    residual_a_BD, residual_b_BD = -err_a_BD, -err_b_BD
    e_hat_a_BD = f_BK[:, :n_in_a] @ _rows(model.W_dec_a, dead_a_K)
    e_hat_b_BD = f_BK[:, b_start:] @ _rows(model.W_dec_b, dead_b_K)
    error = (e_hat_a_BD - residual_a_BD).pow(2).sum() + (e_hat_b_BD - residual_b_BD).pow(2).sum()
    if group is None:
        variance = (residual_a_BD - residual_a_BD.mean(0)).pow(2).sum()
        variance = variance + (residual_b_BD - residual_b_BD.mean(0)).pow(2).sum()
    else:
        n_global = residual_a_BD.shape[0] * group.world
        mean_a_D = group.sum(residual_a_BD.sum(0)) / n_global
        mean_b_D = group.sum(residual_b_BD.sum(0)) / n_global
        variance = (residual_a_BD - mean_a_D).pow(2).sum() + (residual_b_BD - mean_b_D).pow(2).sum()
        variance = group.sum(variance) / group.world
    return error / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def _rows(weight_LD: torch.Tensor, rows_K: torch.Tensor) -> torch.Tensor:
    """Return `weight_LD[rows_K]` with a sparse gradient: added into the weight's dense gradient row by row,
    where plain indexing would build and add a full-size zero-filled gradient."""
    return nnf.embedding(rows_K, weight_LD, sparse=True)


def relocate_one_sided(
    model: CrossCoder,
    optimizer: torch.optim.Optimizer,
    tokens_since_fired_F: torch.Tensor,
    train_config: TrainConfig,
    step: int,
) -> int:
    """Move alive shared latents that write to one model only into dead exclusive latents of it; return how many.

    The most one-sided latents move first, as many as there are dead latents in the block. A moved
    latent keeps its Adam moments and is marked as just fired; the vacated shared latent is
    re-drawn (seeded by `train_config.seed` and `step`), loses its first Adam moment and is marked
    dead, so auxk revives it. A no-op for a standard crosscoder.
    """
    dead_after = train_config.dead_after()
    dead_F = tokens_since_fired_F >= dead_after
    with torch.no_grad():
        norm_a_F, norm_b_F = model.decoder_norms()
        relative_F = norm_a_F / (norm_a_F + norm_b_F).clamp_min(1e-12)
    shared_S = torch.arange(model.slice_shared.start, model.slice_shared.stop, device=dead_F.device)
    alive_S = shared_S[~dead_F[shared_S]]
    bound = train_config.relocate_relative_norm
    moved = 0
    blocks = ((model.slice_a_exclusive, relative_F > bound), (model.slice_b_exclusive, relative_F < 1 - bound))
    for block, one_sided in blocks:
        slots_N = torch.arange(block.start, block.stop, device=dead_F.device)
        slots_N = slots_N[dead_F[slots_N]]
        candidates_N = alive_S[one_sided[alive_S]]
        order = (relative_F[candidates_N] - 0.5).abs().argsort(descending=True)
        count = min(slots_N.numel(), candidates_N.numel())
        if count == 0:
            continue
        shared_N, exclusive_N = candidates_N[order[:count]], slots_N[:count]
        generator = torch.Generator().manual_seed(train_config.seed * 1_000_003 + step)
        model.move_to_exclusive(shared_N, exclusive_N, generator)
        _move_adam_rows(model, optimizer, shared_N, exclusive_N)
        tokens_since_fired_F[exclusive_N] = 0
        tokens_since_fired_F[shared_N] = dead_after
        moved += count
    return moved


def _move_adam_rows(model: CrossCoder, optimizer, shared_N: torch.Tensor, exclusive_N: torch.Tensor) -> None:
    """Mirror `CrossCoder.move_to_exclusive` in Adam's moments: copy the moved rows, zero the first moment of re-drawn ones."""
    offset_b = model.slice_b.start
    if bool(exclusive_N[0] < model.n_a):
        moved = ((model.W_enc_a, 0), (model.W_dec_a, 0), (model.b_enc, 0))
    else:
        moved = ((model.W_enc_b, offset_b), (model.W_dec_b, offset_b), (model.b_enc, 0))
    for param, offset in moved:
        for moments in optimizer.state.get(param, {}).values():
            if moments.dim() > 0:  # skip the scalar step count
                moments[exclusive_N - offset] = moments[shared_N - offset]
    redrawn = ((model.W_enc_a, 0), (model.W_dec_a, 0), (model.W_enc_b, offset_b), (model.W_dec_b, offset_b),
               (model.b_enc, 0))  # fmt: skip
    for param, offset in redrawn:
        state = optimizer.state.get(param, {})
        if "exp_avg" in state:
            state["exp_avg"][shared_N - offset] = 0.0


def _reconstruction_stats(mse, err_a_BD, err_b_BD, x_a_BD, x_b_BD) -> dict[str, torch.Tensor]:
    """Return detached mse and per-model fraction of variance unexplained on this batch."""
    with torch.no_grad():
        var_a = (x_a_BD - x_a_BD.mean(0)).pow(2).sum().clamp_min(1e-12)
        var_b = (x_b_BD - x_b_BD.mean(0)).pow(2).sum().clamp_min(1e-12)
        return {"mse": mse.detach(), "fvu_a": err_a_BD.pow(2).sum() / var_a, "fvu_b": err_b_BD.pow(2).sum() / var_b}


def learning_rate(step: int, train_config: TrainConfig, base_lr: float) -> float:
    """Return the learning rate of 0-based `step`: linear warmup, constant, then linear decay to 0."""
    factor = 1.0
    if step < train_config.warmup_steps:
        factor = (step + 1) / train_config.warmup_steps
    decay_from = int(train_config.decay_start * train_config.steps)
    if step >= decay_from:
        factor = min(factor, (train_config.steps - step) / max(1, train_config.steps - decay_from))
    return base_lr * factor


# ---------------------------------------------------------------------------- training loop


def train(
    config: CrossCoderConfig,
    train_config: TrainConfig,
    source: BatchSource,
    out_dir: str | os.PathLike,
    progress: Callable[[TrainProgress], None] | None = None,
    resume: bool = True,
    show_tqdm: bool = False,
    should_stop: Callable[[], bool] | None = None,
    group: Dist | None = None,
) -> TrainResult:
    """Train a crosscoder on `source` and return the `TrainResult`; files go to `out_dir`.

    Metrics per logged step: loss, mse, fvu_a, fvu_b, l0, auxk_loss (BatchTopK) or l1_loss (L1),
    threshold (BatchTopK), dead_a_exclusive, dead_shared, dead_b_exclusive (the fraction of each block
    that has not fired within the last `train_config.dead_after()` tokens), never_fired (the fraction
    of all latents that has not fired once this run), lr.

    With `resume`, an existing `out_dir/checkpoint` of the same run is continued. When
    `should_stop()` returns True (checked after each step), a checkpoint is written and the
    partly trained result is returned; calling `train` again resumes. On KeyboardInterrupt a
    checkpoint of the last completed step is written before the interrupt propagates.

    With a data-parallel `group` (`crossdiff_core.distributed.from_environment()` under torchrun),
    `source` is this rank's own share of the data (`PairedActivationStore.for_rank`), the model is
    wrapped in DDP, `batch_size` is the global batch, and only rank 0 writes files; see
    `crossdiff_core.distributed`.
    """
    train_config.validate()
    train_config = dataclasses.replace(train_config)  # resuming a legacy checkpoint may adjust it (_load_checkpoint)
    if group is not None:
        source = RankSource(source, group)
    config = fit_to_source(config, source, mean_sample(source, train_config, group))
    if train_config.device:
        device = torch.device(train_config.device)
    elif group is not None:
        device = group.device()
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _DTYPES[train_config.dtype]
    out_dir = Path(out_dir)
    main = group is None or group.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)

    model = CrossCoder(config, seed=train_config.seed).to(device=device, dtype=dtype).train()
    step_fn = _StepModule(model, train_config, group)
    if group is not None:
        step_fn = DistributedDataParallel(
            step_fn, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    base_lr = train_config.lr or 2e-4 / math.sqrt(config.dict_size / 2**14)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=base_lr, betas=train_config.betas, fused=device.type in ("cpu", "cuda")
    )
    run = _RunState(tokens_since_fired_F=torch.zeros(config.dict_size, dtype=torch.int64, device=device))
    resumed_from = None
    if resume:
        checkpoint_dir = _existing_checkpoint(out_dir)
        if checkpoint_dir is not None:
            run = _load_checkpoint(checkpoint_dir, model, optimizer, config, train_config, device)
            resumed_from = run.step
    if resumed_from is None:
        _init_decoder_bias(model, source, train_config, device, dtype, group)
    if main:
        _remove_partial_checkpoints(out_dir)
    dead_after = train_config.dead_after()

    session_start = time.perf_counter()
    elapsed_before = run.elapsed_s

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - session_start

    def checkpoint() -> None:
        run.elapsed_s = elapsed()
        if main:
            _save_checkpoint(out_dir, model, optimizer, run, config, train_config)
        if group is not None:
            group.barrier()

    batches = source.iter_batches(train_config.batch_size, train_config.seed, start_batch=run.step)
    bar = tqdm(total=train_config.steps, initial=run.step, disable=not (show_tqdm and main), desc="training crosscoder")
    applying = False
    stopped = False
    try:
        while run.step < train_config.steps:
            x_a_BD, x_b_BD = next(batches)
            x_a_BD, x_b_BD = model.normalize(x_a_BD.to(device, dtype), x_b_BD.to(device, dtype))
            lr = learning_rate(run.step, train_config, base_lr)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            dead_F = run.tokens_since_fired_F >= dead_after
            out = step_fn(x_a_BD, x_b_BD, dead_F)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()

            applying = True
            optimizer.step()
            if out.selection is not None:
                new_threshold = updated_threshold(
                    model.threshold, out.selection, train_config.threshold_decay, first=run.step == 0, group=group
                )
                model.threshold.copy_(new_threshold)
            fired_F = out.fired_F if group is None else group.max(out.fired_F.to(torch.uint8)).bool()
            run.tokens_since_fired_F += x_a_BD.shape[0] * (group.world if group is not None else 1)
            run.tokens_since_fired_F[fired_F] = 0
            if (run.step + 1) % train_config.relocate_every == 0:
                relocate_one_sided(model, optimizer, run.tokens_since_fired_F, train_config, run.step + 1)
            run.step += 1
            applying = False

            bar.update(1)
            if run.step % train_config.log_every == 0 or run.step == train_config.steps:
                metrics = _metrics(model, out, run, train_config, lr, group)
                run.history.append(metrics)
                bar.set_postfix(
                    loss=f"{metrics['loss']:.4g}", fvu_a=f"{metrics['fvu_a']:.3f}", fvu_b=f"{metrics['fvu_b']:.3f}"
                )
                if progress is not None:
                    progress(TrainProgress(run.step, train_config.steps, run.step * train_config.batch_size,
                                           metrics, elapsed()))  # fmt: skip
            if run.step % train_config.checkpoint_every == 0 or run.step == train_config.steps:
                checkpoint()
            stop = should_stop is not None and run.step < train_config.steps and should_stop()
            if group is not None and run.step < train_config.steps:
                stop = group.any(stop)
            if stop:
                checkpoint()
                stopped = True
                break
    except KeyboardInterrupt:
        if not applying and group is None:
            checkpoint()
        elif not applying and main:
            run.elapsed_s = elapsed()
            _save_checkpoint(out_dir, model, optimizer, run, config, train_config)
        raise
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise _out_of_memory_error(error, config, train_config, device, out_dir) from error
    finally:
        bar.close()

    model.eval()
    if main:
        if not stopped:
            model.save_pretrained(out_dir)
        _write_logs(out_dir, run, config, train_config, resumed_from, finished=not stopped, elapsed_s=elapsed())
    if group is not None:
        group.barrier()
    return TrainResult(
        crosscoder=model,
        metrics=dict(run.history[-1]) if run.history else {},
        history=[dict(m) for m in run.history],
        out_dir=out_dir,
        steps_done=run.step,
        resumed_from=resumed_from,
    )


@torch.no_grad()
def _init_decoder_bias(
    model: CrossCoder, source: BatchSource, train_config: TrainConfig, device, dtype, group: Dist | None = None
) -> None:
    """Set each model's decoder bias to the mean of one (normalized) batch (the global batch, with a `group`).

    Residual streams carry a large mean component (for Gemma-3 about 19 times the variance around
    it); starting the biases there spares the first hundreds of steps from learning it.
    """
    x_a_BD, x_b_BD = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
    x_a_BD, x_b_BD = model.normalize(x_a_BD.to(device, dtype), x_b_BD.to(device, dtype))
    mean_a_D, mean_b_D = x_a_BD.mean(0), x_b_BD.mean(0)
    if group is not None:
        mean_a_D, mean_b_D = group.mean(mean_a_D), group.mean(mean_b_D)
    model.b_dec_a.copy_(mean_a_D)
    model.b_dec_b.copy_(mean_b_D)


def mean_sample(
    source: BatchSource, train_config: TrainConfig, group: Dist | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each model's mean activation `(μ_a [d_a], μ_b [d_b])` over one training-size batch (fixed seed).

    With a data-parallel `group`, `source` yields this rank's part and the mean is the global batch's.
    """
    x_a_BD, x_b_BD = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
    means = x_a_BD.double().mean(0), x_b_BD.double().mean(0)
    if group is not None:
        device = group.collective_device()
        means = tuple(group.mean(m.to(device)).cpu() for m in means)
    return means


def fit_to_source(
    config: CrossCoderConfig, source: BatchSource, means: tuple[torch.Tensor, torch.Tensor] | None = None
) -> CrossCoderConfig:
    """Return a copy of `config` with normalization scales and pair metadata filled from `source` where None.

    scale_m = sqrt(d_m / (E‖x_m‖² − ‖μ_m‖²)): normalized activations vary around their mean with a
    summed variance of d_m. `means` are the per-model mean activations (`mean_sample`); without them
    the mean is taken as 0 (scale by the raw second moment).
    """
    if (config.d_a, config.d_b) != (source.d_a, source.d_b):
        raise CrossCoderError(
            f"the crosscoder expects widths d_a={config.d_a}, d_b={config.d_b} but the activations have "
            f"{source.d_a} and {source.d_b}; set d_a/d_b from the activation store"
        )
    updates: dict = {}
    if config.scale_a is None or config.scale_b is None:
        sq_norms_of_means = (0.0, 0.0) if means is None else tuple(float(m.pow(2).sum()) for m in means)
        for side, d, mean_sq, sq_norm_of_mean in zip("ab", (config.d_a, config.d_b), source.mean_sq_norms(),
                                                     sq_norms_of_means, strict=True):  # fmt: skip
            if not (mean_sq > 0 and math.isfinite(mean_sq)):
                raise CrossCoderError(
                    f"model {side.upper()}'s activations have mean squared norm {mean_sq}; they are all zero "
                    "or contain NaN/inf: rebuild the activation store"
                )
            variance = mean_sq - sq_norm_of_mean
            if not variance > 1e-6 * mean_sq:
                raise CrossCoderError(
                    f"model {side.upper()}'s activations hardly vary around their mean (variance {variance:.3g}, "
                    f"mean squared norm {mean_sq:.3g}): every token looks the same; check the read layer and corpus"
                )
            if getattr(config, f"scale_{side}") is None:
                updates[f"scale_{side}"] = math.sqrt(d / variance)
    info = source.pair_info()
    for key in PAIR_INFO_KEYS:
        if getattr(config, key) is None and info.get(key) is not None:
            updates[key] = info[key]
    return dataclasses.replace(config, **updates)


class _StepModule(torch.nn.Module):
    """One training step's loss as a module, so that DDP can wrap it (DDP reduces gradients of a module's forward)."""

    def __init__(self, crosscoder: CrossCoder, train_config: TrainConfig, group: Dist | None):
        super().__init__()
        self.crosscoder = crosscoder
        self.train_config = train_config
        self.group = group

    def forward(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor, dead_F: torch.Tensor) -> StepOutput:
        return training_loss(self.crosscoder, x_a_BD, x_b_BD, dead_F, self.train_config, group=self.group)


@dataclass
class _RunState:
    """Mutable training state beyond the model and optimizer."""

    tokens_since_fired_F: torch.Tensor
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0


def _metrics(
    model: CrossCoder, out: StepOutput, run: _RunState, train_config: TrainConfig, lr: float, group: Dist | None = None
) -> dict:
    """Return the logged metrics of a step as plain floats (with a `group`, the mean over ranks)."""
    names = ["loss", *out.stats]
    values = torch.stack([out.loss.detach().float(), *(v.detach().float().to(out.loss.device) for v in out.stats.values())])
    if group is not None:
        values = group.mean(values)
    metrics = {"step": run.step}
    metrics.update({name: float(value) for name, value in zip(names, values.tolist(), strict=True)})
    if model.config.sparsity == "batchtopk":
        metrics["threshold"] = float(model.threshold)
    dead_F = run.tokens_since_fired_F >= train_config.dead_after()
    for name, block in (("dead_a_exclusive", model.slice_a_exclusive), ("dead_shared", model.slice_shared),
                        ("dead_b_exclusive", model.slice_b_exclusive)):  # fmt: skip
        metrics[name] = float(dead_F[block].float().mean()) if block.stop > block.start else 0.0
    # Counters grow by every step's tokens and reset when a latent fires (relocation sets a re-drawn
    # latent to the window, not to the run's length): at the run's length, the latent never fired.
    metrics["never_fired"] = float((run.tokens_since_fired_F >= run.step * train_config.batch_size).float().mean())
    metrics["lr"] = lr
    return metrics


# ---------------------------------------------------------------------------- checkpoints


def _existing_checkpoint(out_dir: Path) -> Path | None:
    """Return the newest complete checkpoint folder in `out_dir`, or None."""
    for name in (CHECKPOINT_DIR, _PREVIOUS_CHECKPOINT_DIR):
        if (out_dir / name).is_dir():
            return out_dir / name
    return None


def _remove_partial_checkpoints(out_dir: Path) -> None:
    """Delete half-written checkpoint folders left by a crash."""
    for partial in out_dir.glob(_PARTIAL_CHECKPOINT_PREFIX + "*"):
        shutil.rmtree(partial, ignore_errors=True)


def _save_checkpoint(out_dir: Path, model, optimizer, run: _RunState, config, train_config: TrainConfig) -> None:
    """Write the training state to `out_dir/checkpoint/` atomically; the old one stays until the new is complete."""
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"adam.{name}.{key}"] = value
    tensors["stats.tokens_since_fired"] = run.tokens_since_fired_F
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "step": run.step,
        "tokens_seen": run.step * train_config.batch_size,
        "elapsed_s": run.elapsed_s,
        "crosscoder_config": config.to_dict(),
        "train_config": train_config.to_dict(),
        "history": run.history,
    }
    final, previous = out_dir / CHECKPOINT_DIR, out_dir / _PREVIOUS_CHECKPOINT_DIR
    partial = None
    try:
        partial = Path(tempfile.mkdtemp(prefix=_PARTIAL_CHECKPOINT_PREFIX, dir=out_dir))
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(partial / CHECKPOINT_STATE_FILE))
        usual_permissions(partial, partial / CHECKPOINT_STATE_FILE)
        meta["state_sha256"] = file_sha256(partial / CHECKPOINT_STATE_FILE)
        (partial / CHECKPOINT_META_FILE).write_text(json.dumps(meta, indent=1))
        for name in (CHECKPOINT_STATE_FILE, CHECKPOINT_META_FILE):
            with open(partial / name, "rb") as handle:
                os.fsync(handle.fileno())
    except (OSError, SafetensorError) as error:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)
        if not is_disk_full(error):
            raise
        kept = f"the last checkpoint in {final} is intact" if final.is_dir() else "no checkpoint was written yet"
        raise disk_full_error(
            final, error, f"{kept}; free space on that disk and run the same command again to resume from it"
        ) from error
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        os.replace(final, previous)
    os.replace(partial, final)
    shutil.rmtree(previous, ignore_errors=True)


def _load_checkpoint(checkpoint_dir: Path, model, optimizer, config, train_config: TrainConfig, device) -> _RunState:
    """Restore model, optimizer and run state from `checkpoint_dir`; return the run state.

    Raises `CheckpointError` naming the file when it is corrupt, or saying what differs when the
    checkpoint belongs to another run.
    """
    meta_file, state_file = checkpoint_dir / CHECKPOINT_META_FILE, checkpoint_dir / CHECKPOINT_STATE_FILE
    try:
        meta = json.loads(meta_file.read_text())
        step, history = int(meta["step"]), list(meta["history"])
        saved_config, saved_train = meta["crosscoder_config"], meta["train_config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{meta_file} is missing or corrupt ({error}); delete {checkpoint_dir} to start over, or pass resume=False"
        ) from error
    if train_config.dead_after_tokens is None and saved_train.get("dead_after_tokens") == LEGACY_DEAD_AFTER_TOKENS:
        # Written before the automatic window, when 10M was the default: finish the run as it started.
        train_config.dead_after_tokens = LEGACY_DEAD_AFTER_TOKENS
    _check_same_run(checkpoint_dir, saved_config, config.to_dict(), saved_train, train_config.to_dict())
    try:
        if meta.get("state_sha256") and file_sha256(state_file) != meta["state_sha256"]:
            raise ValueError(f"its SHA-256 differs from the one {CHECKPOINT_META_FILE} records")
        tensors = load_file(str(state_file))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{state_file} is missing, corrupt or truncated ({error}); delete {checkpoint_dir} to start over, "
            "or pass resume=False"
        ) from error
    try:
        state = {name: tensors.pop(f"model.{name}") for name in model.state_dict()}
        model.load_state_dict(state)
        names = [name for name, _ in model.named_parameters()]
        adam_state = {}
        for index, name in enumerate(names):
            entries = {
                key.rsplit(".", 1)[1]: tensors.pop(key) for key in list(tensors) if key.startswith(f"adam.{name}.")
            }
            if entries:
                adam_state[index] = entries
        optimizer.load_state_dict({"state": adam_state, "param_groups": optimizer.state_dict()["param_groups"]})
        tokens_since_fired_F = tensors.pop("stats.tokens_since_fired").to(device)
        if tokens_since_fired_F.shape != (model.dict_size,):
            raise ValueError(f"firing statistics have shape {tuple(tokens_since_fired_F.shape)}")
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"{state_file} does not hold a complete training state for this crosscoder ({error}); "
            f"delete {checkpoint_dir} to start over, or pass resume=False"
        ) from error
    return _RunState(
        tokens_since_fired_F=tokens_since_fired_F, step=step, history=history, elapsed_s=float(meta.get("elapsed_s", 0))
    )


def _check_same_run(checkpoint_dir: Path, saved_config: dict, config: dict, saved_train: dict, train: dict) -> None:
    """Raise `CheckpointError` listing the differences if the checkpoint was written by a different run."""
    differences = [
        f"{key}: checkpoint has {saved_config.get(key)!r}, now {value!r}"
        for key, value in config.items()
        if saved_config.get(key) != value
    ]
    differences += [
        f"{key}: checkpoint has {saved_train.get(key)!r}, now {value!r}"
        for key, value in train.items()
        if key not in _RESUMABLE_CHANGES and saved_train.get(key) != value
    ]
    if differences:
        raise CheckpointError(
            f"{checkpoint_dir} was written by a different training run ({'; '.join(differences)}); "
            "use a new out_dir, or pass resume=False to start over"
        )


def _write_logs(out_dir: Path, run: _RunState, config, train_config, resumed_from, finished: bool, elapsed_s: float):
    """Write `metrics.jsonl` (one line per logged step) and the `training.json` summary."""
    write_text_atomically(out_dir / METRICS_FILE, "".join(json.dumps(metrics) + "\n" for metrics in run.history))
    summary = {
        "finished": finished,
        "steps_done": run.step,
        "total_steps": train_config.steps,
        "tokens_seen": run.step * train_config.batch_size,
        "resumed_from": resumed_from,
        "elapsed_s": elapsed_s,
        "final_metrics": run.history[-1] if run.history else {},
        "crosscoder_config": config.to_dict(),
        "train_config": train_config.to_dict(),
        "dead_after_tokens_used": train_config.dead_after(),
    }
    write_text_atomically(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def _out_of_memory_error(error: BaseException, config, train_config: TrainConfig, device, out_dir: Path) -> NotEnoughMemoryError:
    """Return the `NotEnoughMemoryError` for an allocation failure during training, listing settings that need less."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    on_gpu = torch.device(device).type == "cuda"
    options = [
        f"a smaller --batch-size (now {train_config.batch_size}; the step holds batch_size x dict_size activations)",
        f"a smaller --dict-size (now {config.dict_size})",
    ]
    if on_gpu:
        options.append("training on the CPU (hide the GPU with CUDA_VISIBLE_DEVICES=, or TrainConfig(device='cpu'))")
    else:
        options.append("closing other programs that use memory, or a machine with more RAM or a GPU")
    options.append("4-bit models (--quant nf4) when train also harvests (--model-a/--model-b)")
    return NotEnoughMemoryError(
        f"out of memory while training on {device} ({reason}); try {'; '.join(options)}. Changing batch or dict "
        f"size starts a new run: use a new --out folder or --no-resume (the checkpoint in {out_dir} belongs to these settings)"
    )
