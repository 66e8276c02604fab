"""Ground truth, small: a DFC recovers planted shared and exclusive features (d_a=96, d_b=128), and the check bites.

A DFC with 5% exclusive blocks trains on synthetic pairs with 5% A-only and 5% B-only features.
It must recover the shared features (the same latent in both models) and put the exclusive ones in
their own exclusive block; letting auxk revive exclusive latents too makes false exclusives. The same assertions must reject broken variants: decoder rows shuffled
across latents, a standard crosscoder read as if it were a DFC, and a DFC trained without
relocation (the step that carries one-model features from shared latents to the exclusive blocks).

Conditional features (an extra direction only model B writes, co-firing with a shared feature: the
B-only part of a concept both models hold) are learned inside shared latents, not in the B-exclusive
block. The component reading (`crossdiff_core.analysis.components`) must find most of them, and must
find none once model B's decoder rows are shuffled across latents.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.synthetic import (
    RecoveryReport,
    SyntheticConfig,
    SyntheticPair,
    reconstruction_report,
    recovery_report,
)
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train
from crossdiff_core.training.relocation import relocate_one_sided

pytestmark = pytest.mark.usefixtures("single_thread")

DATA = SyntheticConfig(d_a=96, d_b=128, n_features=200, a_only=0.05, b_only=0.05, features_per_token=4.0, seed=3)
CROSSCODER = CrossCoderConfig(d_a=96, d_b=128, dict_size=320, exclusive_a=0.05, exclusive_b=0.05, k=4)
TRAINING = TrainConfig(steps=1000, batch_size=512, lr=1e-2, seed=3, dead_after_tokens=12_800, device="cpu",
                       checkpoint_every=10_000, log_every=1000)  # fmt: skip

MIN_SHARED = 0.90
"""Shared features recovered by one latent in both models (a healthy run recovers about 99%)."""

MIN_EXCLUSIVE_IN_BLOCK = 0.80
"""Exclusive features recovered by a latent of their own exclusive block (a healthy run: about 95-100%)."""

CONDITIONAL_DATA = dataclasses.replace(DATA, b_conditional=0.1, shared_map=1.0)
"""The test pair plus 18 B-conditional features, shared directions linearly related across the models."""

CONDITIONAL_STEPS = 400
"""A shorter run than `TRAINING` (this test must stay well under 40 s on 2 cores)."""

MIN_CONDITIONAL_AS_COMPONENT = 0.80
"""B-conditional features found as a one-model component (a healthy run: about 95-100%)."""


def passes(report: RecoveryReport) -> bool:
    """Return whether a recovery report meets the thresholds this test asserts."""
    return report.shared_recovery >= MIN_SHARED and report.exclusive_correct_block >= MIN_EXCLUSIVE_IN_BLOCK


@pytest.fixture(scope="module")
def pair() -> SyntheticPair:
    return SyntheticPair(DATA)


def trained(pair: SyntheticPair, tmp_path_factory, config: CrossCoderConfig, **train_overrides):
    """Return (crosscoder, alive_F) after training `config` on `pair`."""
    out_dir = tmp_path_factory.mktemp("crosscoder")
    crosscoder = train(config, dataclasses.replace(TRAINING, **train_overrides), pair, out_dir).crosscoder
    _, alive_F = reconstruction_report(crosscoder, *pair.held_out(4096))
    return crosscoder, alive_F


@pytest.fixture(scope="module")
def dfc(pair, tmp_path_factory):
    return trained(pair, tmp_path_factory, CROSSCODER)


def test_dfc_recovers_shared_features_and_puts_exclusive_ones_in_their_block(pair, dfc):
    crosscoder, alive_F = dfc
    report = recovery_report(crosscoder, pair.truth, alive_F)
    assert report.judged_by == "partition"
    assert report.shared_recovery >= MIN_SHARED, report
    assert report.a_only_correct_block >= MIN_EXCLUSIVE_IN_BLOCK, report
    assert report.b_only_correct_block >= MIN_EXCLUSIVE_IN_BLOCK, report
    assert report.false_exclusives <= 1, report
    reconstruction, _ = reconstruction_report(crosscoder, *pair.held_out(4096, seed=1))
    assert reconstruction.fvu_a < 0.15 and reconstruction.fvu_b < 0.15, reconstruction
    assert 3 <= reconstruction.l0 <= 5, reconstruction


def test_auxk_on_exclusive_latents_makes_false_exclusives(pair, tmp_path_factory):
    """The option the shipped demo DFC uses: blocks fill sooner, but some exclusive latents copy shared features."""
    crosscoder, alive_F = trained(pair, tmp_path_factory, CROSSCODER, auxk_exclusive=True)
    report = recovery_report(crosscoder, pair.truth, alive_F)
    assert report.exclusive_correct_block >= MIN_EXCLUSIVE_IN_BLOCK and report.false_exclusives >= 2, report


def test_shuffled_decoder_rows_fail(pair, dfc):
    crosscoder, alive_F = dfc
    shuffled = CrossCoder(crosscoder.config)
    shuffled.load_state_dict(crosscoder.state_dict())
    with torch.no_grad():
        order = torch.randperm(shuffled.W_dec_b.shape[0], generator=torch.Generator().manual_seed(0))
        shuffled.W_dec_b.copy_(shuffled.W_dec_b[order])
    report = recovery_report(shuffled, pair.truth, alive_F)
    assert not passes(report), report


def test_standard_crosscoder_read_as_a_dfc_fails(pair, dfc):
    crosscoder, alive_F = dfc
    report = recovery_report(crosscoder, pair.truth, alive_F, judged_by="relative_norm")
    assert passes(report)  # the relative-norm reading agrees with the partition on a healthy DFC ...
    standard = CrossCoder(dataclasses.replace(CROSSCODER, exclusive_a=0, exclusive_b=0))
    with torch.no_grad():  # ... but a crosscoder without blocks, judged by blocks, shows no exclusive feature
        standard.W_dec_a.copy_(torch.cat([crosscoder.W_dec_a, torch.zeros(crosscoder.n_b, DATA.d_a)]))
        standard.W_dec_b.copy_(torch.cat([torch.zeros(crosscoder.n_a, DATA.d_b), crosscoder.W_dec_b]))
    report = recovery_report(standard, pair.truth, alive_F, judged_by="partition")
    assert report.exclusive_correct_block == 0 and not passes(report), report


def test_dfc_trained_without_relocation_fails(pair, tmp_path_factory):
    crosscoder, alive_F = trained(pair, tmp_path_factory, CROSSCODER, relocate_every=TRAINING.steps + 1)
    report = recovery_report(crosscoder, pair.truth, alive_F)
    assert not passes(report), report


def test_relocation_during_training_resumes_exactly(pair, tmp_path, monkeypatch):
    moves = []

    def counting(*args, **kwargs):
        moves.append(relocate_one_sided(*args, **kwargs))
        return moves[-1]

    monkeypatch.setattr("crossdiff_core.training.loop.relocate_one_sided", counting)
    config, training = CROSSCODER, dataclasses.replace(TRAINING, steps=120, relocate_every=40, dead_after_tokens=2048)
    full = train(config, training, pair, tmp_path / "full")
    assert sum(moves) > 0
    calls = []
    train(config, training, pair, tmp_path / "split", should_stop=lambda: calls.append(1) or len(calls) == 50)
    resumed = train(config, training, pair, tmp_path / "split")
    assert resumed.resumed_from == 50
    for name, tensor in full.crosscoder.state_dict().items():
        torch.testing.assert_close(resumed.crosscoder.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_relocation_moves_one_model_latents_into_dead_exclusive_slots():
    model = CrossCoder(CrossCoderConfig(d_a=6, d_b=5, dict_size=20, exclusive_a=2, exclusive_b=3, k=2), seed=0)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 6), torch.randn(4, 5))[0].sum().backward()
    optimizer.step()
    tokens_since_fired_F = torch.zeros(20, dtype=torch.long)
    tokens_since_fired_F[[1, 18]] = 10**6  # dead: A-exclusive latent 1 and B-exclusive latent 18
    with torch.no_grad():  # latents: A-exclusive 0-1, shared 2-16, B-exclusive 17-19; B's rows start at latent 2
        model.W_dec_b[7 - 2].mul_(1e-3)  # shared latent 7 writes to A only
        model.W_dec_a[9].mul_(1e-3)  # shared latent 9 writes to B only
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    exp_avg_a = optimizer.state[model.W_dec_a]["exp_avg"].clone()

    moved = relocate_one_sided(model, optimizer, tokens_since_fired_F, TrainConfig(dead_after_tokens=10**6), step=1)

    assert moved == 2
    assert torch.equal(model.W_dec_a[1], weights["W_dec_a"][7]) and torch.equal(model.W_enc_a[1], weights["W_enc_a"][7])
    assert torch.equal(model.W_dec_b[18 - 2], weights["W_dec_b"][9 - 2]) and model.b_enc[18] == weights["b_enc"][9]
    assert torch.equal(optimizer.state[model.W_dec_a]["exp_avg"][1], exp_avg_a[7])
    for latent in (7, 9):  # re-drawn as at initialization, first Adam moment cleared, marked dead for auxk
        assert float(model.W_dec_a[latent].detach().norm()) == pytest.approx(0.1)
        assert float(model.W_dec_b[latent - 2].detach().norm()) == pytest.approx(0.1)
        assert torch.equal(model.W_enc_a[latent], model.W_dec_a[latent]) and model.b_enc[latent] == 0
        assert not optimizer.state[model.W_dec_a]["exp_avg"][latent].any()
        assert tokens_since_fired_F[latent] == 10**6
    assert tokens_since_fired_F[1] == 0 and tokens_since_fired_F[18] == 0
    unchanged = [j for j in range(20) if j not in (1, 7, 9, 18)]
    assert torch.equal(model.b_enc[unchanged], weights["b_enc"][unchanged])
    assert relocate_one_sided(model, optimizer, tokens_since_fired_F, TrainConfig(dead_after_tokens=10**6), 2) == 0


@pytest.fixture(scope="module")
def conditional_dfc(tmp_path_factory):
    """Return (pair, crosscoder, alive_F): the test DFC trained on the pair with B-conditional features."""
    pair = SyntheticPair(CONDITIONAL_DATA)
    return pair, *trained(pair, tmp_path_factory, CROSSCODER, steps=CONDITIONAL_STEPS)


def test_conditional_features_surface_as_components_not_in_the_exclusive_block(conditional_dfc):
    pair, crosscoder, alive_F = conditional_dfc
    assert pair.truth.cond_dirs_b_CD.shape[0] == 18 and pair.truth.cond_dirs_a_CD.shape[0] == 0
    report = recovery_report(crosscoder, pair.truth, alive_F)
    assert report.conditional_b_as_component >= MIN_CONDITIONAL_AS_COMPONENT, report
    assert report.conditional_b_as_exclusive <= 0.1, report  # the B-exclusive block does not hold them
    assert report.conditional_a_as_component is None and report.conditional_as_exclusive <= 0.1, report
    assert report.false_components <= report.n_components // 2, report


def test_components_of_shuffled_decoder_rows_find_no_conditional_feature(conditional_dfc):
    pair, crosscoder, alive_F = conditional_dfc
    shuffled = CrossCoder(crosscoder.config)
    shuffled.load_state_dict(crosscoder.state_dict())
    with torch.no_grad():  # model B's shared rows go to other shared latents: A's decoder no longer predicts B's
        order = torch.randperm(crosscoder.n_shared, generator=torch.Generator().manual_seed(0))
        shuffled.W_dec_b[: crosscoder.n_shared] = shuffled.W_dec_b[: crosscoder.n_shared][order]
    report = recovery_report(shuffled, pair.truth, alive_F)
    assert report.conditional_b_as_component <= 0.2, report


def test_conditional_features_fire_exactly_with_their_parent():
    noiseless = dataclasses.replace(DATA, noise=0.0)  # (noise scales with the signal, which conditionals add to)
    plain, conditional = SyntheticPair(noiseless), SyntheticPair(dataclasses.replace(noiseless, b_conditional=0.1))
    truth = conditional.truth
    assert torch.equal(plain.truth.dirs_b_GD, truth.dirs_b_GD)  # the new directions come from their own stream
    x_a_ND, x_b_ND = plain.sample(2048, torch.Generator().manual_seed(5))
    x_a_cond_ND, x_b_cond_ND = conditional.sample(2048, torch.Generator().manual_seed(5))
    assert torch.equal(x_a_ND, x_a_cond_ND)  # model A is untouched, and so is every draw before the new ones
    vectors_CD = truth.cond_dirs_b_CD * truth.cond_norm_b_C[:, None]
    coefficient_NC = torch.linalg.lstsq(vectors_CD.T, (x_b_cond_ND - x_b_ND).T).solution.T
    active_NG = torch.rand(2048, DATA.n_features, generator=torch.Generator().manual_seed(5)) < truth.frequency_G
    parent_active_NC = active_NG[:, truth.n_a_only + truth.cond_parent_b_C]
    assert parent_active_NC.any(0).all()
    assert torch.equal(coefficient_NC.abs() > 1e-3, parent_active_NC)
    assert bool((coefficient_NC[parent_active_NC] > 0).all())


def test_shared_map_puts_model_b_shared_directions_in_the_image_of_model_a():
    for shared_map, rank in ((1.0, DATA.d_a), (0.0, DATA.d_b)):
        truth = SyntheticPair(dataclasses.replace(DATA, shared_map=shared_map)).truth
        assert int(torch.linalg.matrix_rank(truth.dirs_b_GD[: truth.n_shared])) == rank
