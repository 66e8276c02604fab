"""How often the default steering strength keeps the text readable, on the shipped DFC's top exclusive features.

    python -m benchmarks.steering            # top 10 A-exclusive + top 10 B-exclusive features, 3 prompts each
    python -m benchmarks.steering --quick    # top 2 + 2 features, 1 prompt (a smoke run; writes nothing)

Loads the demo pair as the app does (4-bit NF4 on CPU unless `--quant` says otherwise) and the DFC shipped in
`pretrained/`. For each of the top features of each model (`FeatureIndex.ranked`) and each prompt, it steers the
feature with the default rule (`steer_readable`: the strongest of `STRENGTH_STEPS` × the feature's max activation
whose text stays readable), and, for comparison, at the app's former default (`OLD_FACTOR` × max activation).

"Coherent" is `crossdiff_core.analysis.steering.is_coherent`: the steered continuation's perplexity under the
unsteered model is at most `MAX_PERPLEXITY_RATIO` × the unsteered continuation's, and it does not repeat a piece
of 1–3 tokens `MAX_REPEATS` times in a row more than the unsteered text does. The rule picks by that test on the
same text, so "coherent" alone is not the whole story: the summary also counts defaults that changed the text
(a strength too weak to change anything is trivially coherent), and the former default on the same features.

Writes `benchmarks/results/steering.json` (machine, settings, per-run texts and scores, and the summary; rewritten
after every run, with `complete` false until the last) and prints the summary. Greedy decoding: the numbers depend
on the models, the prompts and the DFC only, not on the machine's speed (`--threads 1` runs faster on a busy one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "steering.json"
SHIPPED = REPO / "pretrained" / "smollm2-135m__gemma3-270m"
PROMPTS = ("Tell me about", "The weather today is", "My favourite food is")
"""Plain prompts: the app's default ("Tell me about") and two everyday openings."""
TOP_PER_MODEL = 10
"""Top exclusive features per model: 10 + 10 = the top 20."""
MAX_NEW_TOKENS = 24
"""The app's default number of new tokens."""
OLD_FACTOR = 5.0
"""The app's former default strength: 5 × the feature's max activation."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 + 2 features, 1 prompt; writes nothing")
    parser.add_argument("--quant", default="nf4", choices=["nf4", "int8", "none"], help="how the models load")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from benchmarks.perf import machine
    from crossdiff_core.analysis import load_index, steer, steer_readable
    from crossdiff_core.analysis.serialize import json_ready
    from crossdiff_core.analysis.steering import MAX_PERPLEXITY_RATIO, MAX_REPEATS, REPEAT_UNIT, STRENGTH_STEPS
    from crossdiff_core.crosscoder import CrossCoder
    from crossdiff_core.models import load_model

    top, prompts = (2, PROMPTS[:1]) if args.quick else (TOP_PER_MODEL, PROMPTS)
    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    index = load_index(SHIPPED, crosscoder)
    start = time.perf_counter()
    pair = tuple(load_model(name, quant=args.quant, device="cpu") for name in ("smollm2-135m", "gemma3-270m"))
    load_seconds = time.perf_counter() - start
    print(f"loaded the demo pair ({args.quant}, {pair[0].compute_dtype}) in {load_seconds:.0f} s", flush=True)

    features = [(side, latent) for side in ("a", "b") for latent in index.ranked(side, top)]
    settings = {
        "crosscoder": str(SHIPPED.relative_to(REPO)),
        "quant": args.quant,
        "compute_dtype": pair[0].compute_dtype,
        "prompts": list(prompts),
        "features": [latent for _, latent in features],
        "max_new_tokens": MAX_NEW_TOKENS,
        "greedy": True,
        "strength_steps": list(STRENGTH_STEPS),
        "max_perplexity_ratio": MAX_PERPLEXITY_RATIO,
        "max_repeats": MAX_REPEATS,
        "repeat_unit": REPEAT_UNIT,
        "old_factor": OLD_FACTOR,
    }
    runs = []
    start = time.perf_counter()
    for prompt in prompts:  # every feature on the first prompt first: a cut-short run still covers all of them
        for side, latent in features:
            unit = float(index.stats(latent)["max_activation"])
            rule = steer_readable(pair, crosscoder, latent, unit, prompt, MAX_NEW_TOKENS)
            old = steer(pair, crosscoder, latent, OLD_FACTOR * unit, prompt, MAX_NEW_TOKENS)
            runs.append(_run(side, latent, index.labels[latent], unit, prompt, rule, old))
            print(_line(runs[-1]), flush=True)
            complete = len(runs) == len(features) * len(prompts)
            results = {
                "date": datetime.date.today().isoformat(),
                "complete": complete,
                "machine": machine(),
                "settings": settings,
                "seconds": {"load": round(load_seconds, 1), "steer": round(time.perf_counter() - start, 1)},
                "summary": summarize(runs),
                "runs": runs,
            }
            if not args.quick:  # after every run: an interrupted run leaves what it measured, marked incomplete
                RESULTS.parent.mkdir(parents=True, exist_ok=True)
                RESULTS.write_text(
                    json.dumps(json_ready(results), ensure_ascii=False, allow_nan=False, indent=1) + "\n"
                )
    print(json.dumps(results["summary"], indent=2))
    if not args.quick:
        print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


def _run(side, latent, label, unit, prompt, rule, old) -> dict:
    return {
        "side": side,
        "latent": latent,
        "label": label,
        "max_activation": unit,
        "prompt": prompt,
        "baseline": rule.baseline,
        "baseline_perplexity": rule.baseline_perplexity,
        "default": {
            "multiple": rule.multiple,
            "strength": rule.strength,
            "steered": rule.steered,
            "perplexity": rule.steered_perplexity,
            "perplexity_ratio": rule.steered_perplexity / rule.baseline_perplexity,
            "longest_repeat": rule.longest_repeat,
            "coherent": rule.coherent,
            "changed_words": rule.changed_words,
        },
        "trials": [
            {
                "multiple": t.multiple,
                "perplexity_ratio": t.perplexity_ratio,
                "longest_repeat": t.longest_repeat,
                "coherent": t.coherent,
                "changed_words": t.changed_words,
                "steered": t.steered,
            }
            for t in rule.trials
        ],
        "old_default": {
            "multiple": OLD_FACTOR,
            "steered": old.steered,
            "perplexity_ratio": old.steered_perplexity / old.baseline_perplexity,
            "longest_repeat": old.longest_repeat,
            "coherent": old.coherent,
            "changed_words": old.changed_words,
        },
    }


def _line(run: dict) -> str:
    d, o = run["default"], run["old_default"]
    return (
        f"{run['side'].upper()} {run['latent']:>5} {run['prompt']!r:24} default {d['multiple']:g}x "
        f"{'coherent' if d['coherent'] else 'GARBLED '} ppl x{d['perplexity_ratio']:.2f} changed {d['changed_words']:.0%}"
        f" | 5x {'coherent' if o['coherent'] else 'GARBLED '} ppl x{o['perplexity_ratio']:.1f} :: {d['steered'][:50]!r}"
    )


def summarize(runs: list[dict]) -> dict:
    """Return the shares over all runs and per model: coherent defaults, coherent and changed, the former default."""

    def shares(subset: list[dict]) -> dict:
        n = len(subset)
        if not n:
            return {"runs": 0}
        multiples = sorted(r["default"]["multiple"] for r in subset)
        return {
            "runs": n,
            "features": len({r["latent"] for r in subset}),
            "default_coherent": sum(r["default"]["coherent"] for r in subset) / n,
            "default_coherent_and_changed": sum(
                r["default"]["coherent"] and r["default"]["changed_words"] > 0 for r in subset
            )
            / n,
            "default_median_multiple": multiples[n // 2],
            "default_median_changed_words": sorted(r["default"]["changed_words"] for r in subset)[n // 2],
            "none_readable": sum(not any(t["coherent"] for t in r["trials"]) for r in subset) / n,
            "old_default_coherent": sum(r["old_default"]["coherent"] for r in subset) / n,
            "old_default_coherent_and_changed": sum(
                r["old_default"]["coherent"] and r["old_default"]["changed_words"] > 0 for r in subset
            )
            / n,
        }

    return {
        "all": shares(runs),
        "model_a": shares([r for r in runs if r["side"] == "a"]),
        "model_b": shares([r for r in runs if r["side"] == "b"]),
    }


if __name__ == "__main__":
    raise SystemExit(main())
