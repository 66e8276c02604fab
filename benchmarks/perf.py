"""Performance of CrossDiff on the demo pair, as ratios measured side by side in one run.

`python -m benchmarks.perf --quick` (a few minutes on CPU) prints a table and writes
`benchmarks/results/perf.json`; without `--quick` the runs are longer and larger (200 training
steps, F up to 64k, more windows). Every figure is a ratio of two things timed alternately in the
same process (medians over rounds), so a busy machine slows both sides alike:

- **harvest**: paired tokens/s of `crossdiff_core.activations.harvest.paired_activations` (forward stops at the
  read layer, length-sorted passes without padding waste; bf16, NF4 and fp32 models) against a naive
  harvest of the same windows: full fp32 forward of both models with `output_hidden_states=True`
  through every layer and the LM head, on padded batches of 16 windows in corpus order;
- **training step**: tokens/s of the DFC step (`training.losses.training_loss` with the sparse kernels, fused
  Adam) against a dense reference written here the way published crosscoder code does it (full
  `[d, F]` matrices with masks, dense encode, dense BatchTopK, dense decode, autograd, same auxk and
  Adam), and against the encoder-forward limit (the bare `x·W_enc` matmuls of both models);
  both steps start from the same weights and see the same batches, and their losses are compared;
- **training step against dfc_learning**: tokens/s of the same DFC step against the trainer of
  superkaiba/dfc_learning (`DedicatedFeatureBatchTopKCrossCoder` + `BatchTopKCrossCoderTrainer`,
  their loss, gradient clipping and Adam) on the same batches, d = 576 for both models, F = 8192,
  k = 32, batch 1024, fp32, 2 threads; it needs a checkout of theirs (`--dfc-learning PATH` or
  `$DFC_LEARNING`) and einops, and is skipped with a message otherwise;
- **diff latency**: `prompt_diff.diff` on a 64-token prompt against the two truncated forward passes;
- **memory**: peak resident memory of loading the demo pair in NF4 (with the default compute dtype), bf16 and
  fp32 (each in a fresh subprocess), and of converting each demo GGUF file (in a fresh subprocess, into an empty
  cache), the crosscoder's parameters + Adam state per size, and the estimates of `crossdiff_core.planning`
  against those measurements;
- **dtype**: bf16 against fp32 on this CPU: one-thread matmul GFLOP/s (`compute_dtype.time_matmuls`)
  and SmolLM2's truncated forward over a 64-token prompt, with the CPU's model and bf16 flags and
  the compute dtype `auto` picks (CPUs without bf16 instructions run bf16 tens of times slower).

Speed comparisons run twice, with torch's default threads and on one thread (see `THREAD_SETTINGS`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.machinery
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

from crossdiff_core.cpu_threads import WAIT_POLICY, sleep_when_idle

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sleep_when_idle()  # as the command line and the app run

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "perf.json"
DEMO_A, DEMO_B = "smollm2-135m", "gemma3-270m"
CTX_LEN = 128
LOAD_SETTINGS = {"nf4": ("nf4", "bf16"), "bf16": ("none", "bf16"), "fp32": ("none", "fp32")}
"""Name → (quant, compute dtype) of the three ways the demo pair is loaded for speed."""
MEMORY_SETTINGS = {"nf4": ("nf4", "auto"), "bf16": ("none", "bf16"), "fp32": ("none", "fp32")}
"""Name → (quant, compute dtype) of the three ways the demo pair is loaded for memory: NF4 as `load_model` loads it
by default (`auto`: fp32 on CPUs without bf16 instructions)."""
MEMORY_TARGET = 0.5
"""Largest peak RSS of loading the demo pair in NF4, as a fraction of the peak in fp32."""
CHILD_TIMEOUT_S = 3600
"""Longest a memory child may run (an NF4 load or a conversion takes minutes; many more on a busy CPU)."""


@dataclass(frozen=True)
class Mode:
    """How big each measurement is."""

    name: str
    harvest_windows: int
    harvest_rounds: int
    train_steps: int
    """Lock-step training steps at F=8192 (losses compared after the last)."""
    train_sizes: tuple[int, ...]
    size_steps: int
    """Timed steps at each other size."""
    dfc_learning_steps: int
    """Timed steps of each trainer in the comparison with dfc_learning's."""
    diff_rounds: int
    forward_tokens: int
    """Tokens of the forward pass whose memory the memory children measure."""


QUICK = Mode("quick", harvest_windows=16, harvest_rounds=2, train_steps=20, train_sizes=(4096, 16384),
             size_steps=6, dfc_learning_steps=10, diff_rounds=5, forward_tokens=4096)  # fmt: skip
FULL = Mode("full", harvest_windows=64, harvest_rounds=3, train_steps=200, train_sizes=(4096, 16384, 65536),
            size_steps=10, dfc_learning_steps=30, diff_rounds=9, forward_tokens=8192)  # fmt: skip


def machine() -> dict:
    """Return what the numbers were measured on: platform, CPU (model, SIMD and bf16 flags), torch version, threads."""
    import transformers

    from crossdiff_core.compute_dtype import cpu_description

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get(WAIT_POLICY, "default"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


THREAD_SETTINGS = {"all_threads": None, "one_thread": 1}
"""Each comparison runs twice: with torch's default threads, and on one thread. On a shared machine
multi-threaded runs lose time at every kernel's barrier waiting for a descheduled thread, which hurts
code made of many small kernels (elementwise ops, sparse steps) more than a few big matmuls; one
thread shows the ratios without that effect."""


@contextlib.contextmanager
def threads(n_threads: int | None):
    """Run the block with torch on `n_threads` threads (None: leave as is), then restore."""
    before = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(fn, device: str = "cpu") -> tuple[float, object]:
    """Return (seconds, result) of one call of `fn` (waiting for a GPU's queued work on both ends)."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def _ratio_stats(ratios: list[float]) -> dict:
    """Return the median of per-round ratios with their range."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


# ---------------------------------------------------------------------------- harvest


def demo_windows(n_windows: int, tokenizer) -> list[str]:
    """Return the first `n_windows` windows of `builtin:demo` cut for model A at `CTX_LEN` tokens."""
    from crossdiff_core.corpus.sources import iter_windows

    windows = []
    for text in iter_windows("builtin:demo", tokenizer, CTX_LEN):
        windows.append(text)
        if len(windows) == n_windows:
            break
    return windows


@torch.no_grad()
def naive_paired_rows(
    model_a, model_b, windows: list[str], batch_windows: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return paired rows `(x_a_ND, x_b_ND)` the naive way: every layer and the LM head in fp32, padded batches."""
    from crossdiff_core.activations.paired import pad_batch, pad_id
    from crossdiff_core.alignment import align_batch

    rows_a, rows_b = [], []
    for first in range(0, len(windows), batch_windows):
        aligned = align_batch(model_a.tokenizer, model_b.tokenizer, windows[first : first + batch_windows],
                              max_tokens=CTX_LEN, max_tokens_b=2 * CTX_LEN)  # fmt: skip
        for model, side, rows in ((model_a, 0, rows_a), (model_b, 1, rows_b)):
            ids_BT, mask_BT = pad_batch([al[side].input_ids for al in aligned], pad_id(model.tokenizer))
            out = model.model(input_ids=ids_BT, attention_mask=mask_BT, output_hidden_states=True, use_cache=False)
            hidden_BTD = out.hidden_states[model.layer + 1]  # [0] is the embedding output
            for row, al in enumerate(aligned):
                positions = al[2].pos_a if side == 0 else al[2].pos_b
                rows.append(hidden_BTD[row, torch.as_tensor(positions, dtype=torch.long)].float())
    return torch.cat(rows_a), torch.cat(rows_b)


def _relative_error(x_ND: torch.Tensor, ref_ND: torch.Tensor) -> float:
    """Return ‖x − ref‖ / ‖ref‖ over all rows."""
    return float((x_ND - ref_ND).norm() / ref_ND.norm().clamp_min(1e-12))


def bench_harvest(mode: Mode, pairs: dict) -> dict:
    """Return paired tokens/s of our harvest path (bf16, NF4, fp32) relative to the naive harvest, and row errors."""
    from crossdiff_core.activations.config import HarvestConfig
    from crossdiff_core.activations.harvest import paired_activations
    from crossdiff_core.activations.paired import rows_at_positions
    from crossdiff_core.alignment import align_batch

    config = HarvestConfig()
    fp32_a, fp32_b = pairs["fp32"]
    windows = demo_windows(mode.harvest_windows, fp32_a.tokenizer)
    aligned = align_batch(fp32_a.tokenizer, fp32_b.tokenizer, windows, max_tokens=CTX_LEN, max_tokens_b=2 * CTX_LEN)
    n_paired = sum(len(al.pos_a) for _, _, al in aligned)

    def ours(name):
        model_a, model_b = pairs[name]
        return lambda: paired_activations(
            model_a, model_b, windows, CTX_LEN, config.outlier_factor, config.max_batch_tokens
        )

    def naive():
        return naive_paired_rows(fp32_a, fp32_b, windows)

    paired_activations(*pairs["bf16"], windows[:2], CTX_LEN, config.outlier_factor)  # warm up
    speedups, naive_tokens_per_s = {}, {}
    for setting, n_threads in THREAD_SETTINGS.items():
        with threads(n_threads):
            times: dict[str, list[float]] = {"naive": [], "bf16": [], "nf4": [], "fp32": []}
            for _ in range(mode.harvest_rounds):
                times["naive"].append(_timed(naive)[0])
                for name in ("bf16", "nf4", "fp32"):
                    times[name].append(_timed(ours(name))[0])
        naive_tokens_per_s[setting] = n_paired / statistics.median(times["naive"])
        speedups[setting] = {
            name: _ratio_stats([n / t for n, t in zip(times["naive"], times[name])]) for name in ("bf16", "nf4", "fp32")
        }

    # Correctness: our rows against the naive ones at the same positions (no outlier filter on either side).
    ref_a, ref_b = naive()
    errors = {}
    for name in ("fp32", "bf16", "nf4"):
        model_a, model_b = pairs[name]
        x_a = rows_at_positions(model_a, [al[0].input_ids for al in aligned], [al[2].pos_a for al in aligned], 8192)
        x_b = rows_at_positions(model_b, [al[1].input_ids for al in aligned], [al[2].pos_b for al in aligned], 8192)
        errors[name] = {"a": _relative_error(x_a, ref_a), "b": _relative_error(x_b, ref_b)}
    padded_naive = _padded_tokens(aligned, 16, sort=False)
    padded_ours = _padded_tokens(aligned, config.max_batch_tokens, sort=True)
    return {
        "windows": len(windows),
        "paired_tokens": n_paired,
        "naive_paired_tokens_per_s": naive_tokens_per_s,
        "speedup_vs_naive": speedups,
        "relative_error_vs_naive": errors,
        "padded_tokens": {"naive": padded_naive, "ours": padded_ours},
    }


def _padded_tokens(aligned, group: int, sort: bool) -> dict:
    """Return the tokens both models run (padding included) and the real ones, naive batches or our passes."""
    from crossdiff_core.activations.paired import length_sorted_chunks

    totals = {"run": 0, "real": 0}
    for side in (0, 1):
        positions = [al[2].pos_a if side == 0 else al[2].pos_b for al in aligned]
        if sort:
            lengths = [int(p[-1]) + 1 if len(p) else 0 for p in positions]
            chunks = length_sorted_chunks(lengths, group)
        else:
            lengths = [len(al[side].input_ids) for al in aligned]
            chunks = [list(range(i, min(i + group, len(lengths)))) for i in range(0, len(lengths), group)]
        totals["run"] += sum(len(c) * max(lengths[i] for i in c) for c in chunks)
        totals["real"] += sum(lengths)
    return totals


# ---------------------------------------------------------------------------- training step


class DenseReferenceStep:
    """A crosscoder training step written the way published crosscoder code does it.

    Full `[d_m, F]` encoder and `[F, d_m]` decoder matrices per model; the DFC partition is kept by
    zeroing the forbidden weights and their gradients (masks). Dense encode, BatchTopK over the
    flattened `[B, F]` scores, dense decode, autograd, Adam, and the auxk loss as
    `crossdiff_core.training.losses.training_loss` defines it: over dead *shared* latents, weighted by
    `auxk_coeff · (d_a + d_b)`.
    """

    def __init__(self, dfc, lr: float, k_aux: int, auxk_coeff: float):
        n_latents = dfc.dict_size
        self.k, self.k_aux = dfc.config.k, k_aux
        self.auxk_weight = auxk_coeff * (dfc.config.d_a + dfc.config.d_b)
        device = dfc.W_enc_a.device
        self.mask_a_F = torch.zeros(n_latents, dtype=torch.bool, device=device)
        self.mask_a_F[dfc.slice_a] = True
        self.mask_b_F = torch.zeros(n_latents, dtype=torch.bool, device=device)
        self.mask_b_F[dfc.slice_b] = True
        self.shared_F = self.mask_a_F & self.mask_b_F
        with torch.no_grad():
            self.W_enc_a = _full(dfc.W_enc_a.T, n_latents, dfc.slice_a, rows=False)
            self.W_enc_b = _full(dfc.W_enc_b.T, n_latents, dfc.slice_b, rows=False)
            self.W_dec_a = _full(dfc.W_dec_a, n_latents, dfc.slice_a, rows=True)
            self.W_dec_b = _full(dfc.W_dec_b, n_latents, dfc.slice_b, rows=True)
            self.b_enc = dfc.b_enc.detach().clone().requires_grad_()
            self.b_dec_a = dfc.b_dec_a.detach().clone().requires_grad_()
            self.b_dec_b = dfc.b_dec_b.detach().clone().requires_grad_()
        self.params = [self.W_enc_a, self.W_enc_b, self.b_enc, self.W_dec_a, self.W_dec_b, self.b_dec_a, self.b_dec_b]
        self.optimizer = torch.optim.Adam(self.params, lr=lr, fused=True)

    def step(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor, dead_F: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Run one optimizer step; return (loss, which latents fired [F])."""
        batch = x_a_BD.shape[0]
        pre_BF = x_a_BD @ self.W_enc_a + x_b_BD @ self.W_enc_b + self.b_enc
        act_BF = pre_BF.relu()
        with torch.no_grad():
            dec_norm_F = self.W_dec_a.norm(dim=1) + self.W_dec_b.norm(dim=1)
            top = torch.topk((act_BF * dec_norm_F).flatten(), self.k * batch)
            keep_BF = torch.zeros(act_BF.numel(), dtype=torch.bool, device=act_BF.device).index_fill_(
                0, top.indices[top.values > 0], True
            )
        f_BF = act_BF * keep_BF.view_as(act_BF)
        err_a_BD = f_BF @ self.W_dec_a + self.b_dec_a - x_a_BD
        err_b_BD = f_BF @ self.W_dec_b + self.b_dec_b - x_b_BD
        loss = err_a_BD.pow(2).sum(1).mean() + err_b_BD.pow(2).sum(1).mean()
        dead_shared_F = dead_F & self.shared_F
        if dead_shared_F.any() and self.auxk_weight:
            loss = loss + self.auxk_weight * self._auxk(pre_BF, dead_shared_F, err_a_BD.detach(), err_b_BD.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # the reference implementation's gradient hooks
            self.W_enc_a.grad[:, ~self.mask_a_F] = 0
            self.W_enc_b.grad[:, ~self.mask_b_F] = 0
            self.W_dec_a.grad[~self.mask_a_F] = 0
            self.W_dec_b.grad[~self.mask_b_F] = 0
        self.optimizer.step()
        return float(loss.detach()), keep_BF.view_as(act_BF).any(0)

    def _auxk(self, pre_BF, dead_F, err_a_BD, err_b_BD) -> torch.Tensor:
        pre_dead_BF = pre_BF.masked_fill(~dead_F, float("-inf"))
        k_aux = min(self.k_aux, int(dead_F.sum()))
        top = torch.topk(pre_dead_BF.detach(), k_aux, dim=1)
        f_aux_BF = torch.zeros_like(pre_BF).scatter(1, top.indices, pre_BF.gather(1, top.indices).relu())
        e_hat_a_BD, e_hat_b_BD = f_aux_BF @ self.W_dec_a, f_aux_BF @ self.W_dec_b
        variance = (err_a_BD - err_a_BD.mean(0)).pow(2).sum() + (err_b_BD - err_b_BD.mean(0)).pow(2).sum()
        error = (e_hat_a_BD + err_a_BD).pow(2).sum() + (e_hat_b_BD + err_b_BD).pow(2).sum()
        return error / variance.clamp_min(torch.finfo(variance.dtype).tiny)


def _full(weight: torch.Tensor, n_latents: int, block: slice, rows: bool) -> torch.Tensor:
    """Return a zero-padded full-size copy of a structural weight (latents on rows or on columns)."""
    if rows:
        full = weight.new_zeros(n_latents, weight.shape[1])
        full[block] = weight
    else:
        full = weight.new_zeros(weight.shape[0], n_latents)
        full[:, block] = weight
    return full.requires_grad_()


class DfcStep:
    """The DFC training step as `crossdiff_core.training.loop.train` runs it (sparse kernels, fused Adam, threshold)."""

    def __init__(self, dfc, train_config, lr: float):
        from crossdiff_core.crosscoder.model import EncoderWorkspace

        self.model, self.train_config = dfc, train_config
        self.optimizer = torch.optim.Adam(dfc.parameters(), lr=lr, betas=train_config.betas, fused=True)
        self.workspace = EncoderWorkspace()
        self.first = True

    def step(self, x_a_BD: torch.Tensor, x_b_BD: torch.Tensor, dead_F: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Run one optimizer step; return (loss, which latents fired [F])."""
        from crossdiff_core.crosscoder.batchtopk import updated_threshold
        from crossdiff_core.training.losses import training_loss

        out = training_loss(self.model, x_a_BD, x_b_BD, dead_F, self.train_config, workspace=self.workspace)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        new = updated_threshold(self.model.threshold, out.selection, self.train_config.threshold_decay, self.first)
        self.model.threshold.copy_(new)
        self.first = False
        return float(out.loss.detach()), out.fired_F


def synthetic_batches(
    d_a: int, d_b: int, batch: int, n_batches: int, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Return normalized batches of two synthetic 'models' sharing most sparse features (mean squared norm ≈ d)."""
    gen = torch.Generator().manual_seed(seed)
    n_features, per_token = 4 * (d_a + d_b), 16
    dirs_a = torch.nn.functional.normalize(torch.randn(n_features, d_a, generator=gen), dim=1)
    dirs_b = torch.nn.functional.normalize(torch.randn(n_features, d_b, generator=gen), dim=1)
    dirs_a[: n_features // 20] = 0  # B-only features
    dirs_b[-n_features // 20 :] = 0  # A-only features
    batches = []
    for _ in range(n_batches):
        codes = torch.zeros(batch, n_features)
        idx = torch.randint(0, n_features, (batch, per_token), generator=gen)
        codes.scatter_(1, idx, torch.rand(batch, per_token, generator=gen) * 2)
        x_a = codes @ dirs_a + 0.05 * torch.randn(batch, d_a, generator=gen)
        x_b = codes @ dirs_b + 0.05 * torch.randn(batch, d_b, generator=gen)
        batches.append((x_a * (d_a / x_a.pow(2).sum(1).mean()).sqrt(), x_b * (d_b / x_b.pow(2).sum(1).mean()).sqrt()))
    return batches


def bench_train_size(
    dict_size: int, steps: int, d_a: int = 576, d_b: int = 640, batch: int = 1024, k: int = 32, device: str = "cpu"
) -> dict:
    """Return step-time ratios (reference / DFC, encoder matmul / DFC) and losses after `steps` lock-step steps."""
    from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
    from crossdiff_core.training.config import TrainConfig

    torch.manual_seed(0)
    train_config = TrainConfig(batch_size=batch, dead_after_tokens=8 * batch, seed=0)
    config = CrossCoderConfig(d_a=d_a, d_b=d_b, dict_size=dict_size, k=k, scale_a=1.0, scale_b=1.0)
    dfc = CrossCoder(config, seed=0).to(device).train()
    lr = 2e-4 / (dict_size / 2**14) ** 0.5
    k_aux = train_config.k_aux or max(d_a, d_b) // 2
    reference = DenseReferenceStep(dfc, lr, k_aux, train_config.auxk_coeff)
    ours = DfcStep(dfc, train_config, lr)
    pool = [(x_a.to(device), x_b.to(device)) for x_a, x_b in synthetic_batches(d_a, d_b, batch, 16)]
    since_fired = {name: torch.zeros(dict_size, dtype=torch.long, device=device) for name in ("ref", "dfc")}
    times: dict[str, list[float]] = {"ref": [], "dfc": [], "encoder": []}
    losses = {"ref": [], "dfc": []}
    out_a = torch.empty(batch, dfc.W_enc_a.shape[0], device=device)
    out_b = torch.empty(batch, dfc.W_enc_b.shape[0], device=device)
    for step in range(steps):
        x_a, x_b = pool[step % len(pool)]
        for name, runner in (("ref", reference), ("dfc", ours)):
            dead_F = since_fired[name] >= train_config.dead_after_tokens
            seconds, (loss, fired_F) = _timed(lambda: runner.step(x_a, x_b, dead_F), device)  # noqa: B023
            since_fired[name] += batch
            since_fired[name][fired_F] = 0
            times[name].append(seconds)
            losses[name].append(loss)
        with torch.no_grad():
            times["encoder"].append(_timed(lambda: (torch.mm(x_a, dfc.W_enc_a.T, out=out_a),  # noqa: B023
                                                    torch.mm(x_b, dfc.W_enc_b.T, out=out_b)), device)[0])  # fmt: skip  # noqa: B023
    warm = min(3, steps - 1)
    ref_s, dfc_s, enc_s = (statistics.median(times[n][warm:]) for n in ("ref", "dfc", "encoder"))
    tail = max(1, min(10, steps // 5))
    return {
        "dict_size": dict_size,
        "steps": steps,
        "dfc_tokens_per_s": batch / dfc_s,
        "speedup_vs_dense": ref_s / dfc_s,
        "fraction_of_encoder_limit": enc_s / dfc_s,
        "loss_final": {"dfc": losses["dfc"][-1], "reference": losses["ref"][-1]},
        "loss_rel_diff_final": abs(losses["dfc"][-1] - losses["ref"][-1]) / losses["ref"][-1],
        "loss_rel_diff_tail_mean": abs(statistics.mean(losses["dfc"][-tail:]) - statistics.mean(losses["ref"][-tail:]))
        / statistics.mean(losses["ref"][-tail:]),
        "auxk_active_from_step": train_config.dead_after_tokens // batch,
        "loadavg": os.getloadavg(),
    }


def bench_train(mode: Mode, dfc_learning: Path | None) -> dict:
    """Return the training-step comparison at F=8192 (losses compared), at the other sizes, on one thread, and
    against dfc_learning's trainer (a checkout at `dfc_learning`)."""
    results = {"8192": bench_train_size(8192, mode.train_steps)}
    for size in mode.train_sizes:
        results[str(size)] = bench_train_size(size, mode.size_steps)
    with threads(1):
        results["8192_one_thread"] = bench_train_size(8192, mode.size_steps + 4)
    results["vs_dfc_learning"] = bench_vs_dfc_learning(dfc_learning, mode.dfc_learning_steps)
    return results


DFC_LEARNING_ENV = "DFC_LEARNING"
"""Environment variable naming a checkout of superkaiba/dfc_learning (what `--dfc-learning` defaults to)."""

DFC_LEARNING_STANDINS = {"nnsight": ("LanguageModel",), "zstandard": (), "datasets": ("load_dataset", "Dataset")}
"""Modules dfc_learning's package imports to read data, which its trainer never uses, with the names it takes
from them: each that is not installed is stood in by an empty module."""


def import_dfc_learning(path: Path) -> tuple[type, type]:
    """Return dfc_learning's `(DedicatedFeatureBatchTopKCrossCoder, BatchTopKCrossCoderTrainer)` from a checkout.

    Raises ImportError when `path` holds no `dictionary_learning` package or something it needs (einops) is missing.
    """
    if not (path / "dictionary_learning" / "__init__.py").is_file():
        raise ImportError(f"no dictionary_learning package in {path}")
    for name, names in DFC_LEARNING_STANDINS.items():
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            standin = types.ModuleType(name)
            standin.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)  # others look it up (datasets)
            for attribute in names:
                setattr(standin, attribute, type(attribute, (), {}))
            sys.modules[name] = standin
    sys.path.insert(0, str(path))
    try:
        from dictionary_learning.dictionary import DedicatedFeatureBatchTopKCrossCoder
        from dictionary_learning.trainers.crosscoder import BatchTopKCrossCoderTrainer
    finally:
        sys.path.remove(str(path))
    return DedicatedFeatureBatchTopKCrossCoder, BatchTopKCrossCoderTrainer


def bench_vs_dfc_learning(
    path: Path | None, steps: int, d: int = 576, dict_size: int = 8192, k: int = 32, batch: int = 1024,
    n_threads: int = 2, warm: int = 3,
) -> dict:  # fmt: skip
    """Return tokens/s of a training step (forward, backward, optimizer) of ours and of dfc_learning's own trainer.

    Both train a DFC with 5%/90%/5% blocks of `dict_size` latents on two models of width `d`, with the same
    learning rate, on the same batches, timed alternately (which goes first alternates too). Theirs is
    `BatchTopKCrossCoderTrainer.update` (their loss, auxk, gradient clipping, Adam, schedule); ours is `DfcStep`.
    Both call a latent dead after 8 batches without firing (so both run auxk) and update the threshold every
    step. Returns `{"skipped": why}` when their trainer cannot be imported from `path`.
    """
    from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
    from crossdiff_core.training.config import TrainConfig

    if path is None:
        return {"skipped": f"no dfc_learning checkout: pass --dfc-learning PATH (or set ${DFC_LEARNING_ENV})"}
    try:
        dfc_class, trainer_class = import_dfc_learning(path)
    except ImportError as error:
        return {"skipped": f"dfc_learning's trainer is not importable from {path}: {error}"}
    load_before = os.getloadavg()
    lr = 2e-4 / (dict_size / 2**14) ** 0.5  # their default learning rate, and ours
    train_config = TrainConfig(batch_size=batch, dead_after_tokens=8 * batch, seed=0)
    with threads(n_threads):
        config = CrossCoderConfig(d_a=d, d_b=d, dict_size=dict_size, k=k, scale_a=1.0, scale_b=1.0)
        ours = DfcStep(CrossCoder(config, seed=0).train(), train_config, lr)
        theirs = trainer_class(
            steps=10 * (warm + steps) + 1000, activation_dim=d, dict_size=dict_size, k=k, layer=0, lm_name="benchmark",
            dict_class=dfc_class, lr=lr, threshold_start_step=0, seed=0, device="cpu",
            dict_class_kwargs={"model_a_exclusive_pct": 0.05, "model_b_exclusive_pct": 0.05},
        )  # fmt: skip
        theirs.dead_feature_threshold = train_config.dead_after_tokens
        pool = synthetic_batches(d, d, batch, 8)
        stacked = [torch.stack(pair, dim=1) for pair in pool]  # their layout: [batch, model, d]
        since_fired_F = torch.zeros(dict_size, dtype=torch.long)
        times: dict[str, list[float]] = {"dfc_learning": [], "crossdiff": []}
        for step in range(warm + steps):
            x_a, x_b = pool[step % len(pool)]
            x_B2D = stacked[step % len(pool)].clone()  # their update normalizes its input in place
            dead_F = since_fired_F >= train_config.dead_after_tokens
            runs = [
                ("dfc_learning", lambda: theirs.update(step, x_B2D)),  # noqa: B023
                ("crossdiff", lambda: ours.step(x_a, x_b, dead_F)),  # noqa: B023
            ]
            for name, run in runs if step % 2 else runs[::-1]:
                seconds, result = _timed(run)
                times[name].append(seconds)
                if name == "crossdiff":
                    since_fired_F += batch
                    since_fired_F[result[1]] = 0
    theirs_s, ours_s = (statistics.median(times[name][warm:]) for name in ("dfc_learning", "crossdiff"))
    return {
        "d_model": d, "dict_size": dict_size, "k": k, "batch": batch, "threads": n_threads, "steps": steps,
        "crossdiff_tokens_per_s": batch / ours_s,
        "dfc_learning_tokens_per_s": batch / theirs_s,
        "speedup": theirs_s / ours_s,
        "speedup_per_step": _ratio_stats([t / o for t, o in zip(times["dfc_learning"][warm:], times["crossdiff"][warm:])]),
        "loadavg": {"before": load_before, "after": os.getloadavg()},
        "dfc_learning": str(path),
        "dfc_learning_commit": _git_commit(path),
    }  # fmt: skip


def _git_commit(path: Path) -> str | None:
    """Return the commit a git checkout at `path` is at (None when it is not one)."""
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


# ---------------------------------------------------------------------------- diff latency


def bench_diff(mode: Mode, pairs: dict, settings: tuple[str, ...] = ("nf4", "bf16")) -> dict:
    """Return the ratio of `prompt_diff.diff` time to the two truncated forward passes on a 64-token prompt."""
    from crossdiff_core.alignment import align_text
    from crossdiff_core.analysis.prompt_diff import diff
    from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig

    results = {}
    for name in settings:
        model_a, model_b = pairs[name]
        prompt = _prompt_of(model_a.tokenizer, 64)
        info_a, info_b = model_a.info(), model_b.info()
        crosscoder = CrossCoder(CrossCoderConfig(
            d_a=model_a.d_model, d_b=model_b.d_model, dict_size=8192, k=32, scale_a=1.0, scale_b=1.0,
            model_a=info_a["model_id"], model_b=info_b["model_id"], layer_a=info_a["layer"], layer_b=info_b["layer"],
            tokenizer_a=info_a["tokenizer"], tokenizer_b=info_b["tokenizer"],
        ), seed=0).eval()  # fmt: skip
        tok_a, tok_b, _ = align_text(model_a.tokenizer, model_b.tokenizer, prompt)
        ids_a, ids_b = torch.tensor([tok_a.input_ids]), torch.tensor([tok_b.input_ids])

        def forwards():
            model_a.activations(ids_a)  # noqa: B023
            model_b.activations(ids_b)  # noqa: B023

        diff(crosscoder, (model_a, model_b), prompt)  # warm up
        results[name] = {"tokens_a": len(tok_a.input_ids), "tokens_b": len(tok_b.input_ids)}
        for setting, n_threads in THREAD_SETTINGS.items():
            with threads(n_threads):
                ratios = [
                    _timed(lambda: diff(crosscoder, (model_a, model_b), prompt))[0] / _timed(forwards)[0]  # noqa: B023
                    for _ in range(mode.diff_rounds)
                ]
            results[name][setting] = _ratio_stats(ratios)
    return results


def _prompt_of(tokenizer, n_tokens: int) -> str:
    """Return a demo-corpus text cut to `n_tokens` tokens of `tokenizer` (specials included)."""
    text = demo_windows(1, tokenizer)[0]
    offsets = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    room = n_tokens - tokenizer.num_special_tokens_to_add()
    return text[: offsets[min(room, len(offsets)) - 1][1]]


# ---------------------------------------------------------------------------- compute dtype


def bench_dtype(mode: Mode) -> dict:
    """Return bf16 vs fp32 on this CPU: matmul GFLOP/s on one thread, SmolLM2's truncated forward, the `auto` choice."""
    from crossdiff_core.compute_dtype import cpu_description, pick_compute_dtype, time_matmuls
    from crossdiff_core.models import load_model

    matmul = {}
    for shape in ((32, 512, 512), (128, 576, 576)):
        timings = [time_matmuls(shape) for _ in range(mode.diff_rounds)]
        matmul["x".join(map(str, shape))] = {
            "bf16_gflops": statistics.median(t.bf16_gflops for t in timings),
            "fp32_gflops": statistics.median(t.fp32_gflops for t in timings),
            "bf16_time_over_fp32": statistics.median(t.slowdown for t in timings),
        }
    forward: dict = {}
    for dtype in ("fp32", "bf16"):
        model = load_model(DEMO_A, quant="none", dtype=dtype, device="cpu")
        ids = torch.tensor([model.tokenizer(_prompt_of(model.tokenizer, 64)).input_ids])
        model.activations(ids[:, :8])  # warm up
        forward[f"{dtype}_s"] = min(_timed(lambda: model.activations(ids))[0] for _ in range(2))  # noqa: B023
        forward["tokens"] = int(ids.shape[1])
    forward["bf16_time_over_fp32"] = forward["bf16_s"] / forward["fp32_s"]
    return {
        "cpu": cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "matmul_one_thread": matmul,
        "smollm2_forward": forward,
        "auto": pick_compute_dtype("cpu", use_cache=False).to_dict(),
    }


# ---------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    """Return this process's current resident memory."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """Return this process's peak resident memory so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def child_load_memory(setting: str, n_tokens: int) -> dict:
    """Measure, in this (fresh) process, the memory of loading the demo pair and of one forward pass each."""
    import transformers  # noqa: F401 - part of the runtime baseline
    from transformers import AutoModelForCausalLM  # noqa: F401

    from crossdiff_core.models import load_model

    runtime = _rss_bytes()
    quant, dtype = MEMORY_SETTINGS[setting]
    pair = [load_model(spec, quant=quant, dtype=dtype, device="cpu") for spec in (DEMO_A, DEMO_B)]
    load_peak, loaded = _peak_rss_bytes(), _rss_bytes()
    ids_BT = torch.randint(100, 40_000, (max(1, n_tokens // CTX_LEN), CTX_LEN))
    for model in pair:
        model.activations(ids_BT)
    return {"runtime": runtime, "load_peak": load_peak, "loaded": loaded, "forward_peak": _peak_rss_bytes(),
            "forward_tokens": int(ids_BT.numel()), "compute_dtype": pair[0].compute_dtype}  # fmt: skip


def child_convert_memory(gguf: str) -> dict:
    """Measure, in this (fresh) process, the peak memory of converting a GGUF file into an empty cache folder."""
    os.environ["CROSSDIFF_CACHE"] = tempfile.mkdtemp(prefix="crossdiff-convert-")
    import transformers  # noqa: F401 - part of the runtime baseline
    from transformers import AutoModelForCausalLM  # noqa: F401

    from crossdiff_core.models import convert_gguf

    runtime, started = _rss_bytes(), time.perf_counter()
    folder = convert_gguf(Path(gguf))
    seconds = time.perf_counter() - started
    size = (folder / "model.safetensors").stat().st_size
    shutil.rmtree(os.environ["CROSSDIFF_CACHE"])
    return {"runtime": runtime, "convert_peak": _peak_rss_bytes(), "seconds": seconds,
            "gguf_bytes": Path(gguf).stat().st_size, "safetensors_bytes": size}  # fmt: skip


def child_train_memory(dict_size: int, batch: int) -> dict:
    """Return, measured in this (fresh) process, the peak memory of DFC training steps (a quarter of latents dead)."""
    from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
    from crossdiff_core.training.config import TrainConfig

    runtime = _rss_bytes()
    dfc = CrossCoder(CrossCoderConfig(d_a=576, d_b=640, dict_size=dict_size, k=32, scale_a=1.0, scale_b=1.0), seed=0)
    step = DfcStep(dfc.train(), TrainConfig(batch_size=batch), lr=1e-4)
    dead_F = torch.zeros(dict_size, dtype=torch.bool)
    dead_F[::4] = True
    for x_a, x_b in synthetic_batches(576, 640, batch, 3):
        step.step(x_a, x_b, dead_F)
    return {"runtime": runtime, "train_peak": _peak_rss_bytes()}


def _run_child(*args: str) -> dict:
    """Run `python -m benchmarks.perf --child ARGS` in a fresh process and return its JSON result."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.perf", "--child", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=CHILD_TIMEOUT_S, check=False)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(mode: Mode) -> dict:
    """Return measured peaks of loading the demo pair per setting and of converting its GGUF files, crosscoder memory
    per size, and planner accuracy."""
    from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
    from crossdiff_core.models import find_demo
    from crossdiff_core.planning import crosscoder_memory, estimate_pair, paper_pair_estimates

    loads, accuracy = {}, {}
    for setting in ("nf4", "bf16", "fp32"):
        # Peak RSS while loading varies run to run (when the allocator returns freed buffers): the planner is
        # an upper bound, so it is compared against the largest of three fresh processes.
        trials = [_run_child("load", setting, str(mode.forward_tokens)) for _ in range(3)]
        measured = {key: max(t[key] for t in trials) for key in trials[0]}
        measured["load_peak_min"] = min(t["load_peak"] for t in trials)
        estimate = estimate_pair(DEMO_A, DEMO_B, quant=MEMORY_SETTINGS[setting][0], dtype=measured["compute_dtype"],
                                 device="cpu", max_batch_tokens=measured["forward_tokens"])  # fmt: skip
        phases = estimate.phases
        loads[setting] = measured
        accuracy[setting] = {
            "load_estimate_over_measured": phases["load"] / measured["load_peak"],
            "harvest_estimate_over_measured": phases["harvest"] / measured["forward_peak"],
            "runtime_estimate_over_measured": estimate.runtime_bytes / measured["runtime"],
        }
    sizes = sorted({4096, 8192, 16384, 65536})
    crosscoders = {}
    for size in sizes:
        config = CrossCoderConfig(d_a=576, d_b=640, dict_size=size, k=32)
        with torch.device("meta"):
            n_params = sum(p.numel() for p in CrossCoder(config).parameters())
        planned = crosscoder_memory(576, 640, size)
        crosscoders[str(size)] = {"params": n_params, "params_plus_adam_bytes": 3 * 4 * n_params,
                                  "with_grads_bytes": 4 * 4 * n_params, "planner_params": planned.n_params}  # fmt: skip
    converts = {name: _run_child("convert", str(find_demo(name).local_gguf())) for name in (DEMO_A, DEMO_B)}
    train_measured = _run_child("train", "8192", "1024")
    planned = estimate_pair(DEMO_A, DEMO_B, dict_size=8192, batch_size=1024)
    train_estimate = planned.phases["train"] - planned.crosscoder.store_bytes  # the child reads no store
    accuracy["train_8192"] = {"train_estimate_over_measured": train_estimate / train_measured["train_peak"]}
    return {
        "load": loads,
        "paper_pairs": {name: e.summary() for name, e in paper_pair_estimates(device="cuda", quant="nf4").items()},
        "ratio_nf4_vs_fp32": loads["nf4"]["load_peak"] / loads["fp32"]["load_peak"],
        "convert": converts,
        "ratio_bf16_vs_fp32": loads["bf16"]["load_peak"] / loads["fp32"]["load_peak"],
        "steady_ratio_nf4_vs_fp32": (loads["nf4"]["loaded"] - loads["nf4"]["runtime"])
        / (loads["fp32"]["loaded"] - loads["fp32"]["runtime"]),
        "crosscoder": crosscoders,
        "train_8192": train_measured,
        "planner_accuracy": accuracy,
    }


# ---------------------------------------------------------------------------- report


def load_pairs(names: tuple[str, ...]) -> dict:
    """Return the demo pair loaded once per setting name (`nf4`, `bf16`, `fp32`)."""
    from crossdiff_core.models import load_model

    pairs = {}
    for name in names:
        quant, dtype = LOAD_SETTINGS[name]
        pairs[name] = tuple(load_model(spec, quant=quant, dtype=dtype, device="cpu") for spec in (DEMO_A, DEMO_B))
    return pairs


def headline(results: dict, stamp: dict) -> dict:
    """Return the headline metrics (all threads, and one thread where measured) with target, machine and date."""
    metrics = {}

    def put(name, value, one_thread, target, note):
        metrics[name] = {"value": value, "value_one_thread": one_thread, "target": target, "note": note, **stamp}

    if "harvest" in results:
        h = results["harvest"]["speedup_vs_naive"]
        put(
            "harvest_speedup_vs_naive",
            h["all_threads"]["bf16"]["median"],
            h["one_thread"]["bf16"]["median"],
            ">= 8",
            "paired tokens/s: our path, bf16 models, vs naive full fp32 forward on padded batches",
        )
    if "train" in results:
        t, one = results["train"]["8192"], results["train"]["8192_one_thread"]
        put(
            "train_speedup_vs_dense",
            t["speedup_vs_dense"],
            one["speedup_vs_dense"],
            ">= 3",
            "DFC step vs dense reference step, F=8192, batch 1024, fp32 CPU",
        )
        put(
            "train_fraction_of_encoder_limit",
            t["fraction_of_encoder_limit"],
            one["fraction_of_encoder_limit"],
            ">= 0.5",
            "DFC tokens/s over tokens/s of the bare x·W_enc matmuls of both models",
        )
        put(
            "train_loss_rel_diff",
            t["loss_rel_diff_final"],
            one["loss_rel_diff_final"],
            "<= 0.01",
            f"|loss DFC − loss reference| / loss reference after {t['steps']} lock-step steps"
            f" ({one['steps']} on one thread)",
        )
        vs = results["train"].get("vs_dfc_learning", {})
        if "speedup" in vs:
            put(
                "train_speedup_vs_dfc_learning",
                vs["speedup"],
                None,
                ">= 5",
                f"tokens/s of a training step vs dfc_learning's DedicatedFeatureBatchTopKCrossCoder + "
                f"BatchTopKCrossCoderTrainer: d={vs['d_model']} both models, F={vs['dict_size']}, k={vs['k']}, "
                f"batch {vs['batch']}, fp32, {vs['threads']} threads; load average {vs['loadavg']['after'][0]:.1f}",
            )
    if "diff" in results:
        d = results["diff"]["nf4"]
        put(
            "diff_latency_ratio",
            d["all_threads"]["median"],
            d["one_thread"]["median"],
            "<= 1.3",
            "prompt diff / the two truncated forwards, 64-token prompt, NF4 models (the default)",
        )
    if "memory" in results:
        nf4_dtype = results["memory"]["load"]["nf4"].get("compute_dtype", "bf16")
        put(
            "memory_ratio_nf4_vs_fp32",
            results["memory"]["ratio_nf4_vs_fp32"],
            None,
            f"<= {MEMORY_TARGET}",
            f"peak RSS of loading the demo pair in NF4 (computing in {nf4_dtype}) / in fp32, largest of 3 fresh "
            "processes each",
        )
        worst = max(abs(v - 1) for acc in results["memory"]["planner_accuracy"].values() for k, v in acc.items()
                    if not k.startswith("runtime"))  # fmt: skip
        put(
            "memory_planner_worst_error",
            worst,
            None,
            "<= 0.25",
            "max |estimate / measured − 1| over load, harvest and train peaks",
        )
    if "dtype" in results:
        d = results["dtype"]
        put(
            "dtype_bf16_time_over_fp32",
            d["smollm2_forward"]["bf16_time_over_fp32"],
            d["matmul_one_thread"]["128x576x576"]["bf16_time_over_fp32"],
            "info",
            f"SmolLM2 truncated forward, bf16 time / fp32 time (1-thread column: a 128x576x576 matmul); "
            f"CPU {d['cpu']['model']}, bf16 flags {d['cpu']['bf16_flags'] or 'none'}; auto picks {d['auto']['dtype']}",
        )
    return metrics


def print_table(results: dict, metrics: dict) -> None:
    """Print the headline metrics and the per-setting details."""
    m = results["machine"]
    print(
        f"\nCrossDiff perf ({results['mode']}): {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, "
        f"{results['date']}"
    )
    print(f"{'metric':<34} {'all thr.':>9} {'1 thread':>9}  target")
    for name, metric in metrics.items():
        one = metric["value_one_thread"]
        one = f"{one:9.3f}" if one is not None else f"{'-':>9}"
        print(f"{name:<34} {metric['value']:9.3f} {one}  {metric['target']:<7} {metric['note']}")
    if "harvest" in results:
        h = results["harvest"]
        print(
            f"\nharvest ({h['windows']} windows, {h['paired_tokens']} paired tokens): "
            "speedup vs naive, median [min–max]"
        )
        for setting, speedups in h["speedup_vs_naive"].items():
            print(f"  {setting}: " + "   ".join(f"{name} {s['median']:.2f}× [{s['min']:.2f}–{s['max']:.2f}]"
                                             for name, s in speedups.items()))  # fmt: skip
        for name, err in h["relative_error_vs_naive"].items():
            print(f"  rows vs naive fp32, {name}: relative error A {err['a']:.4f}, B {err['b']:.4f}")
        pad = h["padded_tokens"]
        print(f"  tokens run / paired-window tokens: naive {pad['naive']['run'] / pad['naive']['real']:.2f}, "
              f"ours {pad['ours']['run'] / pad['ours']['real']:.2f}")  # fmt: skip
    if "train" in results:
        print("\ntraining step (fp32 CPU, batch 1024, k=32; DFC 5%/90%/5%):")
        for size, t in results["train"].items():
            if size == "vs_dfc_learning":
                continue
            print(
                f"  F={size:<16} {t['speedup_vs_dense']:5.2f}× dense, {t['fraction_of_encoder_limit']:.2f} of "
                f"encoder limit, {t['dfc_tokens_per_s']:6.0f} tok/s, loss diff {t['loss_rel_diff_final']:.1e} "
                f"after {t['steps']} steps" + (f", load {t['loadavg'][0]:.1f}" if "loadavg" in t else "")
            )
        vs = results["train"].get("vs_dfc_learning")
        if vs is not None and "speedup" in vs:
            spread = vs["speedup_per_step"]
            print(
                f"  vs dfc_learning's trainer (d={vs['d_model']}, F={vs['dict_size']}, k={vs['k']}, batch {vs['batch']}, "
                f"{vs['threads']} threads, {vs['steps']} steps): {vs['speedup']:.2f}× (per step {spread['min']:.2f}–"
                f"{spread['max']:.2f}×), {vs['crossdiff_tokens_per_s']:.0f} vs {vs['dfc_learning_tokens_per_s']:.0f} tok/s, "
                f"load {vs['loadavg']['before'][0]:.1f} → {vs['loadavg']['after'][0]:.1f}"
            )
        elif vs is not None:
            print(f"  vs dfc_learning's trainer: skipped ({vs['skipped']})")
    if "diff" in results:
        for name, d in results["diff"].items():
            print(f"\ndiff latency ratio, {name} models ({d['tokens_a']}/{d['tokens_b']} tokens): " + ", ".join(
                f"{setting} {d[setting]['median']:.3f} [{d[setting]['min']:.3f}–{d[setting]['max']:.3f}]"
                for setting in THREAD_SETTINGS), end="")  # fmt: skip
        print()
    if "dtype" in results:
        d = results["dtype"]
        cpu = d["cpu"]
        print(
            f"\ncompute dtype on {cpu['model']} ({cpu['cores']} cores, torch capability {cpu['torch_capability']}, "
            f"bf16 flags: {', '.join(cpu['bf16_flags']) or 'none'}):"
        )
        for shape, m in d["matmul_one_thread"].items():
            print(
                f"  matmul {shape}, one thread: bf16 {m['bf16_gflops']:.2f} GFLOP/s, fp32 {m['fp32_gflops']:.2f} "
                f"GFLOP/s (bf16 takes {m['bf16_time_over_fp32']:.1f}× as long)"
            )
        f = d["smollm2_forward"]
        print(
            f"  SmolLM2 truncated forward, {f['tokens']} tokens: bf16 {f['bf16_s']:.2f} s, fp32 {f['fp32_s']:.2f} s "
            f"({f['bf16_time_over_fp32']:.1f}×)"
        )
        print(f"  auto: {d['auto']['dtype']} ({d['auto']['reason']})")
    if "memory" in results:
        mem = results["memory"]
        print("\nmemory (peak RSS of loading the pair, then of one forward pass; planner estimate / measured):")
        for name, load in mem["load"].items():
            acc = mem["planner_accuracy"][name]
            print(
                f"  {name:<5} load {load['load_peak'] / 2**20:6.0f} MiB (of 3 runs; least "
                f"{load.get('load_peak_min', load['load_peak']) / 2**20:.0f}; runtime {load['runtime'] / 2**20:.0f}), "
                f"forward {load['forward_peak'] / 2**20:6.0f} MiB; planner {acc['load_estimate_over_measured']:.2f} "
                f"and {acc['harvest_estimate_over_measured']:.2f}"
            )
        for name, c in mem.get("convert", {}).items():
            print(
                f"  converting {name}'s GGUF ({c['gguf_bytes'] / 2**20:.0f} MiB) once: peak {c['convert_peak'] / 2**20:.0f} "
                f"MiB (runtime {c['runtime'] / 2**20:.0f}), {c['seconds']:.0f} s"
            )
        print(
            f"  DFC training F=8192 batch 1024: peak {mem['train_8192']['train_peak'] / 2**20:.0f} MiB; planner "
            f"{mem['planner_accuracy']['train_8192']['train_estimate_over_measured']:.2f}"
        )
        for size, c in mem["crosscoder"].items():
            print(
                f"  crosscoder F={size:>6}: {c['params'] / 1e6:6.1f} M params, "
                f"params + Adam {c['params_plus_adam_bytes'] / 2**20:6.0f} MiB"
            )
        for name, e in mem["paper_pairs"].items():
            print(f"  planner, {name} (GPU, NF4): peak {e['peak_bytes'] / 2**30:.1f} GiB ({e['peak_phase']})")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one memory measurement) and return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster runs (a few minutes on CPU)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["harvest", "train", "diff", "memory", "dtype"],
        default=None,
        help="run only these sections (the others are kept from --out when it exists)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    parser.add_argument(
        "--dfc-learning",
        type=Path,
        default=os.environ.get(DFC_LEARNING_ENV) or None,
        metavar="PATH",
        help=f"a checkout of superkaiba/dfc_learning to time its trainer against ours (default ${DFC_LEARNING_ENV}; "
        "without it that row is skipped)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "load":
            result = child_load_memory(rest[0], int(rest[1]))
        elif kind == "convert":
            result = child_convert_memory(rest[0])
        else:
            result = child_train_memory(int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return 0
    mode = QUICK if args.quick else FULL
    sections = args.only or ["memory", "train", "harvest", "diff", "dtype"]
    stamp = {"machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    results: dict = {"mode": mode.name, **stamp}
    if "memory" in sections:
        results["memory"] = bench_memory(mode)
    if "train" in sections:
        results["train"] = bench_train(mode, args.dfc_learning)
    if "dtype" in sections:
        results["dtype"] = bench_dtype(mode)
    if "harvest" in sections or "diff" in sections:
        names = ("nf4", "bf16", "fp32") if "harvest" in sections else ("nf4", "bf16")
        pairs = load_pairs(names)
        if "harvest" in sections:
            results["harvest"] = bench_harvest(mode, pairs)
        if "diff" in sections:
            results["diff"] = bench_diff(mode, pairs)
    earlier = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.only:  # keep the other sections of an earlier run, with their own dates
        kept = {
            k: v for k, v in earlier.get("details", {}).items() if k in ("memory", "train", "harvest", "diff", "dtype")
        }
        results = {**kept, **results}
    metrics = headline(results, stamp)
    for name in metrics:
        if name.split("_")[0] not in sections and name in earlier:
            metrics[name] = earlier[name]
    if "train_speedup_vs_dfc_learning" in earlier and "train_speedup_vs_dfc_learning" not in metrics:
        metrics["train_speedup_vs_dfc_learning"] = earlier["train_speedup_vs_dfc_learning"]  # skipped this run
    results = {**metrics, "details": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results["details"], metrics)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
