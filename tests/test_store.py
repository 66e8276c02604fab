"""The paired activation store: writing, resuming, streaming batches, detecting damage."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from crossdiff_core.activations.store import PairedActivationStore, StoreWriter, is_store, read_meta
from crossdiff_core.errors import StoreError

D_A, D_B = 12, 20


def _header(target=1000, corpus="builtin:demo"):
    model = {"model_id": "m", "revision": None, "layer": 1, "tokenizer": "t"}
    return {
        "model_a": dict(model, model_id="a"),
        "model_b": dict(model, model_id="b"),
        "d_a": D_A,
        "d_b": D_B,
        "corpus": corpus,
        "ctx_len": 16,
        "target_tokens": target,
    }


def _rows(n, offset=0):
    index = torch.arange(offset, offset + n, dtype=torch.float32)[:, None]
    return index.expand(n, D_A).clone(), -index.expand(n, D_B).clone()


def _counts(n, windows=1):
    return {"windows": windows, "tokens_a": n + 2, "tokens_b": n + 5, "paired": n + 1, "outliers": 1}


def _write(path, sizes, shard_tokens=100, finish=True):
    writer = StoreWriter(path, _header(sum(sizes)), dtype="fp32", shard_tokens=shard_tokens)
    offset = 0
    for n in sizes:
        writer.add(_rows(n, offset), _counts(n))
        offset += n
    if finish:
        writer.finish()
    return writer


def test_roundtrip_counts_and_norm_statistics(tmp_path):
    _write(tmp_path / "s", [60, 60, 60, 30])
    store = PairedActivationStore(tmp_path / "s", holdout_fraction=0.0)
    assert is_store(tmp_path / "s") and len(store) == 210 and len(store.shards) == 2
    counts = store.meta["counts"]
    assert counts["rows"] == 210 and counts["windows"] == 4 and counts["outliers_dropped"] == 4
    assert counts["coverage_a"] == pytest.approx(214 / 218)
    a = torch.arange(210, dtype=torch.float64)
    mean_a, mean_b = store.mean_sq_norms()
    assert mean_a == pytest.approx(float((a**2).mean() * D_A))
    assert mean_b == pytest.approx(float((a**2).mean() * D_B))
    assert store.pair_info()["model_a"] == "a" and store.pair_info()["layer_b"] == 1


def test_batches_cover_every_row_once_per_epoch_and_pairs_stay_paired(tmp_path):
    _write(tmp_path / "s", [50] * 8, shard_tokens=100)
    store = PairedActivationStore(tmp_path / "s", holdout_fraction=0.0)
    seen = []
    for x_a, x_b in itertools.islice(store.iter_batches(25, seed=3), 16):
        torch.testing.assert_close(x_a[:, 0], -x_b[:, 0])
        seen.extend(x_a[:, 0].long().tolist())
    assert sorted(seen) == list(range(400))


def test_stream_is_deterministic_and_resumes_at_any_batch(tmp_path):
    _write(tmp_path / "s", [50] * 8, shard_tokens=100)
    store = PairedActivationStore(tmp_path / "s")
    full = [a[:, 0] for a, _ in itertools.islice(store.iter_batches(32, seed=7), 30)]
    again = [a[:, 0] for a, _ in itertools.islice(store.iter_batches(32, seed=7), 30)]
    tail = [a[:, 0] for a, _ in itertools.islice(store.iter_batches(32, seed=7, start_batch=17), 13)]
    other = [a[:, 0] for a, _ in itertools.islice(store.iter_batches(32, seed=8), 30)]
    for x, y in zip(full, again):
        torch.testing.assert_close(x, y)
    for x, y in zip(full[17:], tail):
        torch.testing.assert_close(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(full, other))


def test_held_out_rows_never_appear_in_training_batches(tmp_path):
    _write(tmp_path / "s", [100] * 4, shard_tokens=100)
    store = PairedActivationStore(tmp_path / "s", holdout_fraction=0.1)
    held_a, _ = store.held_out()
    assert held_a.shape[0] == 40
    train = set()
    for a, _ in itertools.islice(store.iter_batches(10, seed=0), 36):
        train.update(a[:, 0].long().tolist())
    assert train.isdisjoint(set(held_a[:, 0].long().tolist())) and len(train) == 360


def test_interrupted_writer_resumes_without_duplicates(tmp_path):
    path = tmp_path / "s"
    writer = _write(path, [40, 40, 40], shard_tokens=80, finish=False)  # one shard flushed, 40 rows lost in memory
    assert writer.n_rows == 80 and writer.windows_done == 2
    (path / "shards" / ".shard_00001.safetensors.tmp").write_bytes(b"half-written")
    resumed = StoreWriter(path, _header(120), dtype="fp32", shard_tokens=80)
    assert resumed.windows_done == 2 and not (path / "shards" / ".shard_00001.safetensors.tmp").exists()
    resumed.add(_rows(40, 80), _counts(40))
    resumed.finish()
    store = PairedActivationStore(path, holdout_fraction=0.0)
    rows = torch.cat([store.load_shard(i)[0][:, 0] for i in range(len(store.shards))])
    assert rows.long().tolist() == list(range(120))


def test_incomplete_store_is_refused_with_advice(tmp_path):
    _write(tmp_path / "s", [40], finish=False)
    with pytest.raises(StoreError, match="incomplete"):
        PairedActivationStore(tmp_path / "s")


def test_corrupt_and_truncated_shards_are_detected(tmp_path):
    _write(tmp_path / "s", [100, 100], shard_tokens=100)
    shard = tmp_path / "s" / "shards" / "shard_00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = PairedActivationStore(tmp_path / "s")
    with pytest.raises(StoreError, match="shard_00001.*corrupt"):
        store.load_shard(1)
    shard.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(StoreError, match="shard_00001"):
        PairedActivationStore(tmp_path / "s", verify=False).load_shard(1)
    shard.unlink()
    with pytest.raises(StoreError, match="missing"):
        PairedActivationStore(tmp_path / "s")


def test_corrupt_meta_and_foreign_folders_are_explained(tmp_path):
    with pytest.raises(StoreError, match="no meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(StoreError, match="not a CrossDiff activation store"):
        read_meta(tmp_path)


def test_resuming_into_a_store_of_another_harvest_is_refused(tmp_path):
    _write(tmp_path / "s", [10], finish=False)
    with pytest.raises(StoreError, match="different harvest .*corpus"):
        StoreWriter(tmp_path / "s", _header(corpus="other.txt"), dtype="fp32")


def test_store_smaller_than_a_batch_says_what_to_do(tmp_path):
    _write(tmp_path / "s", [10])
    with pytest.raises(StoreError, match="fewer than one batch"):
        next(PairedActivationStore(tmp_path / "s").iter_batches(64, seed=0))
