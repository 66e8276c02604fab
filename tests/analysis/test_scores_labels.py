"""Ranking scores and heuristic labels, on hand-made arrays."""

from __future__ import annotations

import numpy as np

from crossdiff_core.analysis.labels import UNSEEN_LABEL, current_label, fired_words, heuristic_label, word_at
from crossdiff_core.analysis.scores import SCORE_DOCS, rank_order, ranking_scores


def _arrays(**overrides):
    F = 5
    arrays = {
        "n_fires": np.array([0, 100, 100, 100, 100]),
        "n_contexts": np.array([0, 10, 10, 10, 10]),
        "frequency": np.array([0, 0.01, 0.9, 0.01, 0.01], dtype=np.float32),
        "max_activation": np.array([0, 5, 5, 5, 5], dtype=np.float32),
        "top_act": np.tile(np.array([[5, 5, 5]], dtype=np.float32), (F, 1)),
        "dec_norm_a": np.ones(F, dtype=np.float32),
        "dec_norm_b": np.zeros(F, dtype=np.float32),
        "owner": np.zeros(F, dtype=np.int8),
        "transfer_r2": np.array([np.nan, 0.0, 0.0, 0.9, 0.0], dtype=np.float32),
        "nu_error": np.array([np.nan, np.nan, np.nan, np.nan, 0.9], dtype=np.float32),
        "nu_recon": np.full(F, np.nan, dtype=np.float32),
    }
    arrays.update(overrides)
    return arrays


def test_rank_score_rewards_alive_sparse_specific_unshrunk_latents():
    scores = ranking_scores(_arrays(), top_n=3)
    rank = scores["rank_score"]
    assert rank[0] == 0  # dead
    assert rank[1] > rank[2]  # dense is penalised
    assert rank[1] > rank[3]  # the other model predicts latent 3
    assert rank[1] > rank[4]  # latent 4 looks exclusive only through shrinkage
    assert rank_order(rank, _arrays()["n_fires"], np.arange(5))[0] == 1
    assert set(scores) <= set(SCORE_DOCS)


def test_dead_latents_rank_after_alive_ones_and_rarely_seen_latents_are_penalised():
    # 0: dead · 1: alive but fully dense (scores 0, like a dead latent) · 2: fired in a single window
    # 3: fired in many windows, otherwise like 2 · 4: dead, R² not measurable
    arrays = _arrays(
        n_fires=np.array([0, 100, 12, 12, 0]),
        n_contexts=np.array([0, 10, 1, 10, 0]),
        frequency=np.array([0, 0.9, 0.01, 0.01, 0], dtype=np.float32),
        max_activation=np.array([0, 5, 5, 5, 0], dtype=np.float32),
        top_act=np.array([[0, 0, 0], [5, 5, 5], [5, 0, 0], [5, 5, 5], [0, 0, 0]], dtype=np.float32),
        transfer_r2=np.array([np.nan, 0.0, 0.0, 0.0, np.nan], dtype=np.float32),
        nu_error=np.full(5, np.nan, dtype=np.float32),
    )
    scores = ranking_scores(arrays, top_n=3)
    rank = scores["rank_score"]
    np.testing.assert_allclose(scores["score_alive"], [0, 1, 0.2, 1, 0])
    assert rank[0] == rank[1] == rank[4] == 0  # the tie that ordering by id used to break in favour of latent 0
    assert 0 < rank[2] < rank[3] / 5  # one window: penalised by alive (1/5) and by consistency
    assert rank_order(rank, arrays["n_fires"], np.arange(5)).tolist() == [3, 2, 1, 0, 4]
    assert rank_order(rank, arrays["n_fires"], np.array([4, 1, 0])).tolist() == [1, 0, 4]


def test_rank_order_puts_nan_scores_after_scored_alive_latents():
    order = rank_order(np.array([np.nan, 0.2, 0.5, 0.9]), np.array([5, 5, 5, 0]), np.arange(4))
    assert order.tolist() == [2, 1, 0, 3]


def test_consistency_counts_missing_contexts_as_zero():
    top_act = np.array([[0, 0, 0], [5, 5, 5], [5, 0, 0], [5, 5, 5], [5, 5, 5]], dtype=np.float32)
    consistency = ranking_scores(_arrays(top_act=top_act), top_n=3)["score_consistency"]
    assert consistency[1] == 1.0
    assert abs(consistency[2] - 1 / 3) < 1e-6


def test_heuristic_label_lists_frequent_words_and_readable_promoted_tokens():
    label = heuristic_label(["Paris", "Lyon", "Paris", "France", "Nice"], ["<unused7>", " French", "\n", " Paris"], 40)
    assert label == "fires on: Paris, Lyon, France · promotes: ' French', ' Paris'"
    # A latent that did not fire on the index's texts may fire on a prompt: its label says where it was not seen.
    assert heuristic_label([], [], 0) == UNSEEN_LABEL and "never" not in UNSEEN_LABEL and "dead" not in UNSEEN_LABEL
    assert current_label("dead: never fired on the index corpus") == UNSEEN_LABEL  # written by older builds
    assert current_label(label) == label
    assert fired_words(label) == ["Paris", "Lyon", "France"] and fired_words(UNSEEN_LABEL) == []
    assert word_at("the capital of France.", 15, 18) == "France"
    assert word_at("中国的历史", 0, 2) == "中国"  # CJK runs are whole clauses: the token is shown
