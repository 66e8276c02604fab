"""Why the organisms are not found across architectures: the planted change against what a linear map misses.

    python -m benchmarks.organisms.transfer_shift [--out runs/organisms]

Reads the seed-0 DFCs that `benchmarks.organisms.run` trained (in `--out`) and writes
`transfer_shift.json` next to this file. For each cross-architecture pair it measures:

- **transfer shift**: the cross-architecture analogue of the context shift that finds the backdoor in
  pieces between a model and its fine-tune. A ridge map predicts the organism model's activations from
  the other model's; for each shared latent, the map is fitted on every corpus row where the latent does
  NOT fire (so a rare change on its rows cannot be absorbed by the map), and the latent's shift is the
  squared norm of the activation-weighted mean residual on its rows (less the mean residual), over the
  residual's variance. A planted change on the latent's rows makes that mean large and consistent.
  Reported: the rank, by this shift, of the shared latent that best separates the organism's probes
  (AUROC), and the best probe AUROC among the 10 largest shifts.
- **planted change vs map residual**: on the behaviour's probe tokens, the mean squared norm of the
  planted change (the organism's activations minus its base model's, same tokens) over the mean squared
  norm of the residual of the map from the other model (fitted on all corpus rows), both in the organism
  model's raw space. Far below 1, the change is a small part of what the other architecture cannot
  predict, and nothing read through a linear map between the models can single it out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.organisms import run as organisms
from benchmarks.organisms.activations import paired_rows
from crossdiff_core.analysis.presented import auroc
from crossdiff_core.crosscoder import CrossCoder

RIDGE = 1e-3
"""Ridge strength of the map, as a fraction of the mean eigenvalue of the source Gram matrix."""

MIN_FIRES = 20
"""Shared latents firing on fewer corpus rows get no shift (their mean residual is noise)."""

RESULTS = Path(__file__).with_name("transfer_shift.json")


def _with_bias(x_ND: torch.Tensor) -> torch.Tensor:
    return torch.cat([x_ND.double(), torch.ones(len(x_ND), 1, dtype=torch.float64)], 1)


def fit_map(src_ND: torch.Tensor, tgt_ND: torch.Tensor) -> torch.Tensor:
    """Return the ridge map (with a bias row) predicting `tgt` from `src`."""
    x = _with_bias(src_ND)
    gram = x.T @ x
    ridge = torch.eye(len(gram), dtype=gram.dtype) * (RIDGE * float(torch.trace(gram)) / len(gram))
    return torch.linalg.solve(gram + ridge, x.T @ tgt_ND.double())


def map_residual(src_ND: torch.Tensor, tgt_ND: torch.Tensor, map_DE: torch.Tensor) -> torch.Tensor:
    """Return `tgt − map(src)`, float64."""
    return tgt_ND.double() - _with_bias(src_ND) @ map_DE


def transfer_shift(f_NF: torch.Tensor, src_ND: torch.Tensor, tgt_ND: torch.Tensor, latents: np.ndarray) -> np.ndarray:
    """Return each of `latents`' transfer shift (module docstring), NaN for those firing on < `MIN_FIRES` rows."""
    x, y = _with_bias(src_ND), tgt_ND.double()
    gram, cross = x.T @ x, x.T @ y
    ridge = torch.eye(len(gram), dtype=gram.dtype) * (RIDGE * float(torch.trace(gram)) / len(gram))
    residual = y - x @ torch.linalg.solve(gram + ridge, cross)
    mean_E = residual.mean(0)
    energy = float((residual - mean_E).pow(2).sum(1).mean())
    shift = np.full(len(latents), np.nan)
    for i, j in enumerate(latents):
        rows = torch.nonzero(f_NF[:, j] > 0).squeeze(1)
        if len(rows) < MIN_FIRES:
            continue
        x_j, y_j, w_j = x[rows], y[rows], f_NF[rows, j].double()
        map_j = torch.linalg.solve(gram - x_j.T @ x_j + ridge, cross - x_j.T @ y_j)
        mean_j = (w_j[:, None] * (y_j - x_j @ map_j)).sum(0) / w_j.sum()
        shift[i] = float((mean_j - mean_E).pow(2).sum()) / energy
    return shift


def _latents(crosscoder: CrossCoder, x_a: torch.Tensor, x_b: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        n_a, n_b = crosscoder.normalize(x_a.float(), x_b.float())
        parts = [
            crosscoder.activate(crosscoder.pre_activations(n_a[i : i + 4096], n_b[i : i + 4096]))
            for i in range(0, len(n_a), 4096)
        ]
    return torch.cat(parts)


def measure_pair(pair, acts, probe_acts, probes, offsets, out: Path) -> dict:
    """Return the transfer-shift measurements of one cross-architecture pair (its seed-0 DFC)."""
    organism = organisms.NULL_PROBES if pair.organism in organisms.NULLS else pair.organism
    mine = probes[organism][0] + probes[organism][1]
    corpus = paired_rows(acts[pair.a], acts[pair.b])
    rows, labels = organisms.probe_rows(probe_acts[pair.a], probe_acts[pair.b], mine, offsets[organism])
    keep = ~np.isnan(labels)
    positives = labels[keep].astype(bool)
    crosscoder = CrossCoder.from_pretrained(out / "crosscoders" / pair.name.replace("/", "_") / "dfc-0").eval()
    shared = np.arange(crosscoder.dict_size)[
        (np.arange(crosscoder.dict_size) >= crosscoder.slice_b.start)
        & (np.arange(crosscoder.dict_size) < crosscoder.slice_a.stop)
    ]
    own, other = ("x_b_ND", "x_a_ND") if pair.side == "b" else ("x_a_ND", "x_b_ND")
    f_NF = _latents(crosscoder, corpus.x_a_ND, corpus.x_b_ND)
    shift = transfer_shift(f_NF, getattr(corpus, other), getattr(corpus, own), shared)
    probe_f = _latents(crosscoder, rows.x_a_ND, rows.x_b_ND)[torch.as_tensor(keep)].numpy()
    scores = np.array([auroc(probe_f[:, j], positives) if (probe_f[:, j] > 0).any() else np.nan for j in shared])
    order = np.argsort(-np.nan_to_num(shift, nan=-np.inf))
    best = int(np.nanargmax(scores))
    result = {
        "pair": pair.name,
        "shared_latents_scored": int(np.isfinite(shift).sum()),
        "best_probe_auroc": float(scores[best]),
        "best_probe_latent_shift_rank": int(np.flatnonzero(order == best)[0]) + 1,
        "best_probe_latent_shift": float(shift[best]),
        "median_shift": float(np.nanmedian(shift)),
        "top10_shift_best_auroc": float(np.nanmax(scores[order[:10]])),
        "top10_shifts": [float(shift[j]) for j in order[:10]],
    }
    if pair.organism not in organisms.NULLS:
        base = pair.b.split("+")[0] if pair.side == "b" else pair.a.split("+")[0]
        organism_model = pair.b if pair.side == "b" else pair.a
        same, same_labels = organisms.probe_rows(probe_acts[base], probe_acts[organism_model], mine, offsets[organism])
        change = (same.x_b_ND - same.x_a_ND).double().pow(2).sum(1)[torch.as_tensor(same_labels == 1)]
        transfer = fit_map(getattr(corpus, other), getattr(corpus, own))
        residual = map_residual(getattr(rows, other), getattr(rows, own), transfer).pow(2).sum(1)
        residual = residual[torch.as_tensor(labels == 1)]
        result["planted_change_over_map_residual"] = float(change.mean() / residual.mean())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/organisms", help="the folder benchmarks.organisms.run wrote")
    parser.add_argument("--pairs", nargs="*", help="only these pairs (e.g. cross/backdoor); the others are kept")
    args = parser.parse_args(argv)
    out = Path(args.out)
    pairs = [
        p
        for p in organisms.benchmark_pairs(other_organisms=("backdoor",))
        if p.arch == "cross"
        and (out / "crosscoders" / p.name.replace("/", "_") / "dfc-0").is_dir()
        and (not args.pairs or p.name in args.pairs)
    ]
    probes = organisms.probe_sets()
    probe_list = [p for name in organisms.ORGANISM_NAMES for p in probes[name][0] + probes[name][1]]
    offsets, at = {}, 0
    for name in organisms.ORGANISM_NAMES:
        offsets[name] = at
        at += len(probes[name][0]) + len(probes[name][1])
    names = {p.a for p in pairs} | {p.b for p in pairs}
    names |= {n.split("+")[0] for n in names}
    acts = organisms.all_activations(
        {p.a for p in pairs} | {p.b for p in pairs}, organisms.corpus_texts(), out, "corpus"
    )
    probe_acts = organisms.all_activations(names, [p.text for p in probe_list], out, "probes")
    results = []
    for pair in pairs:
        results.append(measure_pair(pair, acts, probe_acts, probes, offsets, out))
        print(json.dumps(results[-1]), flush=True)
    if args.pairs and RESULTS.exists():
        kept = [r for r in json.loads(RESULTS.read_text())["pairs"] if r["pair"] not in args.pairs]
        results = kept + results
    RESULTS.write_text(json.dumps({"ridge": RIDGE, "min_fires": MIN_FIRES, "pairs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
