"""Train an N-model crosscoder (`MultiCrossCoder`, DFC or standard) on a stream of N-model activations.

`train_multi(config, train_config, source)` fits each model's normalization scale (summed variance
d_m around its mean, `normalization.fitted_scale`), starts the decoder biases at the means, and runs
Adam with the two-model schedule (`loop.learning_rate`) on

    loss = Σ_m mean_tokens ‖x̂_m − x_m‖²  +  auxk_coeff · Σ_m d_m · auxk loss

with BatchTopK over the scores `relu(pre) · Σ_m ‖d_m‖` (`multi_training_loss`: gradients through the
selected latents only). auxk revives dead shared latents (as `auxk_exclusive=False`
does for two models). Every `relocate_every` steps an alive shared latent that writes to one model
only (against every other model, its relative decoder norm is beyond `relocate_relative_norm`) moves
into a dead latent of model m's exclusive block, as `relocation.relocate_one_sided` does for two.
A source yields one batch per step as a tuple of N `[B, d_m]` tensors (`iter_batches(batch_size,
seed, start_batch)`) and knows its widths `d` and `mean_sq_norms()`. Without an `out_dir` nothing is
written and a stopped run (`should_stop`) returns its partly trained crosscoder; with one, checkpoints,
resumption, `metrics.jsonl`, `training.json` and the finished crosscoder work as in the two-model
`loop.train` (`checkpoint`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from crossdiff_core.crosscoder.batchtopk import LatentSelection, select_batch_topk, select_dead_topk, updated_threshold
from crossdiff_core.crosscoder.multi import MultiCrossCoder, MultiCrossCoderConfig
from crossdiff_core.crosscoder.sparse_ops import sparse_decode
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.training.checkpoint import (
    _remove_partial_checkpoints,
    _save_checkpoint,
    _start_run,
    _write_results,
)
from crossdiff_core.training.config import TrainConfig, TrainProgress
from crossdiff_core.training.loop import learning_rate
from crossdiff_core.training.normalization import fitted_scale


class MultiSource(Protocol):
    """What `train_multi` reads: N models' activations, batch by batch."""

    d: list[int]

    def mean_sq_norms(self) -> list[float]: ...

    def iter_batches(self, batch_size: int, seed: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, ...]]: ...


@dataclass
class MultiStepOutput:
    """The loss of one training step and what the step needs besides the gradient."""

    loss: torch.Tensor
    """Scalar loss to backpropagate."""

    stats: dict[str, float]
    """mse, fvu (all models pooled), l0 and auxk_loss of the step, as floats."""

    fired_F: torch.Tensor
    """Boolean [F]: which latents fired on this batch."""

    selection: LatentSelection
    """The BatchTopK selection, used to update the inference threshold."""


@dataclass
class MultiTrainResult:
    """The outcome of `train_multi`."""

    crosscoder: MultiCrossCoder
    """The trained (or, if stopped early, partly trained) crosscoder, in eval mode."""

    history: list[dict[str, float]]
    """Metrics of every logged step (step, loss, mse, fvu, l0, auxk_loss, relocated, lr), including those of runs
    this one resumed."""

    steps_done: int
    """Optimizer steps completed (equals `TrainConfig.steps` unless stopped early)."""

    seconds: float
    """Wall time of this call's steps (normalization fitting and earlier runs it resumed excluded)."""

    resumed_from: int | None
    """The checkpoint step training continued from, or None for a fresh start (always None without `out_dir`)."""


def fit_scales(config: MultiCrossCoderConfig, source: MultiSource, train_config: TrainConfig) -> MultiCrossCoderConfig:
    """Return `config` with each model's normalization scale fitted on `source` (where `scales` is None).

    The means come from one training-size batch (seed + 1), the mean squared norms from the source.
    """
    if list(source.d) != list(config.d):
        raise CrossCoderError(
            f"the crosscoder expects widths d={config.d} but the activations have {list(source.d)}; set d from the source"
        )
    if config.scales is not None:
        return config
    batch = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
    scales = [
        fitted_scale(f"model {m}", d, mean_sq, float(x_BD.double().mean(0).pow(2).sum()))
        for m, (d, mean_sq, x_BD) in enumerate(zip(config.d, source.mean_sq_norms(), batch, strict=True))
    ]
    return dataclasses.replace(config, scales=scales)


def multi_training_loss(
    model: MultiCrossCoder, xs: list[torch.Tensor], dead_F: torch.Tensor, train_config: TrainConfig
) -> MultiStepOutput:
    """Return the loss and statistics of one step on NORMALIZED activations (`dead_F`: dead latents, for auxk).

    The dense encoder products run without autograd (they only choose the latents); the gradient flows
    through the N ≈ k·B selected (token, latent) pairs: their pre-activations are recomputed as row dot
    products, and each model decodes its own pairs with `sparse_ops.sparse_decode`.
    """
    batch = xs[0].shape[0]
    with torch.no_grad():
        pre_BF = model.pre_activations(xs)
        norm_F = model.decoder_norms().sum(0)
    selection = select_batch_topk(pre_BF, norm_F, model.config.k)
    rows_N, latents_N = selection.rows_N, selection.latents_N
    values_N = model.b_enc[latents_N]
    owned = []
    for m, (x_BD, W_enc) in enumerate(zip(xs, model.W_enc, strict=True)):
        weight_row_N = model.weight_rows(m).to(latents_N.device)[latents_N]
        has_N = weight_row_N >= 0
        owned.append((has_N, weight_row_N[has_N]))
        dots = (x_BD[rows_N[has_N]] * W_enc[weight_row_N[has_N]]).sum(1)
        values_N = values_N.index_add(0, has_N.nonzero().squeeze(1), dots)
    errors = []
    for (has_N, weight_row_N), x_BD, W_dec, b_dec in zip(owned, xs, model.W_dec, model.b_dec, strict=True):
        x_hat_BD = sparse_decode(rows_N[has_N], weight_row_N, values_N[has_N], W_dec, batch)
        errors.append(x_hat_BD + b_dec - x_BD)
    mse = sum(err_BD.pow(2).sum(1).mean() for err_BD in errors)
    auxk = _auxk_loss(model, xs, dead_F, train_config, [err_BD.detach() for err_BD in errors])
    with torch.no_grad():
        variance = sum(float((x_BD - x_BD.mean(0)).pow(2).sum()) for x_BD in xs)
        fvu = sum(float(err_BD.pow(2).sum()) for err_BD in errors) / max(variance, 1e-12)
    fired_F = torch.zeros(model.dict_size, dtype=torch.bool, device=pre_BF.device)
    fired_F[latents_N] = True
    stats = {"mse": float(mse.detach()), "fvu": fvu, "l0": latents_N.numel() / batch, "auxk_loss": float(auxk.detach())}
    loss = mse + train_config.auxk_coeff * sum(model.config.d) * auxk
    return MultiStepOutput(loss=loss, stats=stats, fired_F=fired_F, selection=selection)


def _auxk_loss(
    model: MultiCrossCoder, xs: list[torch.Tensor], dead_F: torch.Tensor, train_config: TrainConfig, errors: list
) -> torch.Tensor:
    """Return how well each token's `k_aux` top dead SHARED latents reconstruct the residual, relative to its variance.

    Zero when no shared latent is dead or `auxk_coeff` is 0. Shared latents come first, so a dead
    shared latent's index is its weight row in every model; only their columns are computed.
    """
    dead_K = dead_F[model.slice_shared].nonzero().squeeze(1)
    if train_config.auxk_coeff == 0 or dead_K.numel() == 0:
        return xs[0].new_zeros(())
    pre_BK = model.b_enc[dead_K]
    for x_BD, W_enc in zip(xs, model.W_enc, strict=True):
        pre_BK = pre_BK + x_BD @ W_enc[dead_K].T
    k_aux = train_config.k_aux or max(model.config.d) // 2
    f_BK = pre_BK.relu() * select_dead_topk(pre_BK.detach(), k_aux)
    error = variance = xs[0].new_zeros(())
    for W_dec, err_BD in zip(model.W_dec, errors, strict=True):
        error = error + (f_BK @ W_dec[dead_K] + err_BD).pow(2).sum()  # the residual is −err
        variance = variance + (err_BD - err_BD.mean(0)).pow(2).sum()
    return error / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def relocate_multi(
    model: MultiCrossCoder,
    optimizer: torch.optim.Optimizer,
    tokens_since_fired_F: torch.Tensor,
    train_config: TrainConfig,
    step: int,
) -> int:
    """Move alive shared latents that write to one model only into dead exclusive latents of it; return how many.

    A shared latent writes to model m only when, against EACH other model n, its relative decoder norm
    ‖d_m‖ / (‖d_m‖ + ‖d_n‖) is above `relocate_relative_norm` (the two-model rule, pair by pair): Adam
    leaves every unused decoder row a small norm, and against their sum over N − 1 models a one-model
    latent would look less one-sided the more models there are. The most one-sided move first, as many
    as model m's block has dead latents. A moved latent keeps its Adam moments and is marked as just
    fired; the vacated shared latent is re-drawn (seeded by `train_config.seed` and `step`), loses its
    first Adam moment and is marked dead, so auxk revives it.
    """
    dead_after = train_config.dead_after()
    dead_F = tokens_since_fired_F >= dead_after
    with torch.no_grad():
        norms_NF = model.decoder_norms()
    shared_S = torch.arange(model.n_shared, device=dead_F.device)
    alive_S = shared_S[~dead_F[shared_S]]
    moved = 0
    for m in range(model.n_models):
        block = model.slice_exclusive(m)
        slots_N = torch.arange(block.start, block.stop, device=dead_F.device)
        slots_N = slots_N[dead_F[slots_N]]
        others_OF = norms_NF[torch.arange(model.n_models) != m]
        elsewhere_F = (others_OF / (others_OF + norms_NF[m]).clamp_min(1e-12)).amax(0)
        candidates_N = alive_S[elsewhere_F[alive_S] < 1 - train_config.relocate_relative_norm]
        count = min(slots_N.numel(), candidates_N.numel())
        if count == 0:
            continue
        order = elsewhere_F[candidates_N].argsort()
        shared_N, exclusive_N = candidates_N[order[:count]], slots_N[:count]
        generator = torch.Generator().manual_seed(train_config.seed * 1_000_003 + step * 64 + m)
        model.move_to_exclusive(m, shared_N, exclusive_N, generator)
        _move_adam_rows(model, optimizer, m, shared_N, exclusive_N)
        tokens_since_fired_F[exclusive_N] = 0
        tokens_since_fired_F[shared_N] = dead_after
        moved += count
    return moved


def _move_adam_rows(model: MultiCrossCoder, optimizer, m: int, shared_N: torch.Tensor, exclusive_N: torch.Tensor):
    """Mirror `MultiCrossCoder.move_to_exclusive` in Adam's moments: copy the moved rows, zero the first moment of re-drawn ones."""
    rows_N = model.exclusive_row(m, exclusive_N)
    for param, targets in ((model.W_enc[m], rows_N), (model.W_dec[m], rows_N), (model.b_enc, exclusive_N)):
        for moments in optimizer.state.get(param, {}).values():
            if moments.dim() > 0:  # skip the scalar step count
                moments[targets] = moments[shared_N]
    for param in (*model.W_enc, *model.W_dec, model.b_enc):
        state = optimizer.state.get(param, {})
        if "exp_avg" in state:
            state["exp_avg"][shared_N] = 0.0


def train_multi(
    config: MultiCrossCoderConfig,
    train_config: TrainConfig,
    source: MultiSource,
    out_dir: str | os.PathLike | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    resume: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> MultiTrainResult:
    """Train an N-model crosscoder on `source` and return the `MultiTrainResult`.

    Reads from `train_config`: steps, batch_size, lr (None: 2e-4 / sqrt(dict_size / 16384)), betas,
    warmup_steps, decay_start, auxk_coeff, k_aux, dead_after(), relocate_every, relocate_relative_norm,
    threshold_decay, seed, log_every, checkpoint_every (with `out_dir`), device (None: CUDA when
    available) and dtype. `progress` receives a `TrainProgress` at every logged step. `should_stop()` is
    asked after each step; when it returns True the partly trained crosscoder is returned.

    Without `out_dir` nothing is written. With it, as in `loop.train`: a checkpoint every
    `checkpoint_every` steps, at the end and when stopped (and of the last completed step on
    KeyboardInterrupt, which then propagates); with `resume` an existing checkpoint of the same run
    is continued (another run's is refused with a `CheckpointError`); at the end `save_pretrained(out_dir)`
    (`MultiCrossCoder.from_pretrained` loads it), `metrics.jsonl` and `training.json`.
    """
    train_config.validate()
    train_config = dataclasses.replace(train_config)  # resuming a legacy checkpoint may adjust it (_load_checkpoint)
    config = fit_scales(config, source, train_config)
    device = torch.device(train_config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, train_config.dtype)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    model = MultiCrossCoder(config, seed=train_config.seed).to(device=device, dtype=dtype).train()
    base_lr = train_config.lr or 2e-4 / math.sqrt(config.dict_size / 2**14)
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr, betas=train_config.betas)
    run, resumed_from = _start_run(out_dir, model, optimizer, config, train_config, device, resume)
    if resumed_from is None:
        with torch.no_grad():
            first = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
            for b_dec, x_BD in zip(model.b_dec, model.normalize([x.to(device, dtype) for x in first]), strict=True):
                b_dec.copy_(x_BD.mean(0))
    if out_dir is not None:
        _remove_partial_checkpoints(out_dir)
    run.relocated = run.relocated or 0
    dead_after = train_config.dead_after()
    start = time.perf_counter()
    elapsed_before = run.elapsed_s

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - start

    def checkpoint() -> None:
        if out_dir is not None:
            run.elapsed_s = elapsed()
            _save_checkpoint(out_dir, model, optimizer, run, config, train_config)

    batches = source.iter_batches(train_config.batch_size, train_config.seed, start_batch=run.step)
    applying = stopped = False
    try:
        while run.step < train_config.steps:
            xs = model.normalize([x_BD.to(device, dtype) for x_BD in next(batches)])
            lr = learning_rate(run.step, train_config, base_lr)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            out = multi_training_loss(model, xs, run.tokens_since_fired_F >= dead_after, train_config)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            applying = True
            optimizer.step()
            with torch.no_grad():
                model.threshold.copy_(
                    updated_threshold(model.threshold, out.selection, train_config.threshold_decay, first=run.step == 0)
                )
            run.tokens_since_fired_F += xs[0].shape[0]
            run.tokens_since_fired_F[out.fired_F] = 0
            run.step += 1
            if run.step % train_config.relocate_every == 0:
                run.relocated += relocate_multi(model, optimizer, run.tokens_since_fired_F, train_config, run.step)
            applying = False
            if run.step % train_config.log_every == 0 or run.step == train_config.steps:
                metrics = {"step": run.step, "loss": float(out.loss.detach()), **out.stats, "relocated": run.relocated,
                           "lr": lr}  # fmt: skip
                run.history.append(metrics)
                if progress is not None:
                    progress(TrainProgress(run.step, train_config.steps, run.step * train_config.batch_size,
                                           metrics, elapsed()))  # fmt: skip
            if run.step % train_config.checkpoint_every == 0 or run.step == train_config.steps:
                checkpoint()
            if should_stop is not None and run.step < train_config.steps and should_stop():
                checkpoint()
                stopped = True
                break
    except KeyboardInterrupt:
        if not applying:
            checkpoint()
        raise
    seconds = time.perf_counter() - start
    model.eval()
    if out_dir is not None:
        _write_results(
            out_dir, model, run, config, train_config, resumed_from, finished=not stopped, elapsed_s=elapsed()
        )
    return MultiTrainResult(
        crosscoder=model, history=run.history, steps_done=run.step, seconds=seconds, resumed_from=resumed_from
    )
