"""Build the DFC that ships in `pretrained/smollm2-135m__gemma3-270m/`: harvest, sweep, train, index.

    python scripts/build_pretrained.py [--store runs/store-demo-v2] [--tokens 160000] [--sweep-only]

1. Harvests `--tokens` paired tokens of the demo pair (NF4) over `builtin:demo` into `--store`
   (skipped when the store is complete; resumed when it was interrupted).
2. Trains each configuration of `SWEEP` (DFCs and a standard-crosscoder baseline) on the same
   store and seed, and scores it on the store's held-out rows: FVU per model, L0, dead fraction and the alive fraction of each block. The table
   goes to `runs/pretrained-sweep/sweep.json` and is printed.
3. Copies the chosen configuration (`--pick NAME`, default `CHOSEN`) into the shipped folder, with
   fp16 weights, scores it again, and builds its feature index on windows the crosscoder never saw.

The model card (`README.md` in the folder) is written by hand from these numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.real_pair.run import evaluate  # noqa: E402
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig  # noqa: E402
from crossdiff_core.store import PairedActivationStore  # noqa: E402
from crossdiff_core.synthetic import relative_decoder_norms  # noqa: E402
from crossdiff_core.train import TrainConfig, train  # noqa: E402

SHIPPED = ROOT / "pretrained" / "smollm2-135m__gemma3-270m"
SWEEP = {
    # name: (dict_size, k, steps, fraction of latents in each exclusive block)
    "F1024-k32": (1024, 32, 400, 0.05),
    "F2048-k32": (2048, 32, 600, 0.05),
    "F2048-k64": (2048, 64, 600, 0.05),
    "standard-F2048-k32": (2048, 32, 600, 0.0),  # the baseline the card compares against
}
CHOSEN = "F2048-k32"
BATCH = 1024
DEAD_AFTER_TOKENS = 100_000
INDEX_WINDOWS = 96


def held_out_scores(crosscoder: CrossCoder, store: PairedActivationStore) -> dict:
    """Return held-out FVU per model, L0, dead fraction, alive fraction per block and the share of one-sided latents."""
    scores, _ = evaluate(crosscoder, *store.held_out())
    relative_F = relative_decoder_norms(crosscoder)
    scores["relative_norm_beyond_0.9"] = float(((relative_F > 0.9) | (relative_F < 0.1)).float().mean())
    return scores


def train_one(store: PairedActivationStore, name: str, out_dir: Path) -> tuple[CrossCoder, dict]:
    """Train the sweep configuration `name` into `out_dir`; return it and its held-out scores."""
    dict_size, k, steps, exclusive = SWEEP[name]
    config = CrossCoderConfig(d_a=store.d_a, d_b=store.d_b, dict_size=dict_size, k=k,
                              exclusive_a=exclusive, exclusive_b=exclusive)  # fmt: skip
    # auxk revives exclusive latents too: at ~100k tokens no shared latent becomes one-sided, so
    # relocation alone would leave the exclusive blocks dead (see benchmarks/synthetic/RESULTS.md for
    # what this costs on ground truth: some exclusive latents copy one side of a shared feature).
    train_config = TrainConfig(steps=steps, batch_size=BATCH, seed=0, dead_after_tokens=DEAD_AFTER_TOKENS,
                               auxk_exclusive=True, checkpoint_every=200)  # fmt: skip
    result = train(config, train_config, store, out_dir, show_tqdm=True)
    return result.crosscoder, held_out_scores(result.crosscoder, store)


def main() -> None:
    """Harvest if needed, sweep, then train and index the chosen configuration."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=str(ROOT / "runs" / "store-demo-v2"),
                        help="store folder (a new one whenever builtin:demo changes)")
    parser.add_argument("--tokens", type=int, default=160_000,
                        help="paired tokens to harvest (leave windows unread for the feature index)")
    parser.add_argument("--sweep-only", action="store_true", help="stop after the sweep table")
    parser.add_argument("--pick", default=CHOSEN, choices=sorted(n for n in SWEEP if SWEEP[n][3] > 0),
                        help="the configuration to ship")
    args = parser.parse_args()

    store_path = Path(args.store)
    if not (store_path / "meta.json").exists() or not PairedActivationStore(store_path).meta.get("complete"):
        from crossdiff_core.harvest import HarvestConfig, harvest
        from crossdiff_core.models import load_model

        pair = (load_model("smollm2-135m", quant="nf4"), load_model("gemma3-270m", quant="nf4"))
        harvest(*pair, "builtin:demo", store_path, HarvestConfig(n_tokens=args.tokens), show_tqdm=True)
    store = PairedActivationStore(store_path)

    sweep_dir = ROOT / "runs" / "pretrained-sweep"
    table = {}
    for name in SWEEP:
        table[name] = train_one(store, name, sweep_dir / name)[1]
        print(name, json.dumps({key: round(value, 3) for key, value in table[name].items() if value is not None}),
              flush=True)  # fmt: skip
    (sweep_dir / "sweep.json").write_text(json.dumps(table, indent=1))
    if args.sweep_only:
        return

    for name in ("config.json", "metrics.jsonl", "training.json"):
        shutil.copy2(sweep_dir / args.pick / name, SHIPPED / name)
    # Shipped in fp16: half the size, and the held-out scores do not change measurably (FVU by ~2e-5).
    CrossCoder.from_pretrained(sweep_dir / args.pick).half().save_pretrained(SHIPPED)
    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    shipped_scores = held_out_scores(crosscoder, store) | {"weights_dtype": "float16"}
    (SHIPPED / "heldout.json").write_text(json.dumps(shipped_scores, indent=1) + "\n")

    from crossdiff_core.analysis.feature_index import IndexConfig, build_index, index_dir
    from crossdiff_core.models import load_model

    shutil.rmtree(index_dir(SHIPPED), ignore_errors=True)
    pair = (load_model("smollm2-135m", quant="nf4"), load_model("gemma3-270m", quant="nf4"))
    unseen = IndexConfig(skip_windows=store.meta["windows_done"], n_windows=INDEX_WINDOWS)  # windows training never saw
    index = build_index(crosscoder, pair, unseen, out_dir=index_dir(SHIPPED), show_tqdm=True)
    for side in "ab":
        print(side, [(latent, index.labels[latent]) for latent in index.ranked(side, top=10)])


if __name__ == "__main__":
    main()
