"""DFC vs standard crosscoder on the same stored activations of the real demo pair.

    python -m benchmarks.real_pair.run --store runs/store-demo [--steps 400] [--dict-size 1024] [--k 32]

Trains both on the same store with the same seed and token budget, then reports on the held-out
rows: FVU per model, L0, the dead fraction and the fraction of latents alive in each block, and the
relative-decoder-norm histogram of the standard crosscoder (saved as `rel_norm_hist.png`). Writes
`results.json` and `RESULTS.md` next to this file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.synthetic import reconstruction_report, relative_decoder_norms
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

HERE = Path(__file__).resolve().parent


def evaluate(cc: CrossCoder, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Return (held-out FVU per model, L0, dead fraction and alive fraction per block; the alive mask [F])."""
    report, alive_F = reconstruction_report(cc.eval(), x_a, x_b)
    blocks = {"a_exclusive": cc.slice_a_exclusive, "shared": cc.slice_shared, "b_exclusive": cc.slice_b_exclusive}
    alive = {
        f"alive_{name}": float(alive_F[s].float().mean()) if s.stop > s.start else None for name, s in blocks.items()
    }
    return report.to_dict() | alive, alive_F


def save_histogram(rel_F: torch.Tensor, alive_F: torch.Tensor, path: Path, title: str) -> None:
    """Save the relative-decoder-norm histogram as a PNG, alive latents stacked under dead ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=120)
    ax.hist(
        [rel_F[alive_F].numpy(), rel_F[~alive_F].numpy()],
        bins=50,
        range=(0, 1),
        stacked=True,
        color=["#4c72b0", "#bbbbbb"],
        label=["alive on held-out rows", "dead"],
    )
    ax.legend(fontsize=8)
    ax.axvline(0.1, color="#c44e52", ls="--", lw=1)
    ax.axvline(0.9, color="#c44e52", ls="--", lw=1)
    ax.set_xlabel("relative decoder norm  ‖d_A‖ / (‖d_A‖ + ‖d_B‖)")
    ax.set_ylabel("latents")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Train both crosscoders, evaluate, and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", default="runs/real_pair")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--dict-size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dead-after-tokens",
        type=int,
        default=100_000,
        help="tokens without firing before a latent counts as dead (auxk and relocation act on it)",
    )
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also train the DFC with auxk reviving exclusive latents (as the shipped DFC), "
        "and without relocation of one-model shared latents",
    )
    args = parser.parse_args()

    store = PairedActivationStore(args.store)
    x_a, x_b = store.held_out()
    runs = {"dfc_5_5": (0.05, 0.05, {}), "standard": (0, 0, {})}
    if args.ablation:
        runs["dfc_5_5_auxk_exclusive"] = (0.05, 0.05, {"auxk_exclusive": True})
        runs["dfc_5_5_no_relocation"] = (0.05, 0.05, {"relocate_every": args.steps + 1})
    results = {}
    for name, (ex_a, ex_b, overrides) in runs.items():
        config = CrossCoderConfig(
            d_a=store.d_a, d_b=store.d_b, dict_size=args.dict_size, k=args.k, exclusive_a=ex_a, exclusive_b=ex_b
        )
        train_config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            dead_after_tokens=args.dead_after_tokens,
            **overrides,
        )
        result = train(config, train_config, store, Path(args.out) / name, show_tqdm=True)
        results[name], alive_F = evaluate(result.crosscoder, x_a, x_b)
        if name == "standard":
            rel = relative_decoder_norms(result.crosscoder)
            results[name]["rel_norm_a_like"] = float((rel > 0.9).float().mean())
            results[name]["rel_norm_b_like"] = float((rel < 0.1).float().mean())
            save_histogram(
                rel,
                alive_F,
                HERE / "rel_norm_hist.png",
                f"standard crosscoder, {args.dict_size} latents, {len(store)} paired tokens",
            )
    meta = {
        "store": store.summary(),
        "steps": args.steps,
        "dict_size": args.dict_size,
        "k": args.k,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "dead_after_tokens": args.dead_after_tokens,
        "held_out_rows": int(x_a.shape[0]),
        "machine": f"{platform.platform()} · {torch.get_num_threads()} threads · torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
    }
    (HERE / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    lines = [
        "# DFC vs standard crosscoder on the real demo pair",
        "",
        f"`python -m benchmarks.real_pair.run --store {args.store} --steps {args.steps} --dict-size {args.dict_size} "
        f"--k {args.k}{' --ablation' if args.ablation else ''}`",
        "",
        f"{len(store)} paired tokens of SmolLM2-135M-Instruct (layer {store.meta['model_a']['layer']}) × "
        f"Gemma-3-270M (layer {store.meta['model_b']['layer']}), held-out rows {x_a.shape[0]}; {meta['machine']}; {meta['date']}.",
        "",
        "| crosscoder | FVU A | FVU B | L0 | dead | alive A-excl | alive shared | alive B-excl |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "–" if v is None else f"{v:.3f}"
    for name, r in results.items():
        lines.append(
            f"| {name} | {fmt(r['fvu_a'])} | {fmt(r['fvu_b'])} | {r['l0']:.1f} | {fmt(r['dead_fraction'])} | "
            f"{fmt(r['alive_a_exclusive'])} | {fmt(r['alive_shared'])} | {fmt(r['alive_b_exclusive'])} |"
        )
    std = results["standard"]
    lines += [
        "",
        f"Standard crosscoder latents that look exclusive by relative decoder norm: "
        f"{std['rel_norm_a_like']:.1%} A-like (> 0.9), {std['rel_norm_b_like']:.1%} B-like (< 0.1).",
        "",
        "![relative decoder norm histogram](rel_norm_hist.png)",
        "",
    ]
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
