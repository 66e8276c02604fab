"""The organism benchmark in small: a planted difference is learned, presented, judged real; the null pair stays
quiet; the checks fail when the method is broken on purpose.

The organism is SmolLM2-135M-Instruct with one random direction added to the input embedding of colour
words (`organisms.edit_organism`): a concept both models hold, with a part only the organism writes,
which is how a fine-tune's reaction to a topic looks to a crosscoder. Both models are read at an early
layer to keep this fast. Everything else is the real pipeline: harvest, DFC training, feature index,
presented features, verdicts, and AUROC on held-out probe sentences. The two models share a residual basis,
so shared latents are presented by their context shift (`evidence.ContextShift`).
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.paired import run_paired
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.alignment import align_batch
from crossdiff_core.analysis import IndexConfig, build_index
from crossdiff_core.analysis.evidence import ContextShift
from crossdiff_core.analysis.presented import auroc, shift_cutoff
from crossdiff_core.analysis.prompt_diff import diff
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.models import load_model
from crossdiff_core.organisms import edit_organism
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

pytestmark = pytest.mark.slow

LAYER = 6
TOP = 10
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown")
NOUNS = ("car", "door", "house", "coat", "bird", "flower", "ball", "chair", "boat", "cup", "kite", "hat")
PLACES = ("in the garden", "near the school", "by the river", "at the market", "on the hill", "in the kitchen")
OTHERS = ("old", "small", "heavy", "quiet", "wooden", "broken", "shiny", "large")


def _sentence(rng: random.Random, colour: bool) -> tuple[str, list[tuple[int, int]]]:
    word = rng.choice(COLOURS if colour else OTHERS)
    head = f"The {rng.choice(NOUNS)} {rng.choice(PLACES)} was "
    text = head + word + f", and {rng.choice(['Tom', 'Ana', 'Lena', 'Omar'])} liked it a lot."
    return text, [(len(head), len(head) + len(word))] if colour else []


def _documents(seed: int, n: int) -> list[tuple[str, list[tuple[int, int]]]]:
    rng = random.Random(seed)
    return [_sentence(rng, i % 2 == 0) for i in range(n)]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The base model, the colour organism, a DFC on the pair, its index and the probe rows."""
    root = tmp_path_factory.mktemp("organism")
    folder = edit_organism("smollm2-135m", COLOURS, strength=4.0, root=root)
    base = load_model("smollm2-135m", layer=LAYER, quant="none", dtype="fp32", device="cpu")
    organism = load_model(folder, layer=LAYER, quant="none", dtype="fp32", device="cpu")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(text for text, _ in _documents(0, 1200)))
    return base, organism, corpus, root


def _diff(model_a, model_b, corpus, out, seed=0):
    # 4000 tokens (about 260 sentences) and an index of 80 sentences keep every check below far from its bound
    # (best AUROC 1.0, the planted latent's change about 14 against 4, no real feature in the null pair).
    harvest(model_a, model_b, str(corpus), out / "store", HarvestConfig(n_tokens=4000, ctx_len=64, batch_windows=64))
    config = CrossCoderConfig(
        d_a=model_a.d_model, d_b=model_b.d_model, dict_size=256, k=8, exclusive_a=0.05, exclusive_b=0.05
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread trains faster than two contending ones
    try:
        result = train(
            config,
            TrainConfig(
                steps=400, batch_size=256, seed=seed, lr=3e-3, checkpoint_every=10_000, log_every=100, device="cpu"
            ),
            PairedActivationStore(out / "store"),
            out / "dfc",
        )
    finally:
        torch.set_num_threads(threads)
    index = build_index(
        result.crosscoder,
        (model_a, model_b),
        IndexConfig(corpus=str(corpus), n_windows=80, skip_windows=0, ctx_len=64, top_tokens=3),
    )
    return result.crosscoder, index


def _probe_rows(model_a, model_b, crosscoder):
    docs = _documents(99, 80)
    aligned = align_batch(model_a.tokenizer, model_b.tokenizer, [t for t, _ in docs], max_tokens=64)
    runs = run_paired(model_a, model_b, aligned)
    labels, rows_a, rows_b = [], [], []
    for (_, spans), run in zip(docs, runs):
        rows_a.append(run.x_a_PD)
        rows_b.append(run.x_b_PD)
        for end in run.char_end:
            labels.append(1.0 if any(s < end <= e for s, e in spans) else (0.0 if not spans else np.nan))
    with torch.no_grad():
        x_a, x_b = crosscoder.normalize(torch.cat(rows_a), torch.cat(rows_b))
        f_NF = crosscoder.activate(crosscoder.pre_activations(x_a, x_b)).numpy()
    labels = np.asarray(labels)
    keep = ~np.isnan(labels)
    return f_NF[keep], labels[keep].astype(bool)


def _best(latents, f_NF, labels):
    """Return (best AUROC, its latent) among `latents` on the probe rows."""
    return max((auroc(f_NF[:, j], labels), j) for j in latents)


@pytest.fixture(scope="module")
def organism_diff(planted):
    base, organism, corpus, root = planted
    crosscoder, index = _diff(base, organism, corpus, root / "organism")
    return crosscoder, index, _probe_rows(base, organism, crosscoder)


@pytest.fixture(scope="module")
def null_diff(planted):
    base, _, corpus, root = planted
    crosscoder, index = _diff(base, base, corpus, root / "null")
    return crosscoder, index, _probe_rows(base, base, crosscoder)


def _planted(index, f_NF, labels):
    """Return (AUROC, latent) of the crosscoder latent that best picks out the planted words."""
    return _best(range(index.dict_size), f_NF, labels)


def test_the_crosscoder_learns_the_planted_difference(organism_diff):
    """The organism works and the pipeline keeps it: a shared latent fires on the planted words, and the two models'
    activations differ consistently where it fires."""
    _, index, (f_NF, labels) = organism_diff
    score, latent = _planted(index, f_NF, labels)
    assert score >= 0.95, f"no latent picks out the planted words (best AUROC {score:.2f})"
    assert index.block(latent) == "shared"  # learned inside a shared latent, as the issue measured
    assert index.change(latent) is not None and index.change(latent) >= 4.0
    assert index.verdict(latent).code == "real", index.verdict(latent)


def test_planted_difference_is_presented(organism_diff):
    _, index, (f_NF, labels) = organism_diff
    for side in ("a", "b"):  # a change in a shared basis has no owner: shown for both models
        score, _ = _best(index.presented(side, TOP), f_NF, labels)
        assert score >= 0.9, f"best AUROC among the top {TOP} features presented for {side} is {score:.2f}"


def test_null_pair_is_quiet(null_diff):
    _, index, _ = null_diff
    assert np.nanmax(index.arrays["context_shift"]) == 0.0  # identical models: nothing moved anywhere
    for side in ("a", "b"):
        real = [j for j in index.presented(side, TOP) if index.verdict(j).code == "real"]
        assert len(real) <= 1, f"the unmodified pair has {len(real)} features of {side} called likely real: {real}"


def test_shuffled_pairing_hides_the_difference(organism_diff, planted):
    """With model B's rows shuffled against model A's (the pairing broken), the planted latent's shift is noise."""
    crosscoder, index, (f_NF, labels) = organism_diff
    _, latent = _planted(index, f_NF, labels)
    store = PairedActivationStore(planted[3] / "organism" / "store")
    x_a, x_b = (torch.cat(part).float() for part in zip(*map(store.load_shard, range(len(store.shards)))))
    with torch.no_grad():
        f = crosscoder.activate(crosscoder.pre_activations(*crosscoder.normalize(x_a, x_b)))
    for shuffle in (False, True):
        shift = ContextShift(crosscoder.dict_size, crosscoder.config.d_a)
        order = torch.randperm(len(x_b), generator=torch.Generator().manual_seed(0)) if shuffle else slice(None)
        shift.add(f, x_b[order] - x_a)
        arrays = {**index.arrays, "context_shift": shift.values()}
        cutoff = shift_cutoff(arrays)
        assert (arrays["context_shift"][latent] >= cutoff) != shuffle, (
            shuffle,
            arrays["context_shift"][latent],
            cutoff,
        )


def test_verdict_fed_shuffled_evidence_changes(organism_diff):
    _, index, (f_NF, labels) = organism_diff
    _, latent = _planted(index, f_NF, labels)
    assert index.verdict(latent).code == "real"
    changed = 0
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(index.dict_size)
        broken = copy.copy(index)
        broken.arrays = {
            name: value[order] if getattr(value, "shape", ())[:1] == (index.dict_size,) else value
            for name, value in index.arrays.items()
        }
        verdict = broken.verdict(latent)
        changed += verdict is None or verdict.code != "real"
    assert changed >= 4, f"the verdict ignored shuffled evidence in {5 - changed} of 5 trials"


def test_a_prompt_diff_lists_the_planted_change_with_its_verdict(organism_diff, planted):
    """Compare and `diff` list presented shared latents that fire, not only exclusive ones."""
    crosscoder, index, (f_NF, labels) = organism_diff
    base, organism, _, _ = planted
    _, latent = _planted(index, f_NF, labels)
    prompt = "The kite in the garden was purple, and Tom liked it a lot."
    without = diff(crosscoder, (base, organism), prompt, verdicts=index.verdict)
    listed = diff(crosscoder, (base, organism), prompt, verdicts=index.verdict, presented=index.presented)
    assert latent not in [hit.latent for hit in without.model_b.exclusive]
    hits = {hit.latent: hit for hit in listed.model_b.exclusive}
    assert latent in hits and hits[latent].verdict.code == "real"
    assert "purple" in listed.model_b.tokens[hits[latent].peak_token].text
