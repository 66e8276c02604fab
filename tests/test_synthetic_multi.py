"""Ground truth, small, for three models: an N-model DFC puts each model's exclusive features in that model's own
exclusive block and recovers the shared ones, and the check bites (shuffled decoder rows; a standard crosscoder read
by blocks it does not have)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossdiff_core.crosscoder.multi import MultiCrossCoderConfig
from crossdiff_core.synthetic_multi import (
    MultiRecoveryReport,
    SyntheticModels,
    SyntheticMultiConfig,
    multi_reconstruction_report,
    multi_recovery_report,
)
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.multi import train_multi

pytestmark = pytest.mark.usefixtures("single_thread")

DATA = SyntheticMultiConfig(d=(32, 48, 40), n_features=120, exclusive=0.05, pair_shared=0.03, features_per_token=3.0,
                            seed=1)  # fmt: skip
CROSSCODER = MultiCrossCoderConfig(d=[32, 48, 40], dict_size=240, exclusive=0.05, k=3)
TRAINING = TrainConfig(steps=600, batch_size=256, lr=1e-2, seed=1, dead_after_tokens=6400, device="cpu",
                       relocate_every=50, log_every=600)  # fmt: skip

MIN_SHARED = 0.90
"""Features of all three models recovered by one latent in all three (a healthy run: about 99%)."""

MIN_EXCLUSIVE_IN_BLOCK = 0.80
"""Each model's exclusive features recovered by a latent of that model's own exclusive block (a healthy run: 6 of 6)."""


def passes(report: MultiRecoveryReport) -> bool:
    """Return whether a recovery report meets the thresholds this test asserts."""
    return report.shared_recovery >= MIN_SHARED and min(report.exclusive_correct_block) >= MIN_EXCLUSIVE_IN_BLOCK


@pytest.fixture(scope="module")
def trained():
    models = SyntheticModels(DATA)
    result = train_multi(CROSSCODER, TRAINING, models)
    _, alive_F = multi_reconstruction_report(result.crosscoder, models.held_out(4096))
    return models, result, alive_F


def test_the_truth_has_every_kind_of_feature():
    truth = SyntheticModels(DATA).truth
    assert [int(truth.exclusive_to(m).sum()) for m in range(3)] == [6, 6, 6]
    assert int(truth.shared_by_some().sum()) == 12 and int(truth.shared_by_all().sum()) == 90
    for m, dirs_GD in enumerate(truth.dirs):
        assert bool((dirs_GD.norm(dim=1) > 0).eq(truth.members_GN[:, m]).all())


def test_batches_are_deterministic_and_held_out_differs():
    models = SyntheticModels(DATA)
    first = next(models.iter_batches(8, seed=0))
    again = next(models.iter_batches(8, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert [x.shape for x in first] == [(8, 32), (8, 48), (8, 40)]
    assert not torch.equal(models.held_out(8)[0], first[0])


def test_a_three_model_dfc_puts_exclusive_features_in_their_own_block(trained):
    models, result, alive_F = trained
    report = multi_recovery_report(result.crosscoder, models.truth, alive_F)
    assert report.judged_by == "partition"
    assert passes(report), report
    assert report.false_exclusives == 0
    assert report.pair_recovery >= 0.75 and report.pair_as_exclusive <= 0.25, report
    assert result.history[-1]["relocated"] > 0


def test_the_check_fails_when_decoder_rows_are_shuffled(trained):
    models, result, alive_F = trained
    shuffled = result.crosscoder
    generator = torch.Generator().manual_seed(0)
    saved = [W_dec.detach().clone() for W_dec in shuffled.W_dec]
    with torch.no_grad():
        for W_dec in shuffled.W_dec:
            W_dec.copy_(W_dec[torch.randperm(W_dec.shape[0], generator=generator)])
    try:
        assert not passes(multi_recovery_report(shuffled, models.truth, alive_F))
    finally:
        with torch.no_grad():
            for W_dec, rows in zip(shuffled.W_dec, saved, strict=True):
                W_dec.copy_(rows)


def test_without_exclusive_blocks_nothing_lands_in_a_block_and_stopping_returns_early():
    models = SyntheticModels(DATA)
    standard = dataclasses.replace(CROSSCODER, exclusive=0)
    calls = []
    result = train_multi(standard, dataclasses.replace(TRAINING, steps=20, log_every=5), models,
                         should_stop=lambda: len(calls) >= 7 or calls.append(1))  # fmt: skip
    assert result.steps_done == 8 and [entry["step"] for entry in result.history] == [5]
    report = multi_recovery_report(result.crosscoder, models.truth, judged_by="partition")
    assert report.exclusive_correct_block == [0.0, 0.0, 0.0] and report.n_exclusive_latents == 0
