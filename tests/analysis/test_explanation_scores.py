"""Scored explanations: held-out texts, the detection score, the shuffled baseline, and what the index keeps."""

from __future__ import annotations

import json
import math
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crossdiff_core.analysis import FeatureIndex
from crossdiff_core.analysis.config import ExplainConfig
from crossdiff_core.analysis.detection import DetectionScorer, auroc
from crossdiff_core.analysis.explanation_scores import (
    chance_check,
    compare_with_chance,
    explain_and_score,
    scoring_texts,
    shuffled,
    shuffled_baseline,
)
from crossdiff_core.analysis.heldout import explainer_contexts, held_out_texts, measure_pool
from crossdiff_core.analysis.labels import BEATS_CHANCE, UNCLEAR, beats_chance
from crossdiff_core.errors import Cancelled, CrossDiffError

KITTENS = ["Our kitten sleeps all day.", "She adopted a black kitten.", "A kitten chased the ball of wool."]
OTHERS = ["The train was late again.", "She paid the bill on Friday.", "Turn left at the bank.", "It rained all day."]


def test_auroc_and_shuffled_explanations():
    assert auroc([2.0, 3.0], [1.0, 0.0]) == 1.0 and auroc([0.0], [1.0]) == 0.0
    assert auroc([1.0], [1.0]) == 0.5 and math.isnan(auroc([], [1.0]))
    texts = {3: "three", 7: "seven", 11: "eleven", 20: "twenty"}
    moved = shuffled(texts, seed=1)
    assert sorted(moved) == sorted(texts) and sorted(moved.values()) == sorted(texts.values())
    assert all(moved[latent] != text for latent, text in texts.items())
    with pytest.raises(CrossDiffError, match="at least two"):
        shuffled({3: "three"})


def test_explanations_beat_chance_only_by_more_than_the_noise():
    own = {1: 0.9, 2: 0.8, 3: 0.85, 4: 0.7}
    clearly = chance_check(own, {1: 0.5, 2: 0.55, 3: 0.5, 4: 0.45}, stderrs=2.0)
    assert clearly.beats and clearly.n == 4 and clearly.mean_score == pytest.approx(0.8125)
    assert clearly.shuffled_score == pytest.approx(0.5) and "better than chance" in clearly.words()
    noisy = chance_check(own, {1: 0.95, 2: 0.4, 3: 0.9, 4: 0.5}, stderrs=2.0)  # ahead on average, within the noise
    assert noisy.mean_score > noisy.shuffled_score and not noisy.beats and "no better than chance" in noisy.words()
    assert chance_check(own, {1: 0.95, 2: 0.4, 3: 0.9, 4: 0.5}, stderrs=0.0).beats
    unpaired = chance_check({1: 0.9, 2: float("nan"), 3: 0.8}, {1: 0.5, 2: 0.5, 3: float("nan")}, stderrs=2.0)
    assert unpaired is None  # one latent has both scores


class KeywordReader(torch.nn.Module):
    """A stand-in scorer that reads as a perfect one would: right after the chat prompt's generation prompt it answers
    "Yes" when a word of 4+ letters of the explanation occurs in the quoted text, else "No"; elsewhere nothing."""

    def __init__(self, tokenizer, yes: int, no: int):
        super().__init__()
        self.tokenizer, self.yes, self.no = tokenizer, yes, no

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, max(self.yes, self.no) + 1)
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            prompt = self.tokenizer.decode(ids[: int(mask.sum())])
            found = re.search(r'fires on: (.*)\n\nText: "(.*)"\n\nDoes.*assistant\n$', prompt, re.DOTALL)
            if found:
                hit = any(word in found[2].lower() for word in re.findall(r"\w{4,}", found[1].lower()))
                logits[row, int(mask.sum()) - 1, self.yes if hit else self.no] = 5.0
        return SimpleNamespace(logits=logits)


def test_a_fitting_explanation_outscores_a_wrong_one(demo_tokenizers):
    """With a scorer that reads perfectly, the explanation of a planted pattern scores 1 and a wrong one chance:
    the question holds the explanation and the text, and the answer is read where the reply starts."""
    tokenizer = demo_tokenizers[0]
    yes, no = (tokenizer.encode(word, add_special_tokens=False)[0] for word in ("Yes", "No"))
    reader = SimpleNamespace(
        model=KeywordReader(tokenizer, yes, no), tokenizer=tokenizer, device=torch.device("cpu"), model_id="reader"
    )
    scorer = DetectionScorer(reader)
    assert scorer.score("the word kitten", KITTENS, OTHERS) == 1.0
    assert scorer.score("mentions of money", KITTENS, OTHERS) == 0.5
    assert scorer.score("the word kitten", OTHERS, KITTENS) == 0.0  # it predicts the opposite


def test_old_explanations_load_unscored_and_scores_name_the_latent(real_index, tmp_path):
    folder = shutil.copytree(real_index.path, tmp_path / "feature_index")
    latents = [int(j) for j in np.flatnonzero(real_index.arrays["n_fires"] > 0)[:3]]
    labels = json.loads((folder / "labels.json").read_text())
    labels["explanations"] = {str(j): {"text": f"old explanation {j}", "model": "m"} for j in latents}
    (folder / "labels.json").write_text(json.dumps(labels))  # as written before explanations were scored
    index = FeatureIndex.load(folder)
    assert all(math.isnan(index.explanation_score(j)) and index.name(j) == index.labels[j] for j in latents)
    card = index.card(latents[0], 1)
    assert math.isnan(card.explanation_score) and card.to_dict()["explanation_score"] is None
    clear, unclear, unscored = latents
    index.set_explanation_score(clear, 0.9, "scorer-model")
    index.set_explanation_score(unclear, 0.55, "scorer-model")
    index.save_labels()
    index = FeatureIndex.load(folder)
    assert index.explanation_score(clear) == 0.9 and index.explanations[clear]["scorer"] == "scorer-model"
    assert index.name(clear) == f"old explanation {clear}"
    assert index.name(unclear) == f"{UNCLEAR} · {index.labels[unclear]}"
    assert index.name(unscored) == index.labels[unscored] and math.isnan(index.explanation_score(unscored))
    rows = index.rows()
    assert rows[clear]["explanation_score"] == 0.9 and math.isnan(rows[unscored]["explanation_score"])
    index.set_explanation(clear, "rewritten", "m")  # a new text drops the old score
    assert math.isnan(index.explanation_score(clear))
    with pytest.raises(CrossDiffError, match="no explanation"):
        index.set_explanation_score(next(j for j in range(index.dict_size) if j not in latents), 0.7, "s")


def test_explanations_are_scored_on_held_out_texts_recorded_and_resumed(
    real_dfc, real_index, demo_pair, tiny_pair, tmp_path, monkeypatch
):
    """The silent crops are measured with the pair the index was built with; a tiny random model with SmolLM2's
    tokenizer stands in for the explainer and the scorer (what they say does not matter here, only what is kept)."""
    index = FeatureIndex.load(shutil.copytree(real_index.path, tmp_path / "feature_index"))
    pool = measure_pool(index, real_dfc.crosscoder, demo_pair, n_windows=4)
    assert len(pool.windows) == len(pool.texts) == len(pool.peak_CF) >= 4 and all(pool.texts)
    n_top = index.meta["config"]["top_contexts"]
    for latent in np.flatnonzero((index.arrays["n_contexts"] > 0) & (index.arrays["n_contexts"] <= n_top)):
        # every window where it fired is among its top contexts: the pool's crops elsewhere must be silent
        outside = [c for c, w in enumerate(pool.windows) if w not in index.arrays["top_window"][latent]]
        assert (pool.peak_CF[outside, latent] == 0).all(), latent
    assert (pool.peak_CF > 0).any()
    latent = index.ranked("a", 1)[0]
    seen = {c.text.strip() for c in explainer_contexts(index, latent)}
    assert held_out_texts(index, latent) and not seen & set(held_out_texts(index, latent))

    config = ExplainConfig(max_new_tokens=6, negatives=3, min_positives=1)
    explainer = tiny_pair[0]
    scorer = DetectionScorer(explainer)
    latents = [j for j in index.ranked("a") if scoring_texts(index, pool, j, config)][:2]
    assert len(latents) == 2
    scores = explain_and_score(index, explainer, scorer, pool, latents, config)
    reloaded = FeatureIndex.load(index.path)
    assert list(scores) == latents and all(0 <= s <= 1 for s in scores.values())
    for latent in latents:
        entry = reloaded.explanations[latent]
        assert entry["model"] == entry["scorer"] == explainer.model_id and entry["score"] == scores[latent]
    baseline = shuffled_baseline(index, scorer, pool, {j: index.explanations[j]["text"] for j in latents}, config)
    assert set(baseline) == set(latents) and all(0 <= s <= 1 for s in baseline.values())
    check = compare_with_chance(index, scorer, pool, explainer.model_id, config)
    assert check.n == 2 and check.shuffled == baseline  # the same seed moves the same texts
    index.save_labels()
    reloaded = FeatureIndex.load(index.path)
    assert all(reloaded.explanations[j][BEATS_CHANCE] is check.beats == beats_chance(reloaded.explanations[j])
               for j in latents)  # fmt: skip
    assert compare_with_chance(index, scorer, pool, "another explainer", config) is None  # none of its own

    monkeypatch.setattr("crossdiff_core.analysis.explanation_scores.explain_latent", pytest.fail)
    assert explain_and_score(index, explainer, scorer, pool, latents, config) == scores  # done: nothing redone
    with pytest.raises(Cancelled):
        explain_and_score(index, explainer, scorer, pool, latents, config, should_stop=lambda: True)
