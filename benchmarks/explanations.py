"""How well a small chat model's explanations of the shipped DFC's exclusive latents predict where they fire.

    python -m benchmarks.explanations                # every alive exclusive latent of both models
    python -m benchmarks.explanations --limit 40     # the 40 best ranked, alternating model A and model B
    python -m benchmarks.explanations --write-index  # also store explanations and scores in the shipped index

Loads the demo pair (unquantized on CPU unless `--quant` says otherwise) and the DFC shipped in `pretrained/`.
SmolLM2-135M-Instruct, the only chat model that runs offline here, both explains (`explain`: half of each latent's
top contexts) and scores (`detection`: from the explanation alone it judges the other half of the top contexts
against crops of index windows where the latent is silent; the AUROC of its Yes-vs-No margin, 0.5 for chance).
The same explanations moved across latents (`explanation_scores.shuffled_baseline`) give the score an explanation
gets for describing some other latent: a real explanation is worth something only where it beats that.

Works on a copy of the shipped index in the cache folder (`$CROSSDIFF_CACHE/benchmarks/explanations`), saved after
each latent, so an interrupted run resumes (`--fresh` starts over). Writes `benchmarks/results/explanations.json`
after each latent (`complete` false until the shuffled baseline is done) and prints the summary. `--write-index`
copies the explanations into the shipped index only after a complete run over every alive exclusive latent, each
marked with whether the run beat the shuffled baseline by more than two standard errors
(`explanation_scores.compare_with_chance`, as the `explain` command does): when it did not, none of them names its
feature (`labels.beats_chance`), whatever its own score.
Greedy decoding and fixed seeds: the numbers depend on the models, the DFC and the seed, not on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "explanations.json"
SHIPPED = REPO / "pretrained" / "smollm2-135m__gemma3-270m"
MODEL = "smollm2-135m"
"""Explainer and scorer: SmolLM2-135M-Instruct, model A of the pair (Gemma-3-270M is a base model)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="explain only the N best ranked latents")
    parser.add_argument("--write-index", action="store_true", help="store the results in the shipped index")
    parser.add_argument("--fresh", action="store_true", help="discard the explanations of an earlier run")
    parser.add_argument("--quant", default="none", choices=["nf4", "int8", "none"], help="how the models load")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from crossdiff_core.analysis.config import ExplainConfig
    from crossdiff_core.analysis.detection import CONTENT_FREE, DetectionScorer
    from crossdiff_core.analysis.explanation_scores import compare_with_chance, explain_and_score
    from crossdiff_core.analysis.heldout import measure_pool
    from crossdiff_core.analysis.index import FeatureIndex, index_dir, load_index
    from crossdiff_core.analysis.labels import CLEAR_EXPLANATION_SCORE
    from crossdiff_core.crosscoder import CrossCoder
    from crossdiff_core.files import cache_dir
    from crossdiff_core.models import load_model

    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    shipped = load_index(SHIPPED, crosscoder)
    work = cache_dir() / "benchmarks" / "explanations" / "feature_index"
    if args.fresh or not (work / "labels.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(index_dir(SHIPPED), work)
    index = FeatureIndex.load(work, crosscoder)
    alive = {side: [j for j in index.ranked(side) if index.arrays["n_fires"][j] > 0] for side in ("a", "b")}
    latents = [j for pair in _interleave(alive["a"], alive["b"]) for j in pair][: args.limit]
    config = ExplainConfig()
    start = time.perf_counter()
    pair = tuple(load_model(name, quant=args.quant, device="cpu") for name in (MODEL, "gemma3-270m"))
    seconds = {"load": time.perf_counter() - start}
    explainer, scorer = pair[0], DetectionScorer(pair[0])
    print(f"loaded the demo pair ({args.quant}, {pair[0].compute_dtype}) in {seconds['load']:.0f} s", flush=True)

    start = time.perf_counter()
    pool = measure_pool(index, crosscoder, pair, config.pool_windows, config.seed)
    seconds["pool"] = time.perf_counter() - start
    print(f"measured {len(pool.texts)} silent-text crops in {seconds['pool']:.0f} s", flush=True)
    settings = {
        "crosscoder": str(SHIPPED.relative_to(REPO)),
        "explainer": explainer.model_id,
        "scorer": scorer.model_id,
        "quant": args.quant,
        "compute_dtype": pair[0].compute_dtype,
        "calibration": f"margins minus those with the content-free explanation {CONTENT_FREE!r}",
        "limit": args.limit,
        "alive_exclusive": {side: len(found) for side, found in alive.items()},
        "latents": latents,
        "config": asdict(config),
        "resumed": sum(index.explanations.get(j, {}).get("model") == explainer.model_id for j in latents),
        "clear_threshold": CLEAR_EXPLANATION_SCORE,
    }
    clock = {"wall": time.perf_counter(), "cpu": time.process_time(), "latents": 0}
    timing = {"wall": 0.0, "cpu": 0.0}

    def report(phase: str, done: int, total: int) -> None:
        timing["wall"] += time.perf_counter() - clock["wall"]
        timing["cpu"] += time.process_time() - clock["cpu"]
        seconds[phase] = timing["wall"]
        seconds[f"{phase}_cpu"] = timing["cpu"]
        results = _results(index, latents, settings, seconds, None, complete=False)
        _write(results)
        if phase == "explain":
            latent = latents[done - 1]
            entry = index.explanations.get(latent, {})
            score = index.explanation_score(latent)
            print(f"{done}/{total} {latent:>5} {score:5.2f} {entry.get('text', '(never fired)')[:90]}", flush=True)
        clock.update(wall=time.perf_counter(), cpu=time.process_time())

    explain_and_score(index, explainer, scorer, pool, latents, config, progress=lambda d, t: report("explain", d, t))
    timing.update(wall=0.0, cpu=0.0)
    clock.update(wall=time.perf_counter(), cpu=time.process_time())
    check = compare_with_chance(index, scorer, pool, explainer.model_id, config)
    index.save_labels()
    report("shuffled", 0, 0)
    results = _results(index, latents, settings, seconds, check, complete=True)
    _write(results)
    print(json.dumps(results["summary"], indent=1))
    print(f"wrote {RESULTS.relative_to(REPO)}")
    if args.write_index:
        if args.limit is not None and args.limit < sum(len(found) for found in alive.values()):
            print("not written into the shipped index: run without --limit to explain every alive exclusive latent")
            return 1
        shipped.explanations = index.explanations
        shipped.save_labels()
        print(f"wrote {len(index.explanations)} scored explanations into {shipped.path.relative_to(REPO)}")
        if check is not None:
            print(check.words())
    return 0


def _interleave(first: list[int], second: list[int]) -> list[tuple[int, ...]]:
    """Return `[(a1, b1), (a2, b2), …]`, the longer list's tail as one-element tuples."""
    n = max(len(first), len(second))
    return [tuple(x[i] for x in (first, second) if i < len(x)) for i in range(n)]


def _results(index, latents, settings, seconds, check, complete) -> dict:
    from crossdiff_core.analysis.labels import explanation_clear

    entries = []
    for latent in latents:
        entry = index.explanations.get(latent)
        if entry is None:
            continue
        score = index.explanation_score(latent)
        entries.append({
            "latent": latent,
            "side": index.models_of(latent)[0],
            "label": index.labels[latent],
            "explanation": entry["text"],
            "score": score,
            "shuffled_score": check.shuffled.get(latent, float("nan")) if check else float("nan"),
        })  # fmt: skip
    scored = [e for e in entries if math.isfinite(e["score"])]
    paired = [e for e in scored if math.isfinite(e["shuffled_score"])]
    n = len(scored)
    summary = {
        "n_explained": len(entries),
        "n_scored": n,
        "mean_score": sum(e["score"] for e in scored) / n if n else float("nan"),
        "shuffled_baseline_score": sum(e["shuffled_score"] for e in paired) / len(paired) if paired else float("nan"),
        "n_clear": sum(explanation_clear(e["score"]) for e in scored),
        "n_clear_shuffled": sum(explanation_clear(e["shuffled_score"]) for e in paired),
        "share_above_shuffled": sum(e["score"] > e["shuffled_score"] for e in paired) / len(paired) if paired else None,
        "mean_difference_stderr": check.stderr if check else float("nan"),
        "beats_chance": check.beats if check else None,
        "seconds_per_latent": seconds.get("explain", 0.0) / max(len(latents) - settings["resumed"], 1),
        "cpu_seconds_per_latent": seconds.get("explain_cpu", 0.0) / max(len(latents) - settings["resumed"], 1),
        "shuffled_seconds_per_latent": seconds.get("shuffled", 0.0) / max(len(paired), 1),
        "explainer": settings["explainer"],
        "scorer": settings["scorer"],
    }
    for side in ("a", "b"):
        own = [e["score"] for e in scored if e["side"] == side]
        summary[f"mean_score_{side}"] = sum(own) / len(own) if own else float("nan")
    return {
        "date": datetime.date.today().isoformat(),
        "complete": complete,
        "summary": summary,
        "settings": settings,
        "seconds": {name: round(value, 1) for name, value in seconds.items()},
        "latents": entries,
    }


def _write(results: dict) -> None:
    from benchmarks.perf import machine
    from crossdiff_core.analysis.serialize import json_ready

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json_ready({**results, "machine": machine()})
    RESULTS.write_text(json.dumps(data, ensure_ascii=False, allow_nan=False, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
