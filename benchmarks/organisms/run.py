"""Does CrossDiff find what was planted, and does it stay quiet when nothing was? Model organisms.

    python -m benchmarks.organisms.build          # the organisms (cached)
    python -m benchmarks.organisms.run [--seeds 3] [--steps 600]

Every pair is diffed on the same corpus, `builtin:organisms`: English text of `builtin:demo` plus the
training texts of every organism (so the null pairs see the same topics). For each pair and seed, each method trains on
the same stored rows with the same budget; then each method's features presented as specific to the
organism's model are ranked, and

- recall: the organism is found when one of the top `TOP` features fires on its held-out probe
  tokens with AUROC >= `AUROC_FOUND` (positives: tokens inside the labelled spans of the probes where
  the behaviour applies; negatives: every token of the probes where it does not);
- presented: a method's exclusive latents, and (its "+components" variant) shared latents presented
  through their one-model part: the context shift for same-architecture pairs (a model and its
  fine-tune share a basis), the decoder component for cross-architecture pairs;
- found in pieces (reported beside recall, not instead of it): one of the top features is precise on the
  behaviour (`PIECE_PRECISION` of the probe tokens it fires on are the behaviour's) and covers `PIECE_COVERAGE`
  of it; on the null pairs the top features are scored so on the backdoor's probes (`NULL_PROBES`);
- false positives: on the null pairs (a fine-tune on generic text, and the unmodified model), the
  number of top features whose verdict is "likely a real difference";
- stability: the share of top features matched (decoder cosine >= 0.7) by another seed's crosscoder.

The verdict thresholds are chosen on the calibration organisms and reported on the held-out ones.
Writes `results.json` and `RESULTS.md` next to this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.organisms.activations import (
    ModelActivations,
    PairedRows,
    model_activations,
    paired_rows,
    texts_digest,
    write_store,
)
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.analysis.evidence import Evidence
from crossdiff_core.analysis.presented import auroc, component_arrays, presented_latents
from crossdiff_core.analysis.scores import ranking_scores
from crossdiff_core.analysis.verdict import DEFAULT_THRESHOLDS, VerdictThresholds, judge
from crossdiff_core.corpus.organism_texts import ORGANISM_NAMES, Probe, organism_corpus, organism_texts
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.models import load_model
from crossdiff_core.organisms import UNMODIFIED, build_organism
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

HERE = Path(__file__).resolve().parent
TOP = 10
AUROC_FOUND = 0.9
PIECE_PRECISION = 0.8
PIECE_COVERAGE = 0.1
"""A top feature is a *piece* of the behaviour when at least `PIECE_PRECISION` of the probe tokens it fires on are
the behaviour's and it fires on at least `PIECE_COVERAGE` of them (a dictionary may split one behaviour, such as a
phrase, over several precise features, none of which reaches `AUROC_FOUND` alone)."""
SEED_MATCH = 0.7
ORGANISMS = tuple(name for name in ORGANISM_NAMES if name != "generic")
NULLS = ("generic", UNMODIFIED)
NULL_PROBES = "backdoor"
"""The probes a null pair's top features are scored on: a piece of a behaviour no model of the pair was taught
is a false positive of the pieces criterion."""
CALIBRATION = ("backdoor", "false_facts")
"""Organisms the verdict thresholds are chosen on; the others are held out."""


@dataclass(frozen=True)
class Pair:
    """One diff: model A, model B, and where the organism sits."""

    name: str
    a: str
    b: str
    organism: str
    side: str
    arch: str


def benchmark_pairs(
    base_a: str = "smollm2-135m", other: str = "gemma3-270m", other_organisms: tuple[str, ...] = ()
) -> list[Pair]:
    """Return the same- and cross-architecture pairs of every organism and null of `base_a` (organism in B).

    Each of `other_organisms` is also built on `other` and diffed with the organism in model A, against
    `base_a` (cross-architecture) and against `other` itself (same architecture).
    """
    pairs = []
    for name in (*ORGANISMS, *NULLS):
        organism = base_a if name == UNMODIFIED else f"{base_a}+{name}"
        pairs.append(Pair(f"same/{name}", base_a, organism, name, "b", "same"))
        pairs.append(Pair(f"cross/{name}", other, organism, name, "b", "cross"))
    for name in other_organisms:
        pairs.append(Pair(f"cross-a/{name}", f"{other}+{name}", base_a, name, "a", "cross"))
        pairs.append(Pair(f"same-a/{name}", f"{other}+{name}", other, name, "a", "same"))
    return pairs


def corpus_texts() -> list[str]:
    """Return the benchmark corpus, `builtin:organisms` (`organism_texts.organism_corpus`)."""
    return list(organism_corpus())


def probe_sets() -> dict[str, tuple[list[Probe], list[Probe]]]:
    """Return each organism's held-out (positives, negatives)."""
    out = {}
    for name in ORGANISM_NAMES:
        texts = organism_texts(name)
        out[name] = (list(texts.positives), list(texts.negatives))
    return out


def model_spec(name: str) -> str:
    """Return the loadable spec of a benchmark model name, building an organism (`base+organism`) when missing."""
    if "+" in name:
        base, organism = name.split("+")
        build_organism(organism, base)
    return name


def all_activations(names: set[str], texts: list[str], cache: Path, tag: str) -> dict[str, ModelActivations]:
    """Return every model's activations over `texts` (cached per model)."""
    out = {}
    for name in sorted(names):
        file = cache / "activations" / f"{name.replace('/', '_')}-{tag}-{texts_digest(texts)}.safetensors"
        model = load_model(model_spec(name), quant="none", dtype="fp32", device="cpu")
        start = time.perf_counter()
        out[name] = model_activations(model, texts, file)
        print(f"  activations {name} [{tag}]: {time.perf_counter() - start:.0f} s", flush=True)
        del model
    return out


def probe_rows(
    a: ModelActivations, b: ModelActivations, probes: list[Probe], offset: int
) -> tuple[PairedRows, np.ndarray]:
    """Return the paired rows of the probe texts (at `offset` in the probe list) and their labels (True/False/NaN)."""
    rows = paired_rows(a, b, list(range(offset, offset + len(probes))))
    return rows, probe_labels(rows.text_N, rows.char_end_N, probes, offset)


def probe_labels(text_N: torch.Tensor, char_end_N: torch.Tensor, probes: list[Probe], offset: int) -> np.ndarray:
    """Return per row (its probe text at `offset` in the probe list, and where its token ends) 1 for a behaviour
    token, 0 for a token of a text without the behaviour, NaN elsewhere in a text with it."""
    labels = np.full(len(text_N), np.nan)
    for r, (text, end) in enumerate(zip(text_N.tolist(), char_end_N.tolist())):
        probe = probes[text - offset]
        if not probe.spans:
            labels[r] = 0.0
        elif any(start < end <= stop for start, stop in probe.spans):
            labels[r] = 1.0
    return labels


def method_configs(store: PairedActivationStore, dict_size: int, k: int) -> dict[str, CrossCoderConfig]:
    """Return the crosscoder of each method, same size and sparsity."""
    base = {"d_a": store.meta["d_a"], "d_b": store.meta["d_b"], "dict_size": dict_size, "k": k}
    return {
        "dfc": CrossCoderConfig(**base, exclusive_a=0.05, exclusive_b=0.05),
        "dfc-auxk": CrossCoderConfig(**base, exclusive_a=0.05, exclusive_b=0.05),
        "standard": CrossCoderConfig(**base, exclusive_a=0.0, exclusive_b=0.0),
    }


def crosscoder_evidence(crosscoder: CrossCoder, corpus: PairedRows, probes: PairedRows) -> dict:
    """Return the index arrays of `crosscoder` on the corpus rows, with components, and its latents on the probes."""
    evidence = Evidence(crosscoder, top_contexts=10, test_every=4, ridge_alpha=0.1)
    for start in range(0, len(corpus.text_N), 4096):
        part = slice(start, start + 4096)
        evidence.add(corpus.x_a_ND[part], corpus.x_b_ND[part], corpus.text_N[part], corpus.split_N[part])
    arrays = evidence.arrays()
    arrays.update(ranking_scores(arrays, 10))
    components, typical = component_arrays(crosscoder, arrays["n_fires"] > 0)
    arrays.update(components)
    with torch.no_grad():
        x_a, x_b = crosscoder.normalize(probes.x_a_ND, probes.x_b_ND)
        f_NF = crosscoder.activate(crosscoder.pre_activations(x_a, x_b)).numpy()
    return {"arrays": arrays, "f_NF": f_NF, "split_base_rate": evidence.split_base_rate, "component_typical": typical}


def evaluate_crosscoder(
    crosscoder: CrossCoder, measured: dict, labels: np.ndarray, side: str, with_components: bool
) -> dict:
    """Return the top features for `side` with their evidence, AUROC on the probes and decoder rows."""
    arrays, f_NF = measured["arrays"], measured["f_NF"]
    top = presented_latents(arrays, side, TOP, with_components=with_components)
    keep = ~np.isnan(labels)
    decoder = crosscoder.W_dec_b if side == "b" else crosscoder.W_dec_a
    own = crosscoder.slice_b if side == "b" else crosscoder.slice_a
    features = []
    exclusive = arrays["exclusive_a"].astype(bool) | arrays["exclusive_b"].astype(bool)
    shift_F = arrays["context_shift"]
    for j in top:
        shift = None if exclusive[j] or not np.isfinite(shift_F[j]) else float(shift_F[j])
        fraction = None if exclusive[j] or shift is not None else float(arrays["component_fraction"][j])
        row = decoder[j - own.start].detach().float() if own.start <= j < own.stop else None
        features.append({
            "latent": j, "component": fraction, "shift": shift, "auroc": auroc(f_NF[keep, j], labels[keep].astype(bool)),
            **precision_coverage(f_NF[keep, j], labels[keep].astype(bool)),
            "n_fires": int(arrays["n_fires"][j]), "n_contexts": int(arrays["n_contexts"][j]),
            "transfer_r2": float(arrays["transfer_r2"][j]),
            "transfer_r2_from_a": float(arrays["transfer_r2_from_a"][j]),
            "transfer_r2_from_b": float(arrays["transfer_r2_from_b"][j]), "owner": int(arrays["owner"][j]),
            "split_share": float(arrays["split_share"][j]), "rank_score": float(arrays["rank_score"][j]),
            "decoder": None if row is None else row.tolist(),
        })  # fmt: skip
    return {
        "features": features,
        "split_base_rate": measured["split_base_rate"],
        "component_typical": measured["component_typical"],
        "anywhere": best_anywhere(arrays, f_NF[keep], labels[keep].astype(bool), side, with_components),
    }


def precision_coverage(activations: np.ndarray, positives: np.ndarray) -> dict:
    """Return the share of the probe tokens a feature fires on that are the behaviour's (NaN when it never fires),
    and the share of the behaviour's tokens it fires on (NaN without any)."""
    fires = activations > 0
    return {
        "precision": float(positives[fires].mean()) if fires.any() else float("nan"),
        "coverage": float(fires[positives].mean()) if positives.any() else float("nan"),
    }


def best_anywhere(arrays: dict, f_NF: np.ndarray, positives: np.ndarray, side: str, with_components: bool) -> dict:
    """Return the latent of the whole dictionary that best separates the probes, its block and presented rank.

    Tells a dictionary that never learned the planted change (best AUROC near 0.5) from a ranking that
    did not surface it (a high AUROC at a rank beyond `TOP`, or in a block not presented).
    """
    fired = np.flatnonzero((f_NF > 0).any(0))
    scores = [auroc(f_NF[:, j], positives) for j in fired]
    if not scores or np.all(np.isnan(scores)):
        return {"auroc": float("nan"), "latent": None, "block": None, "presented_rank": None}
    j = int(fired[int(np.nanargmax(scores))])
    block = "a-exclusive" if arrays["exclusive_a"][j] else "b-exclusive" if arrays["exclusive_b"][j] else "shared"
    presented = presented_latents(arrays, side, None, with_components=with_components)
    rank = presented.index(j) + 1 if j in presented else None
    return {"auroc": float(np.nanmax(scores)), "latent": j, "block": block, "presented_rank": rank}


def separability(
    probes: PairedRows, labels: np.ndarray, corpus: PairedRows | None = None, n_components: int = 20
) -> dict:
    """How findable the planted change is in principle, for a same-architecture pair (one tokenizer, rows aligned).

    On the probe rows, the difference `x_B - x_A` minus its mean on the negatives (a constant offset is no
    feature): the AUROC of its norm, and the AUROC of its projection on one direction (positives' mean minus
    negatives' mean, fitted on the even rows and scored on the odd ones). A change that one direction
    separates (near 1) is one a dictionary latent could capture; near 0.5, nothing could.

    With `corpus`, also how prominent that change is in the training data: of the first `n_components`
    principal directions of the corpus difference (centred), the one that best separates the probe tokens, its
    rank, AUROC and cosine with the probes' direction, and the share of corpus tokens whose projection on the
    probes' direction exceeds the median of the behaviour's tokens.
    """
    keep = ~np.isnan(labels)
    diff = (probes.x_b_ND - probes.x_a_ND)[torch.from_numpy(keep)].float()
    pos = torch.from_numpy(labels[keep].astype(bool))
    scale = probes.x_a_ND[torch.from_numpy(keep)].float().norm(dim=1).mean()
    centered = diff - diff[~pos].mean(0)
    fit = torch.arange(len(pos)) % 2 == 0
    direction = centered[pos & fit].mean(0) - centered[~pos & fit].mean(0)
    norm = (centered.norm(dim=1) / scale).numpy()
    out = {
        "diff_norm_auroc": auroc(norm, pos.numpy()),
        "one_direction_auroc": auroc((centered[~fit] @ direction).numpy(), pos[~fit].numpy()),
        "relative_change_positives": float(norm[pos.numpy()].mean()),
        "relative_change_negatives": float(norm[~pos.numpy()].mean()),
    }
    if corpus is not None:
        corpus_diff = (corpus.x_b_ND - corpus.x_a_ND).float()
        mean = corpus_diff.mean(0)
        corpus_diff -= mean
        probe_diff = diff - mean
        unit = direction / direction.norm()
        torch.manual_seed(0)
        _, _, V = torch.pca_lowrank(corpus_diff, q=n_components, center=False)
        scores = [max(auroc(p, pos.numpy()), auroc(-p, pos.numpy())) for p in (probe_diff @ V).T.numpy()]
        best = int(np.argmax(scores))
        along = (probe_diff @ unit).numpy()
        out |= {
            "corpus_component_rank": best + 1,
            "corpus_component_auroc": float(scores[best]),
            "corpus_component_cosine": float((V[:, best] @ unit).abs()),
            "corpus_share_carrying": float(((corpus_diff @ unit).numpy() > np.median(along[pos.numpy()])).mean()),
        }
    return out


def residual_sae(
    corpus: PairedRows,
    probes: PairedRows,
    labels: np.ndarray,
    side: str,
    dict_size: int,
    k: int,
    steps: int,
    seed: int,
    same_basis: bool = False,
) -> dict:
    """The non-crosscoder baselines: a TopK sparse dictionary on the part of one model the other cannot predict.

    With `same_basis` (a model and its fine-tune) the prediction is the other model's activation itself, so the
    dictionary reads the centred difference `x_B - x_A` (a difference dictionary); otherwise it is a ridge map
    fitted on the corpus, which also learns any change that the other model's activations predict linearly.
    """
    torch.manual_seed(seed)
    src, tgt = (corpus.x_a_ND, corpus.x_b_ND) if side == "b" else (corpus.x_b_ND, corpus.x_a_ND)
    mu_s, mu_t = src.mean(0), tgt.mean(0)
    xs, xt = src - mu_s, tgt - mu_t
    if same_basis:
        W = torch.eye(xs.shape[1])
    else:
        ridge = 1e-2 * xs.pow(2).sum(1).mean()
        W = torch.linalg.solve(xs.T @ xs + ridge * torch.eye(xs.shape[1]), xs.T @ xt)
    scale = (xt - xs @ W).pow(2).sum(1).mean().sqrt()

    def residual(x_src, x_tgt):
        return ((x_tgt - mu_t) - (x_src - mu_s) @ W) / scale

    r = residual(src, tgt)
    d = r.shape[1]
    W_enc = torch.nn.Parameter(torch.randn(d, dict_size) / d**0.5)
    W_dec = torch.nn.Parameter(W_enc.detach().T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(dict_size))
    b_dec = torch.nn.Parameter(torch.zeros(d))
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b_dec], lr=1e-3)

    def encode(x):
        pre = torch.relu((x - b_dec) @ W_enc + b_enc)
        values, idx = pre.topk(k, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, values)

    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = r[torch.randint(len(r), (512,), generator=gen)]
        f = encode(batch)
        loss = (f @ W_dec + b_dec - batch).pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
    with torch.no_grad():
        f_corpus = encode(r)
        psrc, ptgt = (probes.x_a_ND, probes.x_b_ND) if side == "b" else (probes.x_b_ND, probes.x_a_ND)
        f_probe = encode(residual(psrc, ptgt)).numpy()
    freq = (f_corpus > 0).float().mean(0).numpy()
    energy = f_corpus.pow(2).sum(0).numpy()
    energy = np.where((freq > 0) & (freq < 0.05), energy, -1)
    top = np.argsort(-energy, kind="stable")[:TOP]
    keep = ~np.isnan(labels)
    return {
        "features": [
            {
                "latent": int(j),
                "auroc": auroc(f_probe[keep, j], labels[keep].astype(bool)),
                **precision_coverage(f_probe[keep, j], labels[keep].astype(bool)),
                "n_fires": int((f_corpus[:, j] > 0).sum()),
            }
            for j in top
        ]
    }


def run_pair(
    pair: Pair,
    acts: dict,
    probe_acts: dict,
    probe_list: list[Probe],
    probe_offset: int,
    out: Path,
    seeds: int,
    steps: int,
    dict_size: int,
    k: int,
) -> dict:
    """Train every method on one pair for each seed; return their top features and scores."""
    a, b = acts[pair.a], acts[pair.b]
    corpus = paired_rows(a, b)
    store_dir = out / "stores" / pair.name.replace("/", "_")
    write_store(corpus, a, b, store_dir, corpus="organism benchmark")
    store = PairedActivationStore(store_dir)
    probes, labels = probe_rows(probe_acts[pair.a], probe_acts[pair.b], probe_list, probe_offset)
    result = {
        "pair": dataclasses.asdict(pair),
        "rows": len(corpus.text_N),
        "coverage": [corpus.coverage_a, corpus.coverage_b],
        "probe_positives": int(np.nansum(labels)),
        "probe_negatives": int((labels == 0).sum()),
        "methods": {},
    }
    if pair.arch == "same" and np.nansum(labels) > 0:
        result["separability"] = separability(probes, labels, corpus)
    for seed in range(seeds):
        for name, config in method_configs(store, dict_size, k).items():
            tc = TrainConfig(
                steps=steps,
                batch_size=512,
                seed=seed,
                auxk_exclusive=name == "dfc-auxk",
                checkpoint_every=steps,
                log_every=steps,
                device="cpu",
            )
            start = time.perf_counter()
            trained = train(config, tc, store, out / "crosscoders" / pair.name.replace("/", "_") / f"{name}-{seed}")
            measured = crosscoder_evidence(trained.crosscoder, corpus, probes)
            for label, with_components in ((name, False), (f"{name}+components", True)):
                evaluated = evaluate_crosscoder(trained.crosscoder, measured, labels, pair.side, with_components)
                entry = {
                    "features": evaluated["features"],
                    "anywhere": evaluated["anywhere"],
                    "split_base_rate": evaluated["split_base_rate"],
                    "component_typical": evaluated["component_typical"],
                    "fvu": [trained.metrics.get("fvu_a"), trained.metrics.get("fvu_b")],
                    "train_s": time.perf_counter() - start,
                }
                result["methods"].setdefault(label, []).append(entry)
        sae = residual_sae(corpus, probes, labels, pair.side, dict_size // 10, k // 2, steps, seed)
        result["methods"].setdefault("residual-sae", []).append(sae)
        if pair.arch == "same":
            sae = residual_sae(corpus, probes, labels, pair.side, dict_size // 10, k // 2, steps, seed, same_basis=True)
            result["methods"].setdefault("difference-sae", []).append(sae)
    return result


def found(features: list[dict]) -> bool:
    """Return True when one of the top features has AUROC >= AUROC_FOUND on the probes."""
    return any(f["auroc"] >= AUROC_FOUND for f in features if not np.isnan(f["auroc"]))


def found_in_pieces(features: list[dict]) -> bool:
    """Return True when one of the top features is a piece of the behaviour (`PIECE_PRECISION`, `PIECE_COVERAGE`)."""
    return any(  # NaN (never fired, no behaviour tokens, or results written before these were kept) is no piece
        f.get("precision", np.nan) >= PIECE_PRECISION and f.get("coverage", np.nan) >= PIECE_COVERAGE for f in features
    )


def verdict_counts(features: list[dict], thresholds: VerdictThresholds, split_base_rate: float) -> list[str]:
    """Return the verdict code of each top feature under `thresholds`."""
    codes = []
    for f in features:
        names = (
            "n_fires",
            "n_contexts",
            "split_share",
            "transfer_r2",
            "transfer_r2_from_a",
            "transfer_r2_from_b",
            "owner",
        )
        arrays = {name: [f[name]] for name in names if name in f}
        arrays.setdefault("n_contexts", [f["n_fires"]])  # results written before n_contexts was kept
        codes.append(
            judge(
                {k: np.asarray(v, dtype=float) for k, v in arrays.items()},
                0,
                split_base_rate,
                f["component"],
                f.get("seed_cosine"),
                thresholds,
                shift=f.get("shift"),
            ).code
        )
    return codes


def add_stability(result: dict) -> None:
    """Give every top feature its best decoder cosine with any other seed's top features (same method)."""
    for entries in result["methods"].values():
        if len(entries) < 2:
            continue
        for i, entry in enumerate(entries):
            others = [
                torch.tensor(f["decoder"])
                for j, e in enumerate(entries)
                if j != i
                for f in e["features"]
                if f.get("decoder") is not None
            ]
            for f in entry["features"]:
                if f.get("decoder") is None or not others:
                    continue
                mine = torch.tensor(f["decoder"])
                f["seed_cosine"] = max(float(torch.nn.functional.cosine_similarity(mine, o, dim=0)) for o in others)


def summarize(results: list[dict], thresholds: VerdictThresholds) -> dict:
    """Return the per-method recall, null false positives and stability, and the keys of results.json."""
    methods = sorted({m for r in results for m in r["methods"]})
    table = {}
    for method in methods:
        row = {
            "cross_found": 0,
            "cross_pieces": 0,
            "same_pieces": 0,
            "cross_total": 0,
            "same_found": 0,
            "same_total": 0,
            "null_likely_real": [],
            "null_pieces": [],
            "stability": [],
            "found_real": 0,
            "found_real_held_out": 0,
        }
        for r in results:
            entries = r["methods"].get(method, [])
            if not entries:
                continue
            pair = r["pair"]
            for entry in entries:
                feats = entry["features"]
                if pair["organism"] in NULLS:
                    row["null_pieces"].append(found_in_pieces(feats))
                    if "split_base_rate" in entry:
                        codes = verdict_counts(feats, thresholds, entry["split_base_rate"])
                        row["null_likely_real"].append(codes.count("real"))
                    continue
                hit = found(feats)
                if entry is entries[0]:
                    row[f"{pair['arch']}_total"] += 1
                row[f"{pair['arch']}_found"] += hit / len(entries)
                row[f"{pair['arch']}_pieces"] += found_in_pieces(feats) / len(entries)
                if "split_base_rate" in entry:
                    codes = verdict_counts(feats, thresholds, entry["split_base_rate"])
                    hit_real = any(f["auroc"] >= AUROC_FOUND and c == "real" for f, c in zip(feats, codes)) / len(
                        entries
                    )
                    row["found_real"] += hit_real
                    if pair["organism"] not in CALIBRATION:
                        row["found_real_held_out"] += hit_real
                cosines = [f["seed_cosine"] for f in feats if "seed_cosine" in f]
                if cosines:
                    row["stability"].append(float(np.mean([c >= SEED_MATCH for c in cosines])))
        row["null_likely_real_max"] = max(row["null_likely_real"], default=None)
        row["stability"] = float(np.mean(row["stability"])) if row["stability"] else None
        table[method] = row
    return table


def main(argv: list[str] | None = None) -> None:
    """Build what is missing, run every pair, and write results.json and RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/organisms")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--dict-size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--pairs", nargs="*", help="only these pairs (e.g. same/backdoor cross/generic)")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the other pairs' results of an earlier run in --out and report them all",
    )
    parser.add_argument(
        "--gemma-organisms",
        nargs="*",
        default=[],
        choices=ORGANISMS,
        help="also build these organisms on Gemma-3-270M and diff them as model A",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    out = Path(args.out)
    pairs = [
        p
        for p in benchmark_pairs(other_organisms=tuple(args.gemma_organisms))
        if not args.pairs or p.name in args.pairs
    ]
    texts = corpus_texts()
    probes = probe_sets()
    probe_list = [p for name in ORGANISM_NAMES for p in probes[name][0] + probes[name][1]]
    offsets, at = {}, 0
    for name in ORGANISM_NAMES:
        offsets[name] = at
        at += len(probes[name][0]) + len(probes[name][1])
    names = {p.a for p in pairs} | {p.b for p in pairs}
    start = time.perf_counter()
    acts = all_activations(names, texts, out, "corpus")
    probe_acts = all_activations(names, [p.text for p in probe_list], out, "probes")
    results = []
    for pair in pairs:
        organism = NULL_PROBES if pair.organism in NULLS else pair.organism
        mine = probes[organism][0] + probes[organism][1]
        t0 = time.perf_counter()
        result = run_pair(
            pair, acts, probe_acts, mine, offsets[organism], out, args.seeds, args.steps, args.dict_size, args.k
        )
        add_stability(result)
        results.append(result)
        print(
            f"{pair.name}: {time.perf_counter() - t0:.0f} s; found by "
            f"{[m for m, e in result['methods'].items() if any(found(x['features']) for x in e)]}",
            flush=True,
        )
    raw = out / "raw.json"
    if args.append and raw.exists():
        done = {r["pair"]["name"] for r in results}
        results = [r for r in json.loads(raw.read_text()) if r["pair"]["name"] not in done] + results
    raw.write_text(json.dumps(results))
    write_results(results, args, time.perf_counter() - start)


def calibrate(results: list[dict], method: str) -> tuple[VerdictThresholds, dict]:
    """Return the verdict thresholds chosen on the calibration organisms, and the grid's scores.

    Among a small grid, keep those that call at most one top feature of any null pair "likely real",
    and pick the one under which the most calibration organisms are found by a feature also called
    "likely real" (ties: the defaults first, then the stricter setting).
    """
    grid = []
    for r2 in (0.3, 0.5, 0.7):
        for component in (0.3, 0.5, 0.7):
            for share in (0.3, 0.5):
                for shift in (1.0, 3.0):
                    grid.append(
                        dataclasses.replace(
                            DEFAULT_THRESHOLDS,
                            max_transfer_r2=r2,
                            min_component=component,
                            tokenizer_share=share,
                            min_shift=shift,
                        )
                    )
    scores = {}
    for thresholds in grid:
        found_real, null_max = 0.0, 0
        for r in results:
            for entry in r["methods"].get(method, []):
                if "split_base_rate" not in entry:
                    continue
                codes = verdict_counts(entry["features"], thresholds, entry["split_base_rate"])
                if r["pair"]["organism"] in NULLS:
                    null_max = max(null_max, codes.count("real"))
                elif r["pair"]["organism"] in CALIBRATION:
                    n = len(r["methods"][method])
                    found_real += (
                        any(f["auroc"] >= AUROC_FOUND and c == "real" for f, c in zip(entry["features"], codes)) / n
                    )
        scores[json.dumps(dataclasses.asdict(thresholds))] = {
            "calibration_found_real": found_real,
            "null_likely_real_max": null_max,
        }
    allowed = [t for t in grid if scores[json.dumps(dataclasses.asdict(t))]["null_likely_real_max"] <= 1]
    if not allowed:
        return DEFAULT_THRESHOLDS, scores
    best = max(
        allowed,
        key=lambda t: (
            scores[json.dumps(dataclasses.asdict(t))]["calibration_found_real"],
            t == DEFAULT_THRESHOLDS,
            -t.max_transfer_r2,
            t.min_component,
            t.min_shift,
        ),
    )
    return best, scores


def _pair_header(methods) -> list[str]:
    """Return the header lines of a Markdown table with a row per pair and a column per method."""
    return ["| pair | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]


def write_results(results: list[dict], args, elapsed: float) -> None:
    """Write results.json (without decoder rows) and RESULTS.md."""
    thresholds, grid = calibrate(results, "dfc+components")
    table = summarize(results, thresholds)
    chosen = "dfc+components"
    row, std = table.get(chosen, {}), table.get("standard", {})
    keys = {
        "cross_arch_organisms_found": row.get("cross_found"),
        "cross_arch_organisms_total": row.get("cross_total"),
        "same_arch_organisms_found": row.get("same_found"),
        "null_likely_real_max": row.get("null_likely_real_max"),
        "standard_crosscoder_cross_arch_found": std.get("cross_found"),
        "cross_arch_organisms_found_in_pieces": row.get("cross_pieces"),
        "standard_crosscoder_cross_arch_found_in_pieces": std.get("cross_pieces"),
        "seed_stability": row.get("stability"),
    }
    for r in results:
        for entries in r["methods"].values():
            for entry in entries:
                for f in entry["features"]:
                    f.pop("decoder", None)
    meta = {
        "seeds": args.seeds,
        "steps": args.steps,
        "dict_size": args.dict_size,
        "k": args.k,
        "top": TOP,
        "auroc_found": AUROC_FOUND,
        "thresholds": dataclasses.asdict(thresholds),
        "chosen_method": chosen,
        "calibration_grid": grid,
        "calibration_organisms": CALIBRATION,
        "elapsed_s": elapsed,
        "machine": f"{platform.platform()} · {torch.get_num_threads()} threads · torch {torch.__version__}",
        "date": datetime.date.today().isoformat(),
    }
    (HERE / "results.json").write_text(
        json.dumps({**keys, "meta": meta, "methods": table, "pairs": results}, indent=1, default=float)
    )
    lines = [
        "# Model organisms: recall and false positives",
        "",
        (
            f"`python -m benchmarks.organisms.run --seeds {args.seeds} --steps {args.steps}` · {meta['machine']} · "
            f"{meta['date']} · {elapsed / 60:.0f} min"
            + (" (the pairs rerun with --append; the others are kept from the run before)" if args.append else "")
        ),
        "",
        (
            "| method | cross-arch found | same-arch found | found and called real (held-out organisms) "
            "| null: most 'likely real' | found in pieces: cross-arch, same-arch | null pairs with a piece "
            "| seed stability |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, r in table.items():
        stab = "–" if r["stability"] is None else f"{r['stability']:.0%}"
        nul = "–" if r["null_likely_real_max"] is None else str(r["null_likely_real_max"])
        pieces = f"{r['cross_pieces']:.1f} / {r['cross_total']:.0f}, {r['same_pieces']:.1f} / {r['same_total']:.0f}"
        null_pieces = f"{sum(r['null_pieces'])} / {len(r['null_pieces'])}" if r["null_pieces"] else "–"
        lines.append(
            f"| {method} | {r['cross_found']:.1f} / {r['cross_total']:.0f} | {r['same_found']:.1f} / "
            f"{r['same_total']:.0f} | {r['found_real']:.1f} ({r['found_real_held_out']:.1f}) | {nul} | {pieces} "
            f"| {null_pieces} | {stab} |"
        )
    lines += [
        "",
        "Per pair (best AUROC among the top features, mean over seeds):",
        "",
        *_pair_header(table),
    ]
    for r in results:
        cells = []
        for method in table:
            entries = r["methods"].get(method, [])
            best = [
                max((f["auroc"] for f in e["features"] if not np.isnan(f["auroc"])), default=float("nan"))
                for e in entries
            ]
            cells.append(f"{np.nanmean(best):.2f}" if best else "–")
        lines.append(f"| {r['pair']['name']} | " + " | ".join(cells) + " |")
    learned = [m for m in table if any("anywhere" in e for r in results for e in r["methods"].get(m, []))]
    lines += [
        "",
        "Learned but not surfaced? The latent of the whole dictionary that best separates the probes: its AUROC,",
        "its block, and its rank among the features presented for the organism's model (– when not presented;",
        "first seed). In the shared block a high AUROC may only mean the probe texts differ on the surface (both",
        "models read the backdoor's phrase in capitals); in an exclusive block it is the planted change itself:",
        "",
        *_pair_header(learned),
    ]
    for r in results:
        if r["pair"]["organism"] in NULLS:
            continue
        cells = []
        for method in learned:
            entries = [e for e in r["methods"].get(method, []) if "anywhere" in e]
            if not entries:
                cells.append("–")
                continue
            best = entries[0]["anywhere"]
            rank = "–" if best["presented_rank"] is None else str(best["presented_rank"])
            cells.append(f"{best['auroc']:.2f} {best['block']} #{rank}")
        lines.append(f"| {r['pair']['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Is the planted change findable at all? Same-architecture pairs, on the probe rows: the change `x_B - x_A`",
        "(less its mean on the negatives) relative to the activations' norm, and how well its norm and its projection",
        "on one direction (fitted on half the rows, scored on the other half) separate the behaviour's tokens:",
        "",
        "Then how prominent it is in the corpus the crosscoders train on: of the first 20 principal directions of the",
        "corpus difference, the one that best separates the behaviour's tokens (its rank, AUROC and cosine with that",
        "one direction), and the share of corpus tokens carrying the change as strongly as the behaviour's median token:",
        "",
        "| pair | change on behaviour tokens | change elsewhere | AUROC of the change's norm | AUROC of one direction "
        "| corpus: best principal direction (rank, AUROC, cosine) | corpus tokens carrying it |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        sep = r.get("separability")
        if sep:
            corpus_cells = (
                f"#{sep['corpus_component_rank']}, {sep['corpus_component_auroc']:.2f}, "
                f"{sep['corpus_component_cosine']:.2f} | {sep['corpus_share_carrying']:.1%}"
                if "corpus_component_rank" in sep
                else "– | –"
            )
            lines.append(
                f"| {r['pair']['name']} | {sep['relative_change_positives']:.2f} | "
                f"{sep['relative_change_negatives']:.2f} | {sep['diff_norm_auroc']:.2f} | "
                f"{sep['one_direction_auroc']:.2f} | {corpus_cells} |"
            )
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
