"""Paired runs drop activation outliers with the harvest's rule, over the whole batch."""

from __future__ import annotations

import torch

from crossdiff_core.activations.paired import inliers, run_paired
from crossdiff_core.alignment import align_batch


def test_run_paired_drops_the_rows_the_harvest_rule_drops(tiny_pair):
    model_a, model_b = tiny_pair
    texts = ["The capital of France is Paris, a city on the Seine.", "Une phrase en français, avec des virgules."]
    aligned = align_batch(model_a.tokenizer, model_b.tokenizer, texts, max_tokens=32, max_tokens_b=64)
    every = run_paired(model_a, model_b, aligned, outlier_factor=1e9)
    assert sum(run.n_outliers for run in every) == 0
    x_a_ND = torch.cat([run.x_a_PD for run in every])
    x_b_ND = torch.cat([run.x_b_PD for run in every])
    expected_N = inliers(x_a_ND, 1.0) & inliers(x_b_ND, 1.0)  # factor 1: every row above the median norm goes

    strict = run_paired(model_a, model_b, aligned, outlier_factor=1.0)
    assert sum(run.n_outliers for run in strict) == int((~expected_N).sum()) > 0
    torch.testing.assert_close(torch.cat([run.x_a_PD for run in strict]), x_a_ND[expected_N])
    torch.testing.assert_close(torch.cat([run.x_b_PD for run in strict]), x_b_ND[expected_N])
    assert sum(len(run.pos_a) for run in strict) == int(expected_N.sum())
