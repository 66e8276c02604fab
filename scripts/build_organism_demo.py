"""Build the known-answer demo that ships in `pretrained/`: a DFC on SmolLM2 and SmolLM2 taught false facts.

    python scripts/build_organism_demo.py [--organism false_facts] [--steps 1500]

1. Builds the organism (`crossdiff_core.organisms.build_organism`, cached; minutes on a CPU).
2. Harvests every paired token of `builtin:organisms` from both models in fp32 (no quantization: a
   LoRA update is small next to 4-bit rounding) into `runs/organism-demo/<organism>/store`.
3. Trains a DFC (`--dict-size`, `--k`, 5% exclusive latents per model, the training defaults) on it.
4. Builds its feature index on `builtin:organisms` with the same fp32 models. The two models share a
   residual basis, so the index measures each shared latent's context shift (`evidence.ContextShift`).
5. Writes `demo.json`: where the organism's held-out probe tokens rank the presented features (the
   known answer, checked), with the training record. Only when a top-10 feature presented for the
   organism picks out its probe tokens (AUROC >= 0.9) are the crosscoder, its index and `demo.json`
   copied into `pretrained/smollm2-135m__smollm2-135m+<organism>/`: a demo whose answer the tool
   does not find would teach users to trust the wrong features.

The organism weights themselves do not ship (540 MB): the app says how to build them when they are missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.paired import run_paired
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.alignment import align_batch
from crossdiff_core.analysis import IndexConfig, build_index
from crossdiff_core.analysis.presented import auroc
from crossdiff_core.corpus.organism_texts import organism_corpus, organism_texts
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.models import load_model, organism_folder
from crossdiff_core.organisms import build_organism, read_record
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

BASE = "smollm2-135m"
CORPUS = "builtin:organisms"
TOP = 10


def probe_aurocs(crosscoder, pair, name: str) -> np.ndarray:
    """Return each latent's AUROC on the organism's held-out probes (span tokens against negative probes)."""
    texts = organism_texts(name)
    probes = list(texts.positives) + list(texts.negatives)
    aligned = align_batch(pair[0].tokenizer, pair[1].tokenizer, [p.text for p in probes], max_tokens=256)
    labels, rows_a, rows_b = [], [], []
    for probe, run in zip(probes, run_paired(*pair, aligned)):
        rows_a.append(run.x_a_PD)
        rows_b.append(run.x_b_PD)
        for end in run.char_end:
            inside = any(s < end <= e for s, e in probe.spans)
            labels.append(1.0 if inside else (0.0 if not probe.spans else np.nan))
    with torch.no_grad():
        f_NF = crosscoder.encode(torch.cat(rows_a), torch.cat(rows_b)).numpy()
    labels = np.asarray(labels)
    keep = ~np.isnan(labels)
    return np.array([auroc(f_NF[keep, j], labels[keep].astype(bool)) for j in range(f_NF.shape[1])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organism", default="false_facts")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dict-size", type=int, default=1024)
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args()
    name = args.organism
    work = ROOT / "runs" / "organism-demo" / name
    shipped = ROOT / "pretrained" / f"{BASE}__{BASE}+{name}"
    start = time.perf_counter()

    build_organism(name, BASE, progress=lambda p: print(f"\rorganism step {p.step}/{p.steps}", end="", flush=True))
    pair = tuple(load_model(spec, quant="none", dtype="fp32", device="cpu") for spec in (BASE, f"{BASE}+{name}"))
    store_dir = work / "store"
    harvest(
        *pair,
        CORPUS,
        store_dir,
        HarvestConfig(n_tokens=10_000_000, ctx_len=256, batch_windows=32),
        progress=lambda p: print(f"\rharvest {p.tokens:,} tokens", end="", flush=True),
    )
    store = PairedActivationStore(store_dir, allow_incomplete=True)
    config = CrossCoderConfig(
        d_a=pair[0].d_model, d_b=pair[1].d_model, dict_size=args.dict_size, k=args.k, exclusive_a=0.05, exclusive_b=0.05
    )
    trained = train(
        config,
        TrainConfig(steps=args.steps, batch_size=512, seed=0, device="cpu", checkpoint_every=args.steps, log_every=100),
        store,
        work / "dfc",
    )
    index = build_index(
        trained.crosscoder, pair, IndexConfig(corpus=CORPUS, n_windows=len(organism_corpus()), ctx_len=256)
    )
    index.save(work / "dfc" / "feature_index")

    scores = probe_aurocs(trained.crosscoder, pair, name)
    answer = {}
    for side in ("a", "b"):
        presented = index.presented(side, TOP)
        answer[side] = [
            {
                "rank": rank,
                "latent": j,
                "probe_auroc": round(float(scores[j]), 3),
                "verdict": index.verdict(j).code if index.verdict(j) else None,
                "context_shift": index.change(j),
            }
            for rank, j in enumerate(presented, 1)
        ]
    record = read_record(organism_folder(BASE, name))
    demo = {
        "organism": f"{BASE}+{name}",
        "taught": record["taught"],
        "probe_loss": record["probe_loss"],
        "store_rows": len(store),
        "steps": args.steps,
        "metrics": trained.metrics,
        "top_presented": answer,
        "found": any(f["probe_auroc"] >= 0.9 for f in answer["b"]),
        "best_auroc_any_latent": round(float(np.nanmax(scores)), 3),
        "elapsed_s": round(time.perf_counter() - start),
    }
    (work / "dfc" / "demo.json").write_text(json.dumps(demo, indent=1, default=float))
    print(
        f"\nfound={demo['found']} (best probe AUROC of any latent {demo['best_auroc_any_latent']}); top presented for B:"
    )
    for f in answer["b"]:
        print(f"  #{f['rank']} latent {f['latent']} AUROC {f['probe_auroc']} {f['verdict']} shift {f['context_shift']}")
    if not demo["found"]:
        print(f"Not shipped: the answer is not among the top {TOP} presented features ({work / 'dfc'} kept).")
        return
    if shipped.exists():
        shutil.rmtree(shipped)
    shutil.copytree(work / "dfc", shipped, ignore=shutil.ignore_patterns("checkpoint*", "*.pt"))
    print(f"Shipped to {shipped}")


if __name__ == "__main__":
    main()
