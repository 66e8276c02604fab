"""Three models at once: does an organism's own exclusive block catch what it was taught?

    python -m benchmarks.organisms.three_models                  # every organism, 3 seeds
    python -m benchmarks.organisms.three_models --organisms backdoor --seeds 1

Diffed two at a time, no crosscoder finds a planted change across architectures (`RESULTS.md`: Gemma-3-270M
against a SmolLM2 organism, recall 0 of 5). A researcher screening a fine-tune usually also has its base model. So
each organism is diffed here together with its base model *and* the model of the other family, in one
three-model crosscoder (`crossdiff_core.crosscoder.multi`). In the DFC, a shared block serves all three and each
model has an exclusive block: what only the organism has, its base model lacks too, so it can only live in the
organism's block or in a shared latent. The standard three-model crosscoder (no exclusive blocks) runs on the
same budget beside it.

Two readings, each with the two-model benchmark's recall rule (one of the top 10 fires on the organism's
held-out probe tokens with AUROC ≥ 0.9):
- *its block*: the top latents of the organism's exclusive block, ranked by how much they write (mean activation
  × decoder norm over the corpus);
- *shift*: every latent, ranked by how far its decoder row for the organism moved from its row for the base
  model (the same residual basis) × how much it writes.

Null rows put a model with nothing narrow planted in the organism's place (the base model itself, and the generic
fine-tune made with the organisms' recipe), scored on the backdoor's probes: whatever they "find" is a false
positive. Same data (`builtin:organisms`, three-way aligned with `align_many`), dictionary size, k and steps as
the two-model benchmark. Activations are read from (or written to) the two-model benchmark's cache
(`runs/organisms/activations`); each finished row is kept in `runs/organisms/three_models/`, so a rerun with the
same settings goes on where one was stopped. Writes `three_models.json` and `RESULTS_N3.md` next to this file.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.organisms.activations import ModelActivations
from benchmarks.organisms.run import (
    AUROC_FOUND,
    NULL_PROBES,
    NULLS,
    ORGANISMS,
    TOP,
    all_activations,
    corpus_texts,
    probe_labels,
    probe_sets,
)
from crossdiff_core.activations.config import OUTLIER_FACTOR
from crossdiff_core.activations.paired import inliers
from crossdiff_core.alignment import align_many
from crossdiff_core.analysis.presented import auroc
from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES
from crossdiff_core.crosscoder.multi import MultiCrossCoder, MultiCrossCoderConfig
from crossdiff_core.files import write_text_atomically
from crossdiff_core.organisms import UNMODIFIED
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.multi import train_multi

HERE = Path(__file__).resolve().parent
OTHER, BASE = "gemma3-270m", "smollm2-135m"


@dataclass
class Rows:
    """Rows of N models at the positions where all N tokenizers split a text cleanly."""

    xs: list[torch.Tensor]
    text_N: torch.Tensor
    char_end_N: torch.Tensor


def aligned_rows(models: list[ModelActivations], texts: list[int] | None = None) -> Rows:
    """Return the N-way aligned, inlier rows of `models` over the chosen texts (all by default), in text order."""
    chosen = range(len(models[0].tokens)) if texts is None else texts
    xs, text, ends = [[] for _ in models], [], []
    for i in chosen:
        alignment = align_many([m.tokens[i] for m in models])
        if not len(alignment.char_end):
            continue
        for m, (model, positions) in enumerate(zip(models, alignment.positions)):
            xs[m].append(model.acts[i][torch.as_tensor(positions, dtype=torch.long)].float())
        text.append(torch.full((len(alignment.char_end),), i, dtype=torch.long))
        ends.append(torch.as_tensor(alignment.char_end, dtype=torch.long))
    stacked = [torch.cat(x) for x in xs]
    keep = torch.stack([inliers(x, OUTLIER_FACTOR) for x in stacked]).all(0)
    return Rows([x[keep] for x in stacked], torch.cat(text)[keep], torch.cat(ends)[keep])


class RowSource:
    """A `MultiSource` over rows held in memory: shuffled batches, a new order each pass."""

    def __init__(self, rows: Rows):
        self.rows = rows
        self.d = [x.shape[1] for x in rows.xs]

    def mean_sq_norms(self) -> list[float]:
        """Return each model's mean squared activation norm."""
        return [float(x.pow(2).sum(1).mean()) for x in self.rows.xs]

    def iter_batches(self, batch_size: int, seed: int, start_batch: int = 0):
        """Yield tuples of N `[batch, d_m]` tensors forever (skipping the first `start_batch`)."""
        n, done = len(self.rows.text_N), 0
        for epoch in range(1_000_000):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for start in range(0, n - batch_size + 1, batch_size):
                if done >= start_batch:
                    yield tuple(x[order[start : start + batch_size]] for x in self.rows.xs)
                done += 1


def base_shift(crosscoder: MultiCrossCoder, m: int, base: int) -> torch.Tensor:
    """Return [F]: how far each latent's raw-space decoder row for model `m` is from its row for model `base` (a model of
    the same architecture: the same residual basis), relative to the larger of the two; 0 where either has no row."""
    with torch.no_grad():
        rows = []
        for model in (m, base):
            raw_F = torch.zeros(crosscoder.dict_size, crosscoder.config.d[model])
            raw_F[crosscoder.latents_of(model)] = crosscoder.W_dec[model] / crosscoder.scales[model]
            rows.append(raw_F)
        scale_F = torch.maximum(rows[0].norm(dim=1), rows[1].norm(dim=1)).clamp_min(1e-12)
        shift_F = (rows[0] - rows[1]).norm(dim=1) / scale_F
        both = (rows[0].norm(dim=1) > 0) & (rows[1].norm(dim=1) > 0)
        return shift_F.where(both, 0.0)


def _best(features: list[dict]) -> float:
    return max((f["auroc"] for f in features if np.isfinite(f["auroc"])), default=float("nan"))


def _found(features: list[dict]) -> bool:
    return _best(features) >= AUROC_FOUND


def evaluate(crosscoder: MultiCrossCoder, corpus: Rows, probes: Rows, labels: np.ndarray, m: int, base: int) -> dict:
    """Return the top latents of model `m`'s exclusive block with their probe AUROC, the top latents by how much their
    writing in model `m` differs from model `base`'s (`base_shift` × activation mass), and the best anywhere."""
    with torch.no_grad():
        mass_F = sum(crosscoder.encode(list(xs)).sum(0) for xs in zip(*(x.split(4096) for x in corpus.xs)))
        mass_F = mass_F * crosscoder.decoder_norms()[m]
        f_NF = crosscoder.encode(probes.xs).numpy()
    keep = ~np.isnan(labels)
    positives = labels[keep].astype(bool)
    block = crosscoder.slice_exclusive(m)
    ranked = [block.start + int(j) for j in torch.argsort(mass_F[block], descending=True) if mass_F[block][j] > 0]
    top = [{"latent": j, "auroc": auroc(f_NF[keep, j], positives)} for j in ranked[:TOP]]
    shifted = [int(j) for j in torch.argsort(mass_F * base_shift(crosscoder, m, base), descending=True)[:TOP]]
    top_shift = [{"latent": j, "auroc": auroc(f_NF[keep, j], positives)} for j in shifted]
    fired = np.flatnonzero((f_NF[keep] > 0).any(0))
    scores = {int(j): auroc(f_NF[keep, j], positives) for j in fired}
    best = max(scores, key=lambda j: scores[j] if np.isfinite(scores[j]) else -1.0, default=None)
    in_block = [scores[j] for j in scores if block.start <= j < block.stop and np.isfinite(scores[j])]
    names = crosscoder.block_names()
    return {
        "top": top,
        "found": _found(top),
        "top_shift": top_shift,
        "found_by_shift": _found(top_shift),
        "alive_in_block": len(ranked),
        "best_in_block": max(in_block, default=float("nan")),
        "best_anywhere": {"auroc": scores.get(best, float("nan")), "block": names[best] if best is not None else None},
    }


CROSSCODERS = {"dfc": 0.05, "standard": 0}
"""The three-model crosscoders compared on the same budget, by the size of each model's exclusive block."""


def run(organism: str, crosscoders: list[str], seeds: int, steps: int, dict_size: int, k: int, out: Path) -> dict:
    """Return the results of one three-model diff per crosscoder (`organism` a null: the null row)."""
    name = BASE if organism == UNMODIFIED else f"{BASE}+{organism}"
    probes_of = NULL_PROBES if organism in NULLS else organism
    texts, probes = corpus_texts(), probe_sets()
    probe_list = [p for o in ORGANISM_NAMES for p in probes[o][0] + probes[o][1]]
    offset = sum(len(probes[o][0]) + len(probes[o][1]) for o in ORGANISM_NAMES[: ORGANISM_NAMES.index(probes_of)])
    mine = probes[probes_of][0] + probes[probes_of][1]
    order = [OTHER, BASE, name]
    acts = all_activations(set(order), texts, out, "corpus")
    probe_acts = all_activations(set(order), [p.text for p in probe_list], out, "probes")
    corpus = aligned_rows([acts[n] for n in order])
    probe_rows = aligned_rows([probe_acts[n] for n in order], list(range(offset, offset + len(mine))))
    labels = probe_labels(probe_rows.text_N, probe_rows.char_end_N, mine, offset)
    by_crosscoder = {}
    for kind in crosscoders:
        runs = []
        for seed in range(seeds):
            config = MultiCrossCoderConfig(
                d=[x.shape[1] for x in corpus.xs], dict_size=dict_size, exclusive=CROSSCODERS[kind], k=k
            )
            train_config = TrainConfig(steps=steps, batch_size=512, seed=seed, log_every=steps, device="cpu")
            start = time.perf_counter()
            trained = train_multi(config, train_config, RowSource(corpus))
            result = evaluate(trained.crosscoder, corpus, probe_rows, labels, m=2, base=1)
            result.update(seed=seed, seconds=time.perf_counter() - start, fvu=trained.history[-1].get("fvu"))
            runs.append(result)
            print(f"  {organism} {kind} seed {seed}: found={result['found']} by shift={result['found_by_shift']} "
                  f"{[round(f['auroc'], 2) for f in result['top_shift']]} best anywhere {result['best_anywhere']}",
                  flush=True)  # fmt: skip
        by_crosscoder[kind] = {
            "found": statistics.mean(r["found"] for r in runs),
            "found_by_shift": statistics.mean(r["found_by_shift"] for r in runs),
            "runs": runs,
        }
    coverage = len(corpus.text_N) / sum(len(t.input_ids) for t in acts[name].tokens)
    return {
        "organism": organism,
        "null": organism in NULLS,
        "probes": probes_of,
        "models": order,
        "rows": len(corpus.text_N),
        "organism_coverage": coverage,
        "probe_rows": int((~np.isnan(labels)).sum()),
        "crosscoders": by_crosscoder,
    }


def summarize(results: list[dict], crosscoders: list[str]) -> dict:
    """Return, per crosscoder, the organisms found (by the block and by the shift, means over seeds) and the null rows
    where the shift 'finds' the backdoor's probes."""
    real = [r for r in results if not r["null"]]
    null = [r for r in results if r["null"]]
    summary = {"n3_organisms_total": len(real), "n3_null_rows": len(null)}
    for kind in crosscoders:
        prefix = "n3" if kind == "dfc" else f"n3_{kind}"
        summary[f"{prefix}_organisms_found"] = sum(r["crosscoders"][kind]["found"] for r in real)
        summary[f"{prefix}_organisms_found_by_shift"] = sum(r["crosscoders"][kind]["found_by_shift"] for r in real)
        summary[f"{prefix}_null_found_by_shift"] = sum(r["crosscoders"][kind]["found_by_shift"] for r in null)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Run the organisms and the null rows, and write three_models.json and RESULTS_N3.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/organisms", help="the two-model benchmark's folder (its caches)")
    rows = [*ORGANISMS, *NULLS]
    parser.add_argument("--organisms", nargs="*", default=rows, choices=rows)
    parser.add_argument("--crosscoders", nargs="*", default=list(CROSSCODERS), choices=list(CROSSCODERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--dict-size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = []
    for organism in args.organisms:  # each row is kept as it finishes: a rerun with the same settings skips it
        key = json.dumps([organism, args.crosscoders, args.seeds, args.steps, args.dict_size, args.k])
        done = Path(args.out) / "three_models" / f"{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            print(f"  {organism}: kept from {done}", flush=True)
            continue
        results.append(run(organism, args.crosscoders, args.seeds, args.steps, args.dict_size, args.k, Path(args.out)))
        done.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(done, json.dumps(results[-1], default=float))
    summary = {
        **summarize(results, args.crosscoders),
        "settings": vars(args),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.platform()} · {torch.get_num_threads()} threads · torch {torch.__version__}",
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "results": results,
    }
    (HERE / "three_models.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print(write_report(summary))


def write_report(summary: dict) -> str:
    """Write RESULTS_N3.md from the summary `main` wrote to three_models.json; return its text."""
    settings = summary["settings"]
    total, seeds = summary["n3_organisms_total"], settings["seeds"]
    lines = [
        "# Three models at once: an organism, its base model, and the other family",
        "",
        f"`python -m benchmarks.organisms.three_models --seeds {seeds} --steps {settings['steps']}` · "
        f"{summary['machine']} · {summary['date']} · {summary['minutes']} min",
        "",
        f"Same data, dictionary size ({settings['dict_size']}), k ({settings['k']}) and steps for both crosscoders; "
        f"means over {seeds} seeds. *Found by its block*: one of the top {TOP} latents of the organism's exclusive "
        f"block has probe AUROC ≥ {AUROC_FOUND} (the standard crosscoder has no blocks). *Found by shift*: one of the "
        f"top {TOP} latents by the shift of its decoder row from the base model's × how much it writes has probe "
        f"AUROC ≥ {AUROC_FOUND}. A null row puts a model with nothing planted in the organism's place and is scored on "
        f"the {NULL_PROBES}'s probes: anything it 'finds' is a false positive.",
        "",
        "| crosscoder | organisms found by its block | organisms found by shift | null rows 'found' by shift |",
        "|---|---|---|---|",
    ]
    for kind in settings["crosscoders"]:
        prefix = "n3" if kind == "dfc" else f"n3_{kind}"
        by_block = f"{summary[f'{prefix}_organisms_found']:.1f} of {total}" if CROSSCODERS[kind] else "– (no blocks)"
        lines.append(
            f"| {kind} | {by_block} | "
            f"{summary[f'{prefix}_organisms_found_by_shift']:.1f} of {total} | "
            f"{summary[f'{prefix}_null_found_by_shift']:.1f} of {summary['n3_null_rows']} |"
        )
    lines += [
        "",
        "Per row and crosscoder: found by shift in how many seeds, the best probe AUROC among the top "
        f"{TOP} by shift in each seed, and the latent of the whole dictionary that best separates the probes "
        "(first seed; a high AUROC in the shared block may only mean the probe texts differ on the surface, which "
        "both families read):",
        "",
        "| row | probes | rows (3-way aligned) | crosscoder | found by shift (seeds) | best of the top 10 by shift, "
        "per seed | alive latents in its block | best AUROC anywhere (block) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["results"]:
        for kind, c in r["crosscoders"].items():
            best = c["runs"][0]["best_anywhere"]
            per_seed = ", ".join(f"{_best(x['top_shift']):.2f}" for x in c["runs"])
            found = sum(x["found_by_shift"] for x in c["runs"])
            alive = f"{statistics.mean(x['alive_in_block'] for x in c['runs']):.0f}" if CROSSCODERS[kind] else "–"
            label = f"{r['organism']} (null)" if r["null"] else r["organism"]
            lines.append(
                f"| {label} | {r['probes']} | {r['rows']} | {kind} | {found} of {len(c['runs'])} | {per_seed} | "
                f"{alive} | {best['auroc']:.2f} ({best['block']}) |"
            )
    text = "\n".join(lines) + "\n"
    (HERE / "RESULTS_N3.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
