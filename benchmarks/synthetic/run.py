"""Ground truth: does the DFC recover planted shared and model-exclusive features better than a standard crosscoder?

`python -m benchmarks.synthetic.run [--quick]` trains, on synthetic paired activations with a known
dictionary (`crossdiff_core.synthetic`: d_a=576, d_b=640, 3% A-only and 3% B-only features), the DFC
with 1%, 5% and 10% exclusive blocks and the standard crosscoder with BatchTopK and with L1, each on
the same token budget and the same seeds, and scores every run against the true directions:
recovery (cosine ≥ 0.9) of shared, A-only and B-only features, whether exclusive features land on
the right side (DFC: in their exclusive block; standard: on a latent whose relative decoder norm is
> 0.9 or < 0.1), false exclusives, and held-out FVU, L0 and dead fraction. It writes
`results.json`, `RESULTS.md` and `relative_norms.png` next to this file (`--quick`: `*_quick.*`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.synthetic import (
    SyntheticConfig,
    SyntheticPair,
    reconstruction_report,
    recovery_report,
    relative_decoder_norms,
)
from crossdiff_core.train import TrainConfig, train

HERE = Path(__file__).resolve().parent
TARGET_EXCLUSIVE = 0.90
"""The DFC at its best partition must put at least this fraction of exclusive features in their block."""

TARGET_SHARED_GAP = 0.02
"""... while recovering at most this much less of the shared features than the best standard crosscoder."""


@dataclass
class Variant:
    """One crosscoder setup of the comparison."""

    name: str
    """Label in tables and in results.json."""

    sparsity: str
    """"batchtopk" or "l1"."""

    exclusive: float
    """Fraction of latents in EACH exclusive block (0 = standard crosscoder)."""

    ablation: tuple[tuple[str, object], ...] = ()
    """`TrainConfig` fields changed from the defaults (an ablation; never picked as the best partition)."""


VARIANTS = (
    Variant("dfc-1%", "batchtopk", 0.01),
    Variant("dfc-5%", "batchtopk", 0.05),
    Variant("dfc-10%", "batchtopk", 0.10),
    Variant("standard-batchtopk", "batchtopk", 0.0),
    Variant("standard-l1", "l1", 0.0),
    Variant("dfc-5%, auxk on exclusive too", "batchtopk", 0.05, (("auxk_exclusive", True),)),
    Variant("dfc-5% without relocation", "batchtopk", 0.05, (("relocate_every", 10**9),)),
)


@dataclass
class Benchmark:
    """The data, crosscoder size and training budget shared by every run."""

    data: SyntheticConfig
    """The synthetic pair (its seed is replaced by each run's seed)."""

    dict_size: int
    """Latents F of every crosscoder."""

    k: int
    """BatchTopK's mean active latents per token (the data's mean active features per token)."""

    l1_coeff: float
    """L1 weight of the L1 baseline (held-out L0 about 2k; a weight that brings L0 down to k shrinks more features away)."""

    steps: int
    """Optimizer steps of every run."""

    batch_size: int
    """Tokens per step; steps × batch_size is the token budget."""

    lr: float
    """Adam learning rate of every run."""

    dead_after_tokens: int
    """Tokens without firing after which a latent is dead (auxk and relocation act on dead latents)."""

    seeds: tuple[int, ...]
    """Each seed draws a new true dictionary, crosscoder initialization and data stream."""

    held_out_tokens: int
    """Held-out tokens for FVU, L0 and which latents are alive."""


FULL = Benchmark(
    data=SyntheticConfig(d_a=576, d_b=640, n_features=1024, features_per_token=8.0),
    dict_size=1536,
    k=8,
    l1_coeff=1.0,
    steps=1200,
    batch_size=512,
    lr=2e-3,
    dead_after_tokens=25_000,
    seeds=(0, 1, 2),
    held_out_tokens=16_384,
)

QUICK = dataclasses.replace(
    FULL,
    data=SyntheticConfig(d_a=96, d_b=128, n_features=256, features_per_token=4.0),
    dict_size=384,
    k=4,
    steps=1500,
    lr=1e-2,
    seeds=(0, 1),
    held_out_tokens=8192,
)


def run_one(bench: Benchmark, variant: Variant, seed: int) -> dict:
    """Train `variant` on the seed-`seed` synthetic pair and return its scores (and latent data for the figure)."""
    torch.set_num_threads(1)
    pair = SyntheticPair(dataclasses.replace(bench.data, seed=seed))
    config = CrossCoderConfig(
        d_a=bench.data.d_a, d_b=bench.data.d_b, dict_size=bench.dict_size, exclusive_a=variant.exclusive,
        exclusive_b=variant.exclusive, sparsity=variant.sparsity, k=bench.k, l1_coeff=bench.l1_coeff,
    )  # fmt: skip
    train_config = TrainConfig(
        steps=bench.steps, batch_size=bench.batch_size, lr=bench.lr, seed=seed, device="cpu",
        dead_after_tokens=bench.dead_after_tokens, checkpoint_every=bench.steps, log_every=bench.steps,
        **dict(variant.ablation),
    )  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out_dir:
        crosscoder = train(config, train_config, pair, out_dir).crosscoder
    seconds = time.perf_counter() - start
    x_a_ND, x_b_ND = pair.held_out(bench.held_out_tokens)
    reconstruction, alive_F = reconstruction_report(crosscoder, x_a_ND, x_b_ND)
    result = {
        "variant": variant.name,
        "seed": seed,
        "train_seconds": seconds,
        **reconstruction.to_dict(),
        **recovery_report(crosscoder, pair.truth, alive_F).to_dict(),
    }
    if variant.exclusive == 0:
        result["latents"] = _latent_kinds(crosscoder, pair, alive_F)
    return result


def _latent_kinds(crosscoder: CrossCoder, pair: SyntheticPair, alive_F: torch.Tensor) -> dict:
    """Return the relative decoder norm of every alive latent and the kind of true feature it matches, for the figure."""
    truth = pair.truth
    with torch.no_grad():
        cos_a_FG = nnf.normalize(crosscoder.W_dec_a, dim=1) @ truth.dirs_a_GD.T
        cos_b_FG = nnf.normalize(crosscoder.W_dec_b, dim=1) @ truth.dirs_b_GD.T
    kinds = []
    for latent in range(crosscoder.dict_size):
        best_a, feature_a = cos_a_FG[latent].max(0)
        best_b, feature_b = cos_b_FG[latent].max(0)
        if best_a >= 0.9 and feature_a < truth.n_a_only:
            kinds.append("A-only")
        elif best_b >= 0.9 and feature_b >= truth.n_shared:
            kinds.append("B-only")
        elif max(best_a, best_b) >= 0.9:
            kinds.append("shared")
        else:
            kinds.append("none")
    relative_F = relative_decoder_norms(crosscoder)
    alive = alive_F.nonzero().squeeze(1).tolist()
    return {"relative_norm": [float(relative_F[j]) for j in alive], "kind": [kinds[j] for j in alive]}



METRICS = (
    "shared_recovery", "a_only_recovery", "b_only_recovery", "a_only_correct_block", "b_only_correct_block",
    "exclusive_correct_block", "false_exclusives", "n_exclusive_latents", "fvu_a", "fvu_b", "l0", "dead_fraction",
    "train_seconds",
)  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    """Return per-variant mean and standard deviation (over seeds) of every metric, and the headline numbers."""
    per_variant = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant.name]
        per_variant[variant.name] = {
            "exclusive_fraction": variant.exclusive,
            "sparsity": variant.sparsity,
            "judged_by": mine[0]["judged_by"],
            **{metric: _mean_std([run[metric] for run in mine]) for metric in METRICS},
        }
    dfcs = [v.name for v in VARIANTS if v.exclusive > 0 and not v.ablation]
    standards = [v.name for v in VARIANTS if v.exclusive == 0]
    best_dfc = max(dfcs, key=lambda name: (per_variant[name]["exclusive_correct_block"]["mean"],
                                           per_variant[name]["shared_recovery"]["mean"]))  # fmt: skip
    best_standard = max(standards, key=lambda name: per_variant[name]["shared_recovery"]["mean"])
    exclusive = per_variant[best_dfc]["exclusive_correct_block"]["mean"]
    shared = per_variant[best_dfc]["shared_recovery"]["mean"]
    best_shared = per_variant[best_standard]["shared_recovery"]["mean"]
    return {
        "dfc_best_partition": best_dfc,
        "dfc_exclusive_recovery_correct_block": exclusive,
        "dfc_shared_recovery": shared,
        "best_crosscoder": best_standard,
        "best_crosscoder_shared_recovery": best_shared,
        "target_met": exclusive >= TARGET_EXCLUSIVE and shared >= best_shared - TARGET_SHARED_GAP,
        "per_config": per_variant,
    }


def _mean_std(values: list[float]) -> dict:
    """Return {"mean", "std", "values"} of a list (std 0 for a single value)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def markdown_table(summary: dict) -> str:
    """Return the results as a Markdown table (mean ± std over seeds), one row per crosscoder."""
    rows = [
        "| crosscoder | shared recovered | A-only recovered | B-only recovered | exclusive in correct block "
        "| false exclusives | FVU A | FVU B | L0 | dead |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, stats in summary["per_config"].items():
        cells = [_percent(stats[m]) for m in ("shared_recovery", "a_only_recovery", "b_only_recovery",
                                              "exclusive_correct_block")]  # fmt: skip
        cells.append(f"{stats['false_exclusives']['mean']:.1f} ± {stats['false_exclusives']['std']:.1f}")
        cells += [f"{stats[m]['mean']:.3f} ± {stats[m]['std']:.3f}" for m in ("fvu_a", "fvu_b")]
        cells.append(f"{stats['l0']['mean']:.1f}")
        cells.append(_percent(stats["dead_fraction"]))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _percent(stat: dict) -> str:
    """Return a mean ± std fraction as percentages."""
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}%"


def plot_relative_norms(runs: list[dict], path: Path) -> None:
    """Write a histogram of the standard crosscoders' relative decoder norms, stacked by matched true feature kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    standards = [v.name for v in VARIANTS if v.exclusive == 0]
    figure, axes = plt.subplots(1, len(standards), figsize=(6 * len(standards), 4), sharey=True)
    colors = {"A-only": "tab:blue", "shared": "tab:gray", "B-only": "tab:orange", "none": "tab:red"}
    for axis, name in zip(axes, standards):
        latents = {"relative_norm": [], "kind": []}
        for run in runs:
            if run["variant"] == name:
                for key in latents:
                    latents[key] += run["latents"][key]
        stacks = [[r for r, k in zip(latents["relative_norm"], latents["kind"]) if k == kind] for kind in colors]
        axis.hist(stacks, bins=50, range=(0, 1), stacked=True, color=list(colors.values()),
                  label=[f"matches {kind} feature" if kind != "none" else "matches none" for kind in colors])  # fmt: skip
        for bound in (0.1, 0.9):
            axis.axvline(bound, color="black", linestyle="--", linewidth=0.8)
        axis.set_yscale("log")
        axis.set_title(f"{name}: alive latents, all seeds")
        axis.set_xlabel("relative decoder norm ‖d_A‖ / (‖d_A‖ + ‖d_B‖)")
    axes[0].set_ylabel("latents")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _run_job(job: tuple[Benchmark, Variant, int]) -> dict:
    """Return `run_one` of a (benchmark, variant, seed) job (a picklable entry point for worker processes)."""
    return run_one(*job)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write results.json, RESULTS.md and the figure; return the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small widths (96/128) and 2 seeds: a few minutes")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel training runs")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite RESULTS.md from the existing results.json (no training)")
    args = parser.parse_args(argv)
    bench = QUICK if args.quick else FULL
    suffix = "_quick" if args.quick else ""
    if args.render_only:
        summary = json.loads((HERE / f"results{suffix}.json").read_text())
        (HERE / f"RESULTS{suffix}.md").write_text(results_markdown(summary, args.quick))
        return summary
    # Longest runs first so the last worker is not left alone with an L1 run.
    jobs = sorted(((bench, v, s) for v in VARIANTS for s in bench.seeds), key=lambda job: job[1].sparsity != "l1")
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        runs = []
        for run in pool.imap_unordered(_run_job, jobs):
            runs.append(run)
            print(f"[{time.perf_counter() - start:6.0f}s] {run['variant']:>28} seed {run['seed']}: "
                  f"shared {run['shared_recovery']:.3f}, exclusive in block {run['exclusive_correct_block']:.3f}, "
                  f"false exclusives {run['false_exclusives']}", flush=True)  # fmt: skip
    runs.sort(key=lambda run: ([v.name for v in VARIANTS].index(run["variant"]), run["seed"]))
    summary = summarize(runs)
    wall = time.perf_counter() - start
    summary["environment"] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "torch": torch.__version__,
        "workers": args.workers,
        "wall_seconds": wall,
    }
    summary["benchmark"] = _benchmark_dict(bench)
    summary["runs"] = [{k: v for k, v in run.items() if k != "latents"} for run in runs]
    (HERE / f"results{suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_relative_norms(runs, HERE / f"relative_norms{suffix}.png")
    (HERE / f"RESULTS{suffix}.md").write_text(results_markdown(summary, args.quick))
    print(markdown_table(summary))
    print(f"target met: {summary['target_met']} ({wall:.0f} s)")
    return summary


def _benchmark_dict(bench: Benchmark) -> dict:
    """Return the benchmark settings as a JSON-serializable dict."""
    return dataclasses.asdict(bench) | {"seeds": list(bench.seeds)}


FINDINGS = """## What we learned

- **Exclusive latents start out dead.** BatchTopK selects on `f · (‖d_A‖ + ‖d_B‖)`. At
  initialization every decoder row has the same norm, so an exclusive latent, which has one decoder,
  scores about half as much as a shared latent with the same activation. It is almost never selected,
  so it never learns. The "dfc-5% without relocation" row shows the outcome: not one exclusive feature
  lands in an exclusive block, while shared latents learn the exclusive features about as well as a
  standard crosscoder does.
- **The auxk loss is the wrong tool to revive them.** Early in training, one model's residual is
  mostly *shared* content not learned yet. Exclusive latents revived by auxk on that residual turn
  into copies of one side of shared features. The "auxk on exclusive too" row puts 96.8% of exclusive
  features in their block, but it also makes 52 false exclusives (of 154 exclusive latents) and
  recovers 4 points fewer shared features, outside the 2-point target. On the test configuration
  (`tests/test_synthetic_recovery.py`), doubling the exclusive decoder rows at initialization cut the
  false exclusives from 5 to 2 but placed no more features. auxk now revives dead *shared* latents
  only, by default (`TrainConfig.auxk_exclusive=False`).
- **The auxk weight was too small by a factor d_A + d_B.** The reconstruction loss is in units where
  each model's variance is d_m, while the auxk loss is a ratio. It is now weighted by
  `auxk_coeff · (d_A + d_B)`, so `auxk_coeff` means what it means in Gao et al. (2024).
- **What fixed it: relocation.** Every `relocate_every` steps, an alive shared latent whose relative
  decoder norm is beyond 0.9 (it writes to one model only) moves, with its encoder row, decoder row,
  bias and Adam moments, into a dead latent of that model's exclusive block. The shared slot it
  leaves is re-drawn and revived by auxk. The block then holds what the standard crosscoder's
  relative norm finds, with no false exclusives, and by construction it cannot write to the other model.
- **Partition size matters.** With 1% blocks (15 latents per side for 31 true exclusive features)
  the block is simply too small: 48%. With 10% blocks (154 per side) it drops to 80%, and fewer
  exclusive features are learned at all (82-86% against 91-96%). Our reading, not verified yet:
  more dead slots take in one-sided latents before they have converged. Size the blocks at a
  few times the number of exclusive features you expect.
- **Normalization.** Each model is scaled so its variance around its mean is d_m. On real activations
  Gemma-3's constant component is about 17 times its variance; the earlier scaling by the raw second
  moment tilted every latent's decoder norms toward SmolLM2. The synthetic activations have a small
  mean, so here the change moved rows by at most 5 points, mostly within the spread over seeds (the
  first run of this benchmark, with the raw scaling, gave the DFC 91.4% in block and the standard
  crosscoder 94.6%; the largest move was dfc-10%, from 84.9% to 80.1%).
- **On clean synthetic data the standard BatchTopK crosscoder does as well, by relative norm.**
  Where exclusive features are exactly one-sided, the relative decoder norm already separates them
  (93.0% against 91.9%). The DFC's value is the guarantee: an exclusive latent cannot borrow the
  other model's decoder, whereas on real activations the relative norm mixes shrinkage and
  noise with exclusivity (see Latent Scaling in `crossdiff_core/analysis/SCORES.md`). L1 recovers
  fewer features at a higher L0.
"""


def results_markdown(summary: dict, quick: bool) -> str:
    """Return RESULTS.md: how to reproduce, the setup, the headline, the table and what we learned."""
    env, bench = summary["environment"], summary["benchmark"]
    data = bench["data"]
    flag = " --quick" if quick else ""
    verdict = "met" if summary["target_met"] else "NOT met"
    suffix = "_quick" if quick else ""
    return f"""# Synthetic ground truth: DFC vs standard crosscoder

Reproduce (writes this file, `results{suffix}.json` and `relative_norms{suffix}.png`):

```bash
python -m benchmarks.synthetic.run{flag}
```

{env['date']} · {env['machine']} · torch {env['torch']} · {env['workers']} worker processes · {env['wall_seconds'] / 60:.1f} min wall

## Setup

Paired activations from a known dictionary (`crossdiff_core.synthetic`): d_A = {data['d_a']}, d_B = {data['d_b']},
{data['n_features']} true features of which {100 * data['a_only']:.0f}% exist only in A and {100 * data['b_only']:.0f}% only in B (the rest
are shared: one random direction per model, firing together); power-law firing frequencies
(range ×{data['frequency_range']:.0f}), {data['features_per_token']:.0f} active features per token on average, log-normal magnitudes
(σ {data['magnitude_sigma']}), per-model feature norms (σ {data['norm_sigma']}), noise at {100 * data['noise']:.0f}% of the signal variance.
Every crosscoder has F = {bench['dict_size']} latents and trains {bench['steps']} steps × {bench['batch_size']} tokens
(lr {bench['lr']}, latents dead after {bench['dead_after_tokens']} tokens); BatchTopK k = {bench['k']}, L1 coefficient
{bench['l1_coeff']}. Seeds {', '.join(map(str, bench['seeds']))}: each draws a new dictionary, initialization and data stream.

A true feature is recovered when an alive latent's decoder direction has cosine ≥ 0.9 with it in each
model it lives in (the same latent in both models for a shared feature). Exclusive in correct block:
DFC, an A-only feature recovered by an A-exclusive latent (B likewise); standard crosscoder, by a
latent with relative decoder norm > 0.9 (< 0.1 for B). False exclusives: alive exclusive (or
exclusive-looking) latents whose direction matches a shared feature. FVU, L0 and dead fraction on
{bench['held_out_tokens']} held-out tokens.

## Headline

The DFC at its best partition ({summary['dfc_best_partition']}) puts
**{100 * summary['dfc_exclusive_recovery_correct_block']:.1f}%** of the exclusive features in their
exclusive block (target ≥ {100 * TARGET_EXCLUSIVE:.0f}%) and recovers **{100 * summary['dfc_shared_recovery']:.1f}%** of the shared
features, against {100 * summary['best_crosscoder_shared_recovery']:.1f}% for the best standard crosscoder ({summary['best_crosscoder']};
target: within {100 * TARGET_SHARED_GAP:.0f} points). Target {verdict}.

## All configurations (mean ± std over seeds)

{markdown_table(summary)}

![relative decoder norms of the standard crosscoders](relative_norms{suffix}.png)

{FINDINGS}
"""


if __name__ == "__main__":
    main()
