"""Data-parallel training: two gloo processes under torchrun equal one process on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crossdiff_core.activations.store import PairedActivationStore, StoreWriter
from crossdiff_core.distributed import ConcatenatedSource, Dist, from_environment, split_batch
from crossdiff_core.errors import CrossDiffError, StoreError
from crossdiff_core.synthetic import SyntheticConfig, SyntheticPair
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
CROSSCODER = {"d_a": 48, "d_b": 64, "dict_size": 256, "exclusive_a": 0.1, "exclusive_b": 0.1, "k": 6}
TRAIN = TrainConfig(
    steps=40, batch_size=256, dead_after_tokens=1024, relocate_every=10, relocate_relative_norm=0.6,
    auxk_exclusive=True, checkpoint_every=10, log_every=1, warmup_steps=5, dtype="float64", seed=3, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A 5-shard store of synthetic paired activations (rank 0 reads 3 shards, rank 1 reads 2)."""
    pair = SyntheticPair(SyntheticConfig(d_a=48, d_b=64, n_features=128, seed=1))
    path = tmp_path_factory.mktemp("ddp") / "store"
    model = {"model_id": "synthetic", "revision": None, "layer": 0, "tokenizer": "none"}
    header = {"model_a": dict(model, model_id="synthetic-a"), "model_b": dict(model, model_id="synthetic-b"),
              "d_a": 48, "d_b": 64, "corpus": "synthetic", "ctx_len": 1, "target_tokens": 2560}  # fmt: skip
    writer = StoreWriter(path, header, dtype="fp32", shard_tokens=512)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        x_a, x_b = pair.sample(512, generator)
        writer.add((x_a, x_b), {"windows": 1, "tokens_a": 512, "tokens_b": 512, "paired": 512, "outliers": 0})
    writer.finish()
    return path


@pytest.fixture(scope="module")
def reference(store_path, tmp_path_factory):
    """The single-process run on the concatenation of what each of two ranks reads."""
    store = PairedActivationStore(store_path)
    source = ConcatenatedSource([store.for_rank(0, 2), store.for_rank(1, 2)])
    out = tmp_path_factory.mktemp("ddp") / "reference"
    from crossdiff_core.crosscoder import CrossCoderConfig

    result = train(CrossCoderConfig(**CROSSCODER), TRAIN, source, out)
    return out, result


def _torchrun(*args, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


def _spec(**extra) -> str:
    return json.dumps({"crosscoder": CROSSCODER, "train": TRAIN.to_dict(), **extra})


def _assert_same_weights(folder_a: Path, folder_b: Path) -> None:
    a, b = load_file(str(folder_a / "model.safetensors")), load_file(str(folder_b / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-8, msg=f"{name} differs")


def test_two_gloo_processes_equal_one_process_on_the_same_batches(store_path, reference, tmp_path):
    ref_out, ref_result = reference
    history = ref_result.history
    assert any(m["auxk_loss"] > 0 for m in history), "the run should exercise auxk (dead latents)"
    assert history[-1]["fvu_a"] < history[0]["fvu_a"]

    out = tmp_path / "ddp"
    done = _torchrun(str(WORKER), str(store_path), str(out), _spec())
    assert "rank 0: 40 steps" in done.stdout and "rank 1: 40 steps" in done.stdout
    _assert_same_weights(ref_out, out)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == len(history) == 40
    for ours, theirs in zip(logged, history, strict=True):  # l0, loss, mse and auxk are exact reductions
        for key in ("loss", "mse", "l0", "auxk_loss", "threshold", "dead_shared"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-9), (ours["step"], key)


def test_a_stopped_data_parallel_run_resumes_to_the_same_weights(store_path, reference, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "ddp"
    done = _torchrun(str(WORKER), str(store_path), str(out), _spec(stop_after=15))
    assert "rank 1: 15 steps" in done.stdout  # rank 1 never asked to stop, yet stopped with rank 0
    checkpoint = json.loads((out / "checkpoint" / "checkpoint.json").read_text())
    assert checkpoint["step"] == 15 and not (out / "model.safetensors").exists()
    _torchrun(str(WORKER), str(store_path), str(out), _spec())
    assert json.loads((out / "training.json").read_text())["resumed_from"] == 15
    _assert_same_weights(ref_out, out)


def test_cli_train_under_torchrun_writes_one_crosscoder(store_path, tmp_path):
    out = tmp_path / "cli"
    done = _torchrun("-m", "crossdiff_core", "train", "--store", str(store_path), "--out", str(out),
                     "--dict-size", "128", "--k", "4", "--steps", "6", "--batch-size", "128")  # fmt: skip
    assert done.stderr.count("saved crosscoder to") == 1  # rank 0 reports; rank 1 is silent
    assert (out / "model.safetensors").is_file() and (out / "training.json").is_file()


def test_store_split_between_ranks_covers_every_shard_once(store_path):
    store = PairedActivationStore(store_path)
    views = [store.for_rank(rank, 2) for rank in range(2)]
    assert sorted(s.file.name for v in views for s in v.shards) == sorted(s.file.name for s in store.shards)
    assert [len(v.shards) for v in views] == [3, 2] and sum(len(v) for v in views) == len(store)
    concatenated = ConcatenatedSource(views).mean_sq_norms()
    assert concatenated == pytest.approx(store.mean_sq_norms(), rel=1e-12)
    with pytest.raises(StoreError, match="fewer than the 6 processes"):
        store.for_rank(0, 6)


def test_uneven_batch_and_single_process_environment_are_explained(monkeypatch):
    with pytest.raises(CrossDiffError, match="multiple of 3"):
        split_batch(1000, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert from_environment() is None
    assert Dist(rank=0, world=2, local_rank=0).is_main


def test_data_parallel_harvest_then_train_on_the_demo_pair(demo_pair_unquantized, tmp_path):
    """`torchrun -m crossdiff_core train --model-a … --model-b …`: each rank harvests its own corpus windows, then trains."""
    from crossdiff_core.activations.config import HarvestConfig
    from crossdiff_core.activations.harvest import harvest, part_dir

    store, out = tmp_path / "store", tmp_path / "dfc"
    done = _torchrun("-m", "crossdiff_core", "train", "--model-a", "smollm2-135m", "--model-b", "gemma3-270m",
                     "--quant", "none", "--tokens", "1000", "--ctx-len", "32", "--batch-windows", "8",
                     "--store", str(store), "--out", str(out), "--dict-size", "128", "--k", "4",
                     "--steps", "4", "--batch-size", "128", timeout=600)  # fmt: skip
    assert done.stderr.count("stored 1000 paired tokens") == 1 and (out / "model.safetensors").is_file()
    merged = PairedActivationStore(store)  # verifies every shard's checksum on load
    assert merged.meta["parts"] == ["parts/rank-000-of-002", "parts/rank-001-of-002"]
    assert len(merged) == merged.meta["counts"]["rows"] == 1000
    parts = [PairedActivationStore(part_dir(store, r, 2)) for r in range(2)]
    assert [len(p) for p in parts] == [500, 500]
    assert merged.meta["windows_done"] == sum(p.meta["windows_done"] for p in parts)
    for rank in range(2):  # rank r trains on exactly what rank r harvested
        assert [s.file for s in merged.for_rank(rank, 2).shards] == [s.file for s in parts[rank].shards]
    # Rank 1 stored the odd corpus windows: the same rows a single process stores from them.
    expected = harvest(*demo_pair_unquantized, "builtin:demo", tmp_path / "odd",
                       HarvestConfig(n_tokens=500, ctx_len=32, batch_windows=8), windows_of=(1, 2))  # fmt: skip
    assert expected["windows_done"] == parts[1].meta["windows_done"]
    x_a, x_b = parts[1].load_shard(0)
    y_a, y_b = PairedActivationStore(tmp_path / "odd").load_shard(0)
    torch.testing.assert_close(x_a.float(), y_a.float(), rtol=0.02, atol=0.05)
    torch.testing.assert_close(x_b.float(), y_b.float(), rtol=0.02, atol=0.05)
    # …and not the even ones, which rank 0 stored.
    assert not torch.allclose(x_a[:50].float(), parts[0].load_shard(0)[0][:50].float(), atol=0.05)
