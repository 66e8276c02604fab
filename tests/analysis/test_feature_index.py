"""The feature index: what it stores, that it reloads and rebuilds identically, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossdiff_core.analysis import FeatureIndex, build_index, has_index, index_dir, load_index, load_or_build_index
from crossdiff_core.analysis.blocks import BLOCK_CODES
from crossdiff_core.analysis.index import INDEX_VERSION
from crossdiff_core.analysis.labels import UNSEEN_LABEL
from crossdiff_core.analysis.presented import component_cutoff
from crossdiff_core.analysis.scores import MIN_CONTEXTS, SCORE_DOCS
from crossdiff_core.analysis.verdict import VERDICTS
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.errors import CrossCoderError, CrossDiffError


def test_real_index_holds_every_score_context_and_token(real_index, real_dfc, real_index_progress):
    index, cc = real_index, real_dfc.crosscoder
    F, n_ctx = cc.dict_size, index.meta["config"]["top_contexts"]
    assert {p.stage for p in real_index_progress} == {"windows", "tokens", "done"}
    assert real_index_progress[-1].stage == "done"
    for name in SCORE_DOCS:
        assert index.arrays[name].shape == (F,), name
    assert index.arrays["ctx_acts"].shape[:2] == (F, n_ctx)
    assert (index.arrays["block"] == BLOCK_CODES["A-exclusive"]).sum() == cc.n_a
    assert index.meta["n_rows"] > 100 and 0 < index.arrays["frequency"].max() <= 1
    alive = np.flatnonzero(index.arrays["n_fires"] > 0)
    assert len(alive) > 10
    assert np.isfinite(index.arrays["transfer_r2"][alive]).any()
    for latent in alive[:5]:
        card = index.card(int(latent), 2)
        assert card.contexts and card.label and card.label != UNSEEN_LABEL
        top = card.contexts[0]
        assert top.activation == pytest.approx(card.stats["max_activation"], rel=1e-5)
        peaks_a = [t for t in top.tokens_a if t.peak]
        assert len(peaks_a) == 1 and peaks_a[0].activation == pytest.approx(top.activation, rel=1e-2)
        assert top.text and "[[" in top.marked("a") and "[[" in top.marked("b")
        assert sum(t.activation is not None for t in top.tokens_b) >= 1
        expected_sides = {"A-exclusive": {"a"}, "shared": {"a", "b"}, "B-exclusive": {"b"}}[card.block]
        assert set(card.promoted) == expected_sides and all(len(v) == 10 for v in card.promoted.values())
    a_only = index.exclusive("a")
    assert len(a_only) == cc.n_a and (index.arrays["promote_ids_b"][a_only] == -1).all()
    assert np.isnan(index.arrays["nu_error"][a_only]).all()  # no B decoder: Latent Scaling does not apply
    ranked = index.ranked("a")
    assert sorted(ranked) == sorted(a_only.tolist())
    fired = index.arrays["n_fires"][ranked] > 0
    scores = index.arrays["rank_score"][ranked]
    assert (np.diff(scores[fired]) <= 0).all()


def test_real_index_ranks_no_dead_latent_above_an_alive_one(real_index):
    arrays = real_index.arrays
    n_fires, n_contexts = arrays["n_fires"], arrays["n_contexts"]
    assert (n_contexts <= n_fires).all() and n_contexts.max() <= real_index.meta["n_windows"]
    assert ((n_contexts > 0) == (n_fires > 0)).all()
    assert (n_contexts >= (arrays["top_window"] >= 0).sum(1)).all()
    dead_and_alive = 0
    for side in ("a", "b"):
        fired = n_fires[real_index.ranked(side)] > 0
        first_dead = int(np.argmin(fired)) if not fired.all() else len(fired)
        assert fired[:first_dead].all() and not fired[first_dead:].any(), (side, fired)
        dead_and_alive += 0 < first_dead < len(fired)
    assert dead_and_alive, "the fixture DFC has no side with both dead and alive exclusive latents: test is vacuous"
    rare = (n_fires > 0) & (n_contexts < MIN_CONTEXTS)
    assert (arrays["score_alive"][rare] < 1).all() and (arrays["score_alive"][n_fires == 0] == 0).all()


def test_saved_index_reloads_and_checks_its_crosscoder(real_index, real_dfc):
    loaded = load_index(real_dfc.out_dir, real_dfc.crosscoder)
    assert loaded.labels == real_index.labels
    for name, array in real_index.arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
    assert loaded.contexts(int(np.argmax(loaded.arrays["n_fires"])), 1)[0].text
    json.dumps(loaded.card(0).to_dict(), allow_nan=False)  # NaN scores become null
    other = CrossCoder(real_dfc.crosscoder.config, seed=1)
    with pytest.raises(CrossDiffError, match="other crosscoder weights"):
        load_index(real_dfc.out_dir, other)


def test_building_twice_gives_the_same_index(tiny_dfc, tiny_pair, tiny_index_config, tmp_path):
    first = build_index(tiny_dfc.crosscoder, tiny_pair, tiny_index_config, out_dir=tmp_path / "one")
    second = build_index(tiny_dfc.crosscoder, tiny_pair, tiny_index_config, out_dir=tmp_path / "two")
    assert first.arrays.keys() == second.arrays.keys()
    for name in first.arrays:
        np.testing.assert_array_equal(first.arrays[name], second.arrays[name], err_msg=name)
    for name in ("index.json", "arrays.safetensors", "windows.json", "vocab.json", "labels.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_missing_index_says_how_to_build_it_and_load_or_build_builds_it(
    tiny_dfc, tiny_pair, tiny_index_config, tmp_path
):
    cc = tiny_dfc.crosscoder
    folder = tmp_path / "cc"
    cc.save_pretrained(folder)
    assert not has_index(folder)
    with pytest.raises(CrossDiffError, match="python -m crossdiff_core index --crosscoder"):
        load_index(folder)
    built = load_or_build_index(folder, cc, tiny_pair, tiny_index_config)
    assert has_index(folder) and built.path == index_dir(folder)
    mtime = (index_dir(folder) / "arrays.safetensors").stat().st_mtime_ns
    again = load_or_build_index(folder, cc, tiny_pair, tiny_index_config)  # up to date: loaded, not rebuilt
    assert (index_dir(folder) / "arrays.safetensors").stat().st_mtime_ns == mtime and again.labels == built.labels

    meta_path = index_dir(folder) / "index.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = INDEX_VERSION - 1  # an index written by an older CrossDiff
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        CrossDiffError,
        match=rf"format version {INDEX_VERSION - 1}.*rebuild it with "
        r"`python -m crossdiff_core index --crosscoder",
    ):
        load_index(folder, cc)
    rebuilt = load_or_build_index(folder, cc, tiny_pair, tiny_index_config)  # old format: rebuilt
    assert rebuilt.meta["version"] == json.loads(meta_path.read_text())["version"] == INDEX_VERSION


def test_index_rejects_bad_settings_and_bad_latents(tiny_dfc, tiny_pair, tiny_index_config, real_index):
    from dataclasses import replace

    from crossdiff_core.errors import CorpusError

    with pytest.raises(CrossDiffError, match="n_windows"):
        build_index(tiny_dfc.crosscoder, tiny_pair, replace(tiny_index_config, n_windows=0))
    with pytest.raises(CorpusError, match="skip"):
        build_index(tiny_dfc.crosscoder, tiny_pair, replace(tiny_index_config, skip_windows=10**7))
    with pytest.raises(CrossCoderError, match="out of range"):
        real_index.card(real_index.dict_size)
    with pytest.raises(CrossCoderError, match="out of range"):
        real_index.contexts(-1)


def test_index_files_are_documented_json_and_safetensors(real_dfc):
    folder = index_dir(real_dfc.out_dir)
    meta = json.loads((folder / "index.json").read_text())
    assert meta["format"] == "crossdiff-feature-index" and meta["scores"] == SCORE_DOCS
    assert meta["models"]["a"]["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    windows = json.loads((folder / "windows.json").read_text())
    record = windows[0]
    assert "".join(t[0] for t in record["a"] if not t[3]) == record["text"]
    for pos_a, pos_b, end in record["pairs"]:
        assert record["a"][pos_a][2] == record["b"][pos_b][2] == end
    labels = json.loads((folder / "labels.json").read_text())
    assert len(labels["labels"]) == real_dfc.crosscoder.dict_size
    assert isinstance(FeatureIndex.load(folder).vocab()["b"], dict)
    assert torch.is_tensor(real_dfc.crosscoder.W_dec_a)


def test_real_index_stores_split_share_and_components_and_judges_presented_latents(real_index, real_dfc):
    index, cc = real_index, real_dfc.crosscoder
    arrays, F = index.arrays, cc.dict_size
    fired = arrays["n_fires"] > 0
    assert 0 <= index.meta["split_base_rate"] <= 1
    share = arrays["split_share"]
    assert share.shape == (F,) and ((share[fired] >= 0) & (share[fired] <= 1)).all() and np.isnan(share[~fired]).all()
    fraction, side = arrays["component_fraction"], arrays["component_side"]
    assert fraction.dtype == np.float32 and side.dtype == np.int8 and set(np.unique(side)) <= {-1, 0, 1}
    exclusive = (arrays["exclusive_a"] | arrays["exclusive_b"]).astype(bool)
    assert np.isnan(fraction[exclusive]).all() and (side[exclusive] == -1).all()  # no decoder in the other model
    shared = ~exclusive
    assert ((fraction[shared] >= 0) & (fraction[shared] <= 1 + 1e-6)).all()
    assert (side[shared & ~fired] == -1).all()  # dead latents are not fitted
    cutoff = component_cutoff(arrays, index.thresholds)
    assert index.components_usable() == (cutoff is not None)
    for latent in np.flatnonzero(exclusive & fired):
        verdict = index.verdict(int(latent))
        assert verdict is not None and verdict.code in VERDICTS and verdict.reason
    ordinary = int(np.flatnonzero(shared & fired)[0])
    assert index.verdict(ordinary) is None and index.card(ordinary).verdict is None
    for code, side_name in enumerate(("a", "b")):
        presented = index.presented(side_name)
        extra = [j for j in presented if not exclusive[j]]  # shared latents presented through their component
        assert all(fraction[j] >= cutoff and side[j] == code for j in extra)
        assert [j for j in presented if exclusive[j]] == index.ranked(side_name)
        assert index.presented(side_name, top=3) == presented[:3]
    top = index.ranked("a", 1)[0]
    card = index.card(top, 1).to_dict()
    assert card["verdict"] == index.verdict(top).to_dict()
    assert {"split_share", "component_fraction", "component_side"} <= set(card["stats"])
    rows = index.rows()
    assert rows[top]["verdict"] == index.verdict(top).code and rows[ordinary]["verdict"] == ""
