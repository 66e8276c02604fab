"""Build the DFC that ships in `pretrained/smollm2-135m__gemma3-270m/`: harvest, sweep, train, index.

    python scripts/build_pretrained.py [--store runs/store-large] [--tokens 5270000] [--sweep-only]

1. Harvests `--tokens` paired tokens of the demo pair over `--corpus` (default `builtin:large`, the
   demo corpus, the installed packages' documentation and Debian's manuals, `builtin:human`, when
   installed; the shipped DFC predates them) into `--store`, with bf16 models on the
   CPU (about four times the speed of NF4 there); skipped when the store is complete, resumed when
   it was interrupted.
2. Trains each configuration of `SWEEP` for `--sweep-steps` steps on the same store and seed, and
   scores it on the store's held-out rows: FVU per model, L0, dead fraction and the alive fraction
   of each block. The table goes to `runs/pretrained-large/sweep.json` and is printed.
3. Trains the chosen configuration (`--pick`; by default the lowest mean FVU among those with
   L0 ≤ 64, at most half the latents dead and fp16 weights of at most 25 MB) for one pass over
   the store, and the standard crosscoder of the same size as the baseline.
4. Copies the DFC into the shipped folder with fp16 weights and scores it again, on the store's
   held-out rows and on `--nf4-store` (NF4 activations of `builtin:demo`, what the app computes by
   default); writes `heldout.json` and `baseline.json`.
5. Builds its feature index with NF4 models on `--index-windows` windows of `builtin:demo`.

The model card (`README.md` in the folder) is written by hand from these numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.real_pair.run import evaluate
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.synthetic import relative_decoder_norms
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

SHIPPED = ROOT / "pretrained" / "smollm2-135m__gemma3-270m"
WORK = ROOT / "runs" / "pretrained-large"
SWEEP = {
    # name: (dict_size, k, fraction of latents in each exclusive block)
    "F2048-k32": (2048, 32, 0.05),
    "F4096-k32": (4096, 32, 0.05),
    "F8192-k32": (8192, 32, 0.05),
    "F4096-k64": (4096, 64, 0.05),
}
BATCH = 1024
DEAD_AFTER_TOKENS = 500_000
HELD_OUT_ROWS = 100_000
# fp16 weights: at most F=4096 for this pair (20 MB). The index grows with F too, and the folder is
# cloned with the app and loaded at every start: F=8192 (40 MB + its index) would crowd the 60 MB budget.
MAX_WEIGHT_BYTES = 25_000_000


def held_out_scores(crosscoder: CrossCoder, store: PairedActivationStore) -> dict:
    """Return held-out FVU per model, L0, dead fraction, alive fraction per block and the share of one-sided latents."""
    scores, _ = evaluate(crosscoder, *store.held_out(HELD_OUT_ROWS))
    relative_F = relative_decoder_norms(crosscoder)
    scores["relative_norm_beyond_0.9"] = float(((relative_F > 0.9) | (relative_F < 0.1)).float().mean())
    return scores


def train_one(store: PairedActivationStore, dict_size: int, k: int, exclusive: float, steps: int,
              out_dir: Path) -> tuple[CrossCoder, dict]:  # fmt: skip
    """Train one configuration into `out_dir` (resuming a checkpoint there); return it and its held-out scores."""
    config = CrossCoderConfig(d_a=store.d_a, d_b=store.d_b, dict_size=dict_size, k=k,
                              exclusive_a=exclusive, exclusive_b=exclusive)  # fmt: skip
    # auxk revives exclusive latents too: without it, relocation alone leaves the exclusive blocks
    # dead when no shared latent becomes one-sided (see benchmarks/synthetic/RESULTS.md for the cost:
    # some exclusive latents copy one side of a shared feature).
    train_config = TrainConfig(steps=steps, batch_size=BATCH, seed=0, dead_after_tokens=DEAD_AFTER_TOKENS,
                               auxk_exclusive=exclusive > 0, checkpoint_every=500)  # fmt: skip
    result = train(config, train_config, store, out_dir, show_tqdm=True)
    return result.crosscoder, held_out_scores(result.crosscoder, store)


def weight_bytes(dict_size: int, store: PairedActivationStore) -> int:
    """Bytes of fp16 encoder and decoder weights of a crosscoder of `dict_size` latents."""
    return 2 * 2 * dict_size * (store.d_a + store.d_b)


def pick(table: dict, store: PairedActivationStore) -> str:
    """Return the configuration with the lowest mean held-out FVU among the readable ones that fit."""
    fits = [name for name, s in table.items() if s["l0"] <= 64 and s["dead_fraction"] <= 0.5
            and weight_bytes(SWEEP[name][0], store) <= MAX_WEIGHT_BYTES]  # fmt: skip
    if not fits:
        raise SystemExit("no configuration of the sweep is readable and small enough; see the table")
    return min(fits, key=lambda name: table[name]["fvu_a"] + table[name]["fvu_b"])


def main() -> None:
    """Harvest if needed, sweep, train the chosen DFC and its baseline, then ship and index the DFC."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="builtin:large", help="corpus spec to harvest")
    parser.add_argument(
        "--store",
        default=str(ROOT / "runs" / "store-large"),
        help="store folder (a new one whenever the corpus changes)",
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=5_270_000,
        help="paired tokens to harvest (5%% are held out: 5.27M leaves 5M for training)",
    )
    parser.add_argument("--sweep-steps", type=int, default=1200, help="steps of each sweep run")
    parser.add_argument("--sweep-only", action="store_true", help="stop after the sweep table")
    parser.add_argument("--pick", default="auto", choices=["auto", *SWEEP], help="the configuration to ship")
    parser.add_argument(
        "--nf4-store",
        default=str(ROOT / "runs" / "store-demo-v2"),
        help="a store of NF4 activations of builtin:demo to score the shipped DFC on (skipped if missing)",
    )
    parser.add_argument("--index-windows", type=int, default=192, help="windows of builtin:demo the index reads")
    args = parser.parse_args()

    store_path = Path(args.store)
    if not (store_path / "meta.json").exists() or not PairedActivationStore(store_path).meta.get("complete"):
        from crossdiff_core.activations.config import HarvestConfig
        from crossdiff_core.activations.harvest import harvest
        from crossdiff_core.models import load_model

        pair = (load_model("smollm2-135m", quant="none", dtype="bf16", device="cpu"),
                load_model("gemma3-270m", quant="none", dtype="bf16", device="cpu"))  # fmt: skip
        harvest(*pair, args.corpus, store_path, HarvestConfig(n_tokens=args.tokens, batch_windows=64), show_tqdm=True)
        del pair
    store = PairedActivationStore(store_path)

    table_path = WORK / "sweep.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    for name, (dict_size, k, exclusive) in SWEEP.items():
        if name not in table:
            table[name] = train_one(store, dict_size, k, exclusive, args.sweep_steps, WORK / "sweep" / name)[1]
            table_path.write_text(json.dumps(table, indent=1))
        print(name, json.dumps({key: round(value, 3) for key, value in table[name].items() if value is not None}),
              flush=True)  # fmt: skip
    if args.sweep_only:
        return

    chosen = pick(table, store) if args.pick == "auto" else args.pick
    dict_size, k, exclusive = SWEEP[chosen]
    steps = store.n_train_rows // BATCH  # one pass over the training rows
    print(f"chosen {chosen}: training {steps} steps ({steps * BATCH:,} tokens)", flush=True)
    _dfc, dfc_scores = train_one(store, dict_size, k, exclusive, steps, WORK / "dfc")
    _baseline, baseline_scores = train_one(store, dict_size, k, 0.0, steps, WORK / "standard")
    (WORK / "baseline.json").write_text(json.dumps(baseline_scores, indent=1) + "\n")
    print("dfc", json.dumps(dfc_scores), "\nstandard", json.dumps(baseline_scores), flush=True)

    for name in ("config.json", "metrics.jsonl", "training.json"):
        shutil.copy2(WORK / "dfc" / name, SHIPPED / name)
    shutil.copy2(WORK / "baseline.json", SHIPPED / "baseline.json")
    # Shipped in fp16: half the size; the held-out scores are measured again on the fp16 weights.
    CrossCoder.from_pretrained(WORK / "dfc").half().save_pretrained(SHIPPED)
    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    shipped = held_out_scores(crosscoder, store) | {"weights_dtype": "float16", "sweep_pick": chosen,
                                                   "fp32_scores": dfc_scores}  # fmt: skip
    nf4_store = Path(args.nf4_store)
    if (nf4_store / "meta.json").exists():
        nf4 = PairedActivationStore(nf4_store)
        shipped["nf4_builtin_demo"], _ = evaluate(crosscoder, *nf4.held_out())
    (SHIPPED / "heldout.json").write_text(json.dumps(shipped, indent=1) + "\n")

    from crossdiff_core.analysis.index import index_dir
    from crossdiff_core.analysis.index_builder import IndexConfig, build_index
    from crossdiff_core.models import load_model

    shutil.rmtree(index_dir(SHIPPED), ignore_errors=True)
    pair = (load_model("smollm2-135m", quant="nf4"), load_model("gemma3-270m", quant="nf4"))
    started = time.perf_counter()
    index = build_index(crosscoder, pair, IndexConfig(corpus="builtin:demo", n_windows=args.index_windows),
                        out_dir=index_dir(SHIPPED), show_tqdm=True)  # fmt: skip
    print(f"index built in {time.perf_counter() - started:.0f} s")
    for side in "ab":
        print(side, [(latent, index.labels[latent]) for latent in index.ranked(side, top=12)])


if __name__ == "__main__":
    main()
