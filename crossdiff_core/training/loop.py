"""Train a crosscoder (DFC or standard) on a stream of paired activations, with resumable checkpoints.

`train(config, train_config, source, out_dir)` fits the normalization scales and pair metadata
(`normalization`), builds the crosscoder, and runs Adam (linear warmup, then linear decay to 0) on
the step loss of `losses`; in a DFC it relocates one-model shared latents every `relocate_every`
steps (`relocation`). Every `checkpoint_every` steps the full training state is written atomically
to `out_dir/checkpoint/` (`checkpoint`); a later call with the same arguments continues from there
and ends with the same weights as an uninterrupted run. The finished crosscoder is written with
`save_pretrained(out_dir)` next to `metrics.jsonl` and `training.json`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from crossdiff_core.activations.batches import BatchSource
from crossdiff_core.crosscoder.batchtopk import updated_threshold
from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.crosscoder.model import CrossCoder, EncoderWorkspace
from crossdiff_core.distributed import Dist, RankSource
from crossdiff_core.errors import is_out_of_memory
from crossdiff_core.training.checkpoint import (
    _remove_partial_checkpoints,
    _RunState,
    _save_checkpoint,
    _start_run,
    _write_results,
)
from crossdiff_core.training.config import TrainConfig, TrainProgress, TrainResult
from crossdiff_core.training.losses import StepOutput, training_loss
from crossdiff_core.training.normalization import _init_decoder_bias, fit_to_source, mean_sample
from crossdiff_core.training.out_of_memory import _out_of_memory_error
from crossdiff_core.training.relocation import relocate_one_sided


def learning_rate(step: int, train_config: TrainConfig, base_lr: float) -> float:
    """Return the learning rate of 0-based `step`: linear warmup, constant, then linear decay to 0."""
    factor = 1.0
    if step < train_config.warmup_steps:
        factor = (step + 1) / train_config.warmup_steps
    decay_from = int(train_config.decay_start * train_config.steps)
    if step >= decay_from:
        factor = min(factor, (train_config.steps - step) / max(1, train_config.steps - decay_from))
    return base_lr * factor


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
    dtype = getattr(torch, train_config.dtype)
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
    run, resumed_from = _start_run(out_dir, model, optimizer, config, train_config, device, resume)
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
        _write_results(
            out_dir, model, run, config, train_config, resumed_from, finished=not stopped, elapsed_s=elapsed()
        )
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


class _StepModule(torch.nn.Module):
    """One training step's loss as a module, so that DDP can wrap it (DDP reduces gradients of a module's forward)."""

    def __init__(self, crosscoder: CrossCoder, train_config: TrainConfig, group: Dist | None):
        super().__init__()
        self.crosscoder = crosscoder
        self.train_config = train_config
        self.group = group
        self.workspace = EncoderWorkspace()

    def forward(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor, dead_F: torch.Tensor) -> StepOutput:
        return training_loss(
            self.crosscoder, x_a_BD, x_b_BD, dead_F, self.train_config, group=self.group, workspace=self.workspace
        )


def _metrics(
    model: CrossCoder, out: StepOutput, run: _RunState, train_config: TrainConfig, lr: float, group: Dist | None = None
) -> dict:
    """Return the logged metrics of a step as plain floats (with a `group`, the mean over ranks)."""
    names = ["loss", *out.stats]
    values = torch.stack(
        [out.loss.detach().float(), *(v.detach().float().to(out.loss.device) for v in out.stats.values())]
    )
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
