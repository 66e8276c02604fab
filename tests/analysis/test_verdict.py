"""Verdicts: `judge` on hand-built evidence (one case per verdict, reasons carry the numbers), the shuffled-evidence
control, and how the feature index presents latents and judges them (hand-built index, no model loaded)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from crossdiff_core.analysis import FeatureIndex
from crossdiff_core.analysis.blocks import BLOCK_CODES
from crossdiff_core.analysis.evidence import ContextShift
from crossdiff_core.analysis.presented import component_arrays
from crossdiff_core.analysis.verdict import DEFAULT_THRESHOLDS, VERDICTS, Verdict, judge

from .test_components import PLANTED, planted_crosscoder

BASE_RATE = 0.1


def evidence(**columns) -> dict[str, np.ndarray]:
    """Return index arrays from per-latent lists (float32, NaN allowed; n_fires / n_contexts as int64)."""
    out = {}
    for name, values in columns.items():
        dtype = np.int64 if name in ("n_fires", "n_contexts") else np.float32
        out[name] = np.asarray(values, dtype=dtype)
    return out


# One latent per class: real, tokenizer, copy, rare (unstable is "real" evidence with a poor seed match).
CASES = evidence(
    n_fires=[100, 120, 90, 5],
    n_contexts=[10, 12, 9, 2],
    split_share=[0.1, 0.83, 0.12, 0.9],
    transfer_r2=[0.05, 0.02, 0.8, 0.9],
)


def test_each_verdict_with_its_numbers_in_the_reason():
    real = judge(CASES, 0, BASE_RATE)
    assert real.code == "real" and real.label == VERDICTS["real"] == "likely a real difference"
    assert "100 tokens in 10 texts" in real.reason and "R² 0.05" in real.reason

    tokenizer = judge(CASES, 1, BASE_RATE)
    assert tokenizer.code == "tokenizer" and "83%" in tokenizer.reason and "10%" in tokenizer.reason

    copy = judge(CASES, 2, BASE_RATE)
    assert copy.code == "copy" and "R² 0.80" in copy.reason

    rare = judge(CASES, 3, BASE_RATE)  # rare is checked first: its high split share and R² do not matter
    assert rare.code == "rare" and "5 tokens in 2 texts" in rare.reason
    assert f"{DEFAULT_THRESHOLDS.min_fires} tokens" in rare.reason and "texts the feature index read" in rare.reason
    silent = judge(evidence(n_fires=[0], n_contexts=[0]), 0, BASE_RATE)  # it may still fire on a prompt
    assert silent.code == "rare" and "did not fire on the texts the feature index read" in silent.reason
    assert "never" not in silent.reason and "only 0" not in silent.reason

    unstable = judge(CASES, 0, BASE_RATE, seed_cosine=0.3)
    assert unstable.code == "unstable" and "0.30" in unstable.reason
    stable = judge(CASES, 0, BASE_RATE, seed_cosine=0.9)
    assert stable.code == "real" and "match 0.90" in stable.reason

    # A shared latent is judged on its one-model component instead of transfer.
    small = judge(CASES, 2, BASE_RATE, component=0.3)
    assert small.code == "copy" and "30%" in small.reason
    large = judge(CASES, 2, BASE_RATE, component=0.8)
    assert large.code == "real" and "80%" in large.reason
    for verdict in (real, tokenizer, copy, rare, unstable, small, large):
        assert verdict.label == VERDICTS[verdict.code] and verdict.reason.endswith(".")
        assert verdict.to_dict() == {"code": verdict.code, "label": verdict.label, "reason": verdict.reason}


def test_a_split_share_near_the_base_rate_is_no_tokenizer_effect_and_missing_evidence_skips_its_check():
    arrays = evidence(n_fires=[100], n_contexts=[10], split_share=[0.6], transfer_r2=[np.nan])
    assert judge(arrays, 0, split_base_rate=0.5).code == "real"  # 0.6 is not twice the base rate of 0.5
    assert judge(arrays, 0, split_base_rate=0.2).code == "tokenizer"
    unmeasured = judge(arrays, 0, split_base_rate=0.5)
    assert "R² unmeasured" in unmeasured.reason
    without_split = {name: v for name, v in arrays.items() if name != "split_share"}  # an older index
    assert judge(without_split, 0, split_base_rate=0.0).code == "real"


def test_shuffled_evidence_changes_the_verdicts():
    """The control: verdicts follow each latent's own evidence, so moving the evidence moves the verdicts."""
    own = [judge(CASES, j, BASE_RATE).code for j in range(3)]
    assert own == ["real", "tokenizer", "copy"]
    rolled = dict(CASES)
    for name in ("split_share", "transfer_r2"):  # each latent gets the previous one's evidence
        rolled[name] = CASES[name][[2, 0, 1, 3]]
    shuffled = [judge(rolled, j, BASE_RATE).code for j in range(3)]
    assert shuffled == ["copy", "real", "tokenizer"]
    assert all(a != b for a, b in zip(own, shuffled))

    # The same on a population: 40 latents of each class; permuting the evidence across latents breaks the match.
    rng = np.random.default_rng(0)
    n = 40
    population = evidence(
        n_fires=rng.integers(30, 300, 3 * n),
        n_contexts=rng.integers(5, 40, 3 * n),
        split_share=np.concatenate([rng.uniform(0, 0.2, n), rng.uniform(0.6, 1, n), rng.uniform(0, 0.2, n)]),
        transfer_r2=np.concatenate([rng.uniform(-0.5, 0.3, n), rng.uniform(-0.5, 0.3, n), rng.uniform(0.6, 1, n)]),
    )
    truth = np.repeat(["real", "tokenizer", "copy"], n)
    judged = np.array([judge(population, j, BASE_RATE).code for j in range(3 * n)])
    assert (judged == truth).all()
    for seed in range(3):
        permuted = dict(population)
        order = np.random.default_rng(seed + 1).permutation(3 * n)
        permuted["split_share"] = population["split_share"][order]
        permuted["transfer_r2"] = population["transfer_r2"][order]
        judged = np.array([judge(permuted, j, BASE_RATE).code for j in range(3 * n)])
        assert (judged == truth).mean() < 0.6, seed  # chance agreement is about 1/3


def test_scores_md_states_the_current_thresholds():
    """SCORES.md lists the verdict rules with numbers: they must be those of `VerdictThresholds`."""
    text = (Path(__file__).parents[2] / "crossdiff_core" / "analysis" / "SCORES.md").read_text(encoding="utf-8")
    verdicts = text.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    t = DEFAULT_THRESHOLDS
    for words in (
        f"fewer than {t.min_fires} tokens",
        f"fewer than {t.min_contexts} texts",
        f"split_share ≥ {t.tokenizer_share:g}",
        f"transfer_r2 > {t.max_transfer_r2:g}",
        f"component_fraction < {t.min_component:g}",
        f"decoder cosine ≥ {t.min_seed_cosine:g}",
    ):
        assert words in verdicts, words
    assert {"twice": 2.0}.get(re.search(r"at least (\w+) the base rate", verdicts).group(1)) == t.tokenizer_excess
    for label in VERDICTS.values():
        assert label in verdicts


# ---------------------------------------------------------------- the feature index


HAND_THRESHOLDS = dataclasses.replace(DEFAULT_THRESHOLDS, component_z=0.0, min_component_latents=3)
"""Three scored shared latents are too few for the default cutoff; the hand index uses their median."""


def hand_index(fractions: tuple[float, float, float] = (0.8, 0.3, 0.9)) -> FeatureIndex:
    """Return a feature index of 8 latents built by hand.

    0, 1: A-exclusive (0 real, 1 dead); 2, 3: B-exclusive (2 a tokenizer effect, 3 a copy); 4-7 shared:
    4 with a large one-model part on A, 5 a small one on A, 6 none (ordinary), 7 a large one on B
    (`fractions` of 4, 5 and 7).
    """
    arrays = evidence(
        n_fires=[100, 0, 80, 90, 60, 70, 500, 40],
        n_contexts=[10, 0, 8, 9, 6, 7, 50, 5],
        split_share=[0.1, np.nan, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1],
        transfer_r2=[0.05, np.nan, 0.0, 0.9, 0.2, 0.2, 0.9, 0.1],
        rank_score=[0.5, 0.0, 0.4, 0.1, 0.3, 0.3, 0.2, 0.3],
        score_alive=[1, 0, 1, 1, 1, 1, 1, 1],
        score_not_dense=[1, 0, 1, 1, 1, 1, 0.5, 1],
        score_consistency=[0.8, 0, 0.7, 0.6, 0.8, 0.8, 0.5, 0.5],
        score_strength=[0.6, 0, 0.5, 0.4, 0.6, 0.6, 0.5, 0.5],
        component_fraction=[np.nan, np.nan, np.nan, np.nan, fractions[0], fractions[1], 0.1, fractions[2]],
    )
    arrays["component_side"] = np.array([-1, -1, -1, -1, 0, 0, -1, 1], dtype=np.int8)
    arrays["exclusive_a"] = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=np.uint8)
    arrays["exclusive_b"] = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=np.uint8)
    codes = [BLOCK_CODES["A-exclusive"]] * 2 + [BLOCK_CODES["B-exclusive"]] * 2 + [BLOCK_CODES["shared"]] * 4
    arrays["block"] = np.array(codes, dtype=np.int64)
    meta = {"dict_size": 8, "split_base_rate": 0.15}
    index = FeatureIndex(meta, arrays, [f"latent {j}" for j in range(8)], {})
    index.thresholds = HAND_THRESHOLDS
    return index


def test_index_judges_every_presented_latent_and_ranks_components_with_exclusive_latents():
    index = hand_index()
    assert index.components_usable()
    codes = {j: (v.code if v else None) for j, v in ((j, index.verdict(j)) for j in range(8))}
    # The cutoff is the median part, 0.8: latent 5's small part is not presented, so it gets no verdict.
    assert codes == {0: "real", 1: "rare", 2: "tokenizer", 3: "copy", 4: "real", 5: None, 6: None, 7: "real"}
    assert "80%" in index.verdict(4).reason
    assert index.component(4) == ("a", pytest.approx(0.8)) and index.component(6) is None
    assert index.component(0) is None  # exclusive latents have no component
    # Latent 4 scores (0.8 + 0.6) / 2 · 0.8 = 0.56 > latent 0's rank_score 0.5; 5 is too small; 1 never fired.
    assert index.presented("a") == [4, 0, 1]
    assert index.presented("a", top=1) == [4]
    assert index.presented("b") == [7, 2, 3]  # 7: (0.5 + 0.5) / 2 · 0.9 = 0.45
    assert index.ranked("a") == [0, 1]
    rows = index.rows()
    assert rows[2]["verdict"] == "tokenizer" and "90%" in rows[2]["verdict_reason"]
    assert rows[6]["verdict"] == "" and rows[6]["verdict_reason"] == ""
    assert np.isnan(rows[0]["mean_activation"])  # scores an index lacks are NaN, not an error


def test_components_are_not_presented_when_none_stands_out():
    for fractions in ((1.0, 1.0, 1.0), (0.3, 0.2, 0.4)):  # all parts whole (no map), or all small
        index = hand_index(fractions)
        assert index.components_usable() == (fractions[0] < 1.0)  # small parts: a cutoff exists, none reaches it
        assert all(index.component(j) is None for j in (4, 5, 7))
        assert index.presented("a") == index.ranked("a") == [0, 1]
        assert index.verdict(4) is None and index.verdict(0).code == "real"


def test_an_older_index_without_split_share_or_components_still_gives_verdicts():
    index = hand_index()
    for name in ("split_share", "component_fraction", "component_side"):
        del index.arrays[name]
    del index.meta["split_base_rate"]
    assert not index.components_usable()
    assert index.verdict(2).code == "real"  # the tokenizer check is skipped, not failed
    assert index.verdict(3).code == "copy" and index.verdict(1).code == "rare"
    assert index.verdict(4) is None and index.presented("b") == [2, 3]
    assert isinstance(index.verdict(0), Verdict)
    assert np.isnan(index.stats(0)["split_share"])


def test_stored_component_arrays_find_a_planted_one_model_part():
    """What build_index stores, on a crosscoder with a known B-only direction in one shared latent."""
    crosscoder, _ = planted_crosscoder(exclusive=6, side="b")
    alive = np.ones(crosscoder.dict_size, dtype=bool)
    arrays, typical = component_arrays(crosscoder, alive)
    fraction, side = arrays["component_fraction"], arrays["component_side"]
    assert fraction.dtype == np.float32 and side.dtype == np.int8 and fraction.shape == side.shape == alive.shape
    assert side[PLANTED] == 1 and fraction[PLANTED] > DEFAULT_THRESHOLDS.min_component
    assert typical is not None and typical < DEFAULT_THRESHOLDS.min_component
    exclusive = np.r_[0 : crosscoder.n_a, crosscoder.n_a + crosscoder.n_shared : crosscoder.dict_size]
    assert np.isnan(fraction[exclusive]).all() and (side[exclusive] == -1).all()
    others = np.setdiff1d(np.flatnonzero(side >= 0), [PLANTED])
    assert (fraction[others] < fraction[PLANTED]).all()
    dead = alive.copy()
    dead[PLANTED] = False  # a dead latent is scored but not fitted: no side
    arrays, _ = component_arrays(crosscoder, dead)
    assert arrays["component_side"][PLANTED] == -1 and np.isfinite(arrays["component_fraction"][PLANTED])
    with torch.no_grad():  # B's rows paired to the wrong latents: no map, every latent looks like a component
        crosscoder.W_dec_b.copy_(
            crosscoder.W_dec_b[torch.randperm(len(crosscoder.W_dec_b), generator=torch.Generator().manual_seed(1))]
        )
    _, typical = component_arrays(crosscoder, alive)
    assert typical > DEFAULT_THRESHOLDS.min_component  # so the index would present none of them


# ---------------------------------------------------------------- a model and its fine-tune: context shift


def test_context_shift_is_zero_for_identical_models_and_large_where_one_changed():
    """ContextShift on hand-made rows: latent 0 fires where model B adds a direction, latent 1 elsewhere at random."""
    gen = torch.Generator().manual_seed(0)
    n, d = 4000, 16
    x_a = torch.randn(n, d, generator=gen)
    changed = torch.arange(n) % 10 == 0
    f = torch.zeros(n, 3)
    f[changed, 0] = 1.0
    f[torch.rand(n, generator=gen) < 0.1, 1] = 2.0  # latent 2 never fires
    direction = torch.zeros(d)
    direction[3] = 5.0
    x_b = x_a + 0.3 * torch.randn(n, d, generator=gen) + changed[:, None] * direction
    same, moved = ContextShift(3, d), ContextShift(3, d)
    for part in torch.arange(n).split(1000):  # batches accumulate like one pass
        same.add(f[part], x_a[part] - x_a[part])
        moved.add(f[part], x_b[part] - x_a[part])
    assert np.array_equal(same.values()[:2], [0.0, 0.0]) and np.isnan(same.values()[2])
    shift = moved.values()
    # latent 0: mean difference ≈ 0.9·direction after centring, ‖·‖² ≈ 20.3, over E‖D‖² ≈ 16·0.09 + 2.25 ≈ 3.7
    assert 4.0 < shift[0] < 7.0, shift
    assert shift[1] < 0.1, shift  # random contexts: noise, about 1/n_eff plus the centring
    assert np.isnan(shift[2])


def shift_index(shifts: tuple[float, ...]) -> FeatureIndex:
    """Return the hand index of a model and its fine-tune: shared latents 4-7 carry `context_shift`."""
    index = hand_index()
    n_shared = len(shifts)
    index.arrays["context_shift"] = np.array([np.nan] * 4 + list(shifts), dtype=np.float32)
    index.arrays["n_fires"][4 : 4 + n_shared] = 100
    index.thresholds = dataclasses.replace(HAND_THRESHOLDS, component_z=3.0, min_component_latents=3)
    return index


def test_a_fine_tune_pair_presents_changed_shared_latents_for_both_models_by_context_shift():
    index = shift_index((0.05, 0.1, 8.0, 0.02))  # latent 6 changed; the decoder components are then not used
    assert not index.components_usable() and index.component(4) is None
    assert index.change(6) == pytest.approx(8.0) and index.change(4) is None and index.change(0) is None
    verdict = index.verdict(6)
    assert verdict.code == "real" and "8.0×" in verdict.reason
    assert index.verdict(4) is None and index.verdict(7) is None
    assert 6 in index.presented("a") and 6 in index.presented("b")
    assert 4 not in index.presented("a") and 7 not in index.presented("b")
    # identical models: shift 0 everywhere, nothing shared is presented, exclusive latents keep their verdicts
    still = shift_index((0.0, 0.0, 0.0, 0.0))
    assert all(still.change(j) is None for j in range(8)) and still.presented("b") == [2, 3]
    assert still.verdict(0).code == "real"
    # below min_shift: a small consistent change is not presented even when it stands out
    small = shift_index((0.01, 0.02, 0.6, 0.01))
    assert small.change(6) is None
    assert judge(small.arrays, 6, BASE_RATE, shift=0.6).code == "copy"
