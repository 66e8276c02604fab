"""The organism benchmark's check of whether a planted change is findable at all (`separability`)."""

from types import SimpleNamespace

import numpy as np
import torch

from benchmarks.organisms.run import separability


def _rows(change_on_behaviour: float, change_everywhere: float, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x_a = torch.randn(600, 24, generator=gen)
    labels = np.r_[np.ones(150), np.zeros(450)]
    labels[7] = np.nan  # a token outside the labelled span of a positive probe: not scored
    x_b = x_a + change_everywhere * torch.randn(600, 24, generator=gen) + 0.3  # a constant offset is no feature
    x_b[:150, 5] += change_on_behaviour
    return SimpleNamespace(x_a_ND=x_a, x_b_ND=x_b), labels


def test_a_planted_direction_is_separable_and_a_broad_change_is_not():
    planted = separability(*_rows(change_on_behaviour=2.0, change_everywhere=0.2))
    assert planted["one_direction_auroc"] > 0.95 and planted["diff_norm_auroc"] > 0.9, planted
    assert planted["relative_change_positives"] > 2 * planted["relative_change_negatives"], planted
    broad = separability(*_rows(change_on_behaviour=0.0, change_everywhere=0.5))
    assert 0.4 < broad["one_direction_auroc"] < 0.6 and 0.4 < broad["diff_norm_auroc"] < 0.6, broad
    assert abs(broad["relative_change_positives"] - broad["relative_change_negatives"]) < 0.05, broad
