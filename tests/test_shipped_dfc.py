"""The DFC that ships in pretrained/: what it is, that it fits, and that it reconstructs the real demo pair."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.analysis.index import load_index
from crossdiff_core.analysis.labels import BEATS_CHANCE, CLEAR_EXPLANATION_SCORE, UNCLEAR, explanation_note
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.crosscoder.model import BLOCK_A_EXCLUSIVE, BLOCK_B_EXCLUSIVE
from crossdiff_core.synthetic import reconstruction_report
from crossdiff_core.workspace import shipped_crosscoders

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "smollm2-135m__gemma3-270m"


def test_shipped_dfc_is_what_its_card_says():
    assert SHIPPED in [Path(c.path) for c in shipped_crosscoders()]
    crosscoder = CrossCoder.from_pretrained(SHIPPED)
    config = crosscoder.config
    assert (config.model_a, config.layer_a, config.model_b, config.layer_b) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct", 15, "google/gemma-3-270m", 9)  # fmt: skip
    assert (config.dict_size, config.k, config.sparsity) == (2048, 32, "batchtopk")
    with safe_open(SHIPPED / "model.safetensors", "pt") as weights:  # shipped in fp16
        assert weights.get_slice("W_enc_a").get_dtype() == "F16"
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) < 60_000_000
    training = json.loads((SHIPPED / "training.json").read_text())
    assert training["finished"] and training["tokens_seen"] >= 5_000_000
    heldout = json.loads((SHIPPED / "heldout.json").read_text())
    assert heldout["fvu_a"] <= 0.3 and heldout["fvu_b"] <= 0.3 and heldout["l0"] <= 64  # >= 70% explained, L0 <= 64
    card = (SHIPPED / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: crossdiff" in front and "- dfc" in front and "google/gemma-3-270m" in front
    for number in (f"{heldout['fvu_a']:.3f}", f"{heldout['fvu_b']:.3f}", f"{heldout['l0']:.1f}"):
        assert number in card  # the card reports the measured scores
    index = load_index(SHIPPED, crosscoder)  # checksums verified
    assert len(index.labels) == config.dict_size
    for side, block in (("a", BLOCK_A_EXCLUSIVE), ("b", BLOCK_B_EXCLUSIVE)):
        ranked = index.ranked(side, top=10)
        assert len(ranked) == 10 and all(index.block(latent) == block for latent in ranked)
        assert all(str(latent) in card for latent in ranked)  # the card's tables list the current index


def test_shipped_dfc_reconstructs_fresh_activations_of_the_demo_pair(demo_pair, tmp_path):
    """Harvest the demo pair (NF4, as the app runs it) on its demo text and score the shipped DFC on every row."""
    # 3000 rows take about 48 windows: read them 52 at a time, not the default 64
    config = HarvestConfig(n_tokens=3000, batch_windows=52, shard_tokens=3000)
    harvest(*demo_pair, "builtin:demo", tmp_path / "store", config)
    store = PairedActivationStore(tmp_path / "store")
    assert len(store.shards) == 1
    x_a, x_b = store.load_shard(0)
    report, alive_F = reconstruction_report(CrossCoder.from_pretrained(SHIPPED).float(), x_a.float(), x_b.float())
    # The card's 81% / 88% are on 100k held-out rows of bf16 activations; on a few NF4 windows the
    # scores are noisier and NF4 costs about 0.04 FVU. A broken file or scale gives FVU near 1.
    assert report.fvu_a < 0.35 and report.fvu_b < 0.35, report
    assert report.l0 <= 64
    assert alive_F.float().mean() > 0.2  # many latents take part, not a handful


def test_shipped_index_says_where_a_latent_was_not_seen_and_reads_labels_of_older_builds(tmp_path):
    """A latent that did not fire on the index's texts can fire on a prompt: no label calls it dead or never fired."""
    import shutil

    from crossdiff_core.analysis.labels import UNSEEN_LABEL

    index = load_index(SHIPPED)
    silent = [j for j in range(index.dict_size) if index.stats(j)["n_fires"] == 0]
    assert silent and all(index.labels[j] == UNSEEN_LABEL for j in silent)
    assert not any(label.startswith("dead") or "never fired" in label for label in index.labels)
    older = shutil.copytree(SHIPPED / "feature_index", tmp_path / "feature_index")
    labels = json.loads((older / "labels.json").read_text())
    labels["labels"][silent[0]] = "dead: never fired on the index corpus"  # what builds before wrote
    (older / "labels.json").write_text(json.dumps(labels))
    assert load_index(tmp_path).labels[silent[0]] == UNSEEN_LABEL


def test_shipped_index_search_finds_labels_and_promoted_tokens_and_knows_each_latents_models():
    index = load_index(SHIPPED)
    for side in ("a", "b"):
        assert index.search(side, "") == index.ranked(side)
        hints = index.search_hints(side)
        assert len(hints) == 3 and all(index.search(side, hint) for hint in hints)
        for latent in index.search(side, "SCORE"):  # case is ignored
            promoted = " ".join(token for token, _ in index.tokens(latent, side, "promote"))
            assert "score" in (index.labels[latent] + promoted).lower()
        assert index.search(side, "no such word anywhere") == []
        assert all(index.models_of(latent) == (side,) for latent in index.ranked(side))
    shared = next(j for j in range(index.dict_size) if index.block(j) == "shared")
    assert index.models_of(shared) == ("a", "b") and index.card(shared).models == ("a", "b")


def test_shipped_explanations_are_scored_against_chance_and_name_nothing_they_do_not_beat():
    results = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/explanations.json").read_text())
    summary = results["summary"]
    assert results["complete"] and summary["n_scored"] >= 100
    index = load_index(SHIPPED)
    alive = [j for side in ("a", "b") for j in index.ranked(side) if index.arrays["n_fires"][j] > 0]
    assert alive and all(j in index.explanations for j in alive)  # every alive exclusive feature has one
    scored = [j for j in alive if math.isfinite(index.explanation_score(j))]
    assert len(scored) == summary["n_scored"]
    assert sum(index.explanation_score(j) for j in scored) / len(scored) == pytest.approx(summary["mean_score"])
    margin = summary["mean_score"] - summary["shuffled_baseline_score"]
    beat = margin > 2 * summary["mean_difference_stderr"]
    assert all(index.explanations[j][BEATS_CHANCE] is beat for j in alive)
    named = [j for j in alive if index.name(j) == index.explanations[j]["text"]]
    clear = [j for j in scored if index.explanation_score(j) >= CLEAR_EXPLANATION_SCORE]
    assert named == (clear if beat else [])  # a run no better than chance names no feature, however it scored
    if not beat:
        assert all(index.name(j).startswith(UNCLEAR) for j in clear)
        assert "no better on average" in explanation_note(index.explanations[clear[0]])
