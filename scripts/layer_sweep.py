"""Which layers to read for the shipped DFC: the same small DFC trained at three depths of the demo pair.

    python scripts/layer_sweep.py [--tokens 30000] [--steps 300]

For each layer pair (SmolLM2-135M has 30 blocks, Gemma-3-270M 18; the pairs sit at about the same
relative depth), harvests `--tokens` paired tokens of `builtin:demo` (NF4) into
`runs/layer-sweep/L<a>-<b>/store`, trains a DFC (F 1024, k 32, 5% per exclusive block) on it, and
scores it on the store's held-out rows: FVU per model, L0 and the alive fraction per block. Prints a
Markdown table and writes `runs/layer-sweep/sweep.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.real_pair.run import evaluate
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

LAYER_PAIRS = [(8, 5), (15, 9), (22, 13)]
"""(SmolLM2 block, Gemma-3 block) at about 27%, 50% and 73% depth; (15, 9) is the default middle."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=30_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "runs" / "layer-sweep"))
    args = parser.parse_args()

    from crossdiff_core.activations.config import HarvestConfig
    from crossdiff_core.activations.harvest import harvest
    from crossdiff_core.models import load_model

    out = Path(args.out)
    table = {}
    for layer_a, layer_b in LAYER_PAIRS:
        name = f"L{layer_a}-{layer_b}"
        store_path = out / name / "store"
        if (
            not (store_path / "meta.json").is_file()
            or not json.loads((store_path / "meta.json").read_text())["complete"]
        ):
            pair = (load_model("smollm2-135m", quant="nf4", layer=layer_a),
                    load_model("gemma3-270m", quant="nf4", layer=layer_b))  # fmt: skip
            harvest(*pair, "builtin:demo", store_path, HarvestConfig(n_tokens=args.tokens), show_tqdm=True)
        store = PairedActivationStore(store_path)
        config = CrossCoderConfig(
            d_a=store.d_a, d_b=store.d_b, dict_size=1024, k=32, exclusive_a=0.05, exclusive_b=0.05
        )
        train_config = TrainConfig(steps=args.steps, batch_size=1024, seed=0, dead_after_tokens=100_000,
                                   auxk_exclusive=True, checkpoint_every=100)  # fmt: skip
        crosscoder = train(config, train_config, store, out / name / "dfc", show_tqdm=True).crosscoder
        scores, _ = evaluate(crosscoder, *store.held_out())
        scores["coverage_a"] = store.meta["counts"]["coverage_a"]
        scores["coverage_b"] = store.meta["counts"]["coverage_b"]
        table[name] = scores
        print(name, json.dumps({k: round(v, 3) for k, v in scores.items() if isinstance(v, float)}), flush=True)
    (out / "sweep.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n| layers (SmolLM2, Gemma-3) | FVU A | FVU B | L0 | alive A-excl / shared / B-excl |")
    print("|---|---|---|---|---|")
    for name, s in table.items():
        alive = " / ".join(f"{s[key]:.0%}" for key in ("alive_a_exclusive", "alive_shared", "alive_b_exclusive"))
        print(f"| {name[1:].replace('-', ', ')} | {s['fvu_a']:.3f} | {s['fvu_b']:.3f} | {s['l0']:.1f} | {alive} |")


if __name__ == "__main__":
    main()
