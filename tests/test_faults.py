"""Faults, each with a stated outcome: a killed training run, a killed harvest, damaged files, a full disk, no memory.

| fault | outcome asserted here |
|---|---|
| training SIGKILLed at seeded random steps | the same call resumes from the last complete checkpoint; no half-written checkpoint is ever read or left behind; final weights equal an uninterrupted run's |
| harvest SIGKILLed midway (real demo pair, unquantized, CPU) | the same call completes the store: row counts, `windows_done`, shard sizes and checksums as an uninterrupted harvest, same rows |
| damaged store shard, checkpoint, crosscoder or feature-index file | the loader raises a `CrossDiffError` that names the file and says what to do; nothing damaged is used |
| disk full (RLIMIT_FSIZE) while writing a checkpoint, a store shard, meta.json, a crosscoder or a feature index | `DiskFullError` saying the disk is full and what to do; what was there before stays intact and loadable; no temporary file is left |
| out of memory in a training step (RLIMIT_AS, CLI), building a huge crosscoder, or loading a model | one line naming a smaller batch / dictionary size (CLI flag and app field), CPU and 4-bit; a model load names 4-bit, a smaller model, another device |

Every damaged file here is caught, a flipped bit inside tensor data included (store shards, checkpoints, crosscoder
weights and the feature index's files carry SHA-256 checksums).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.store import PairedActivationStore, StoreWriter, read_meta
from crossdiff_core.analysis.index import INDEX_FORMAT, INDEX_VERSION, FeatureIndex
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import CheckpointError, CrossCoderError, CrossDiffError, DiskFullError, StoreError
from crossdiff_core.files import file_sha256
from crossdiff_core.training.checkpoint import _existing_checkpoint
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

REPO = Path(__file__).resolve().parents[1]
D_A, D_B = 24, 32
SHARD_ROWS, N_SHARDS = 512, 9
CHILD_ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


# ---------------------------------------------------------------------------- shared data


def _header(n_rows: int) -> dict:
    """Return a store header for synthetic activations of two made-up models."""
    model = {"revision": None, "layer": 1}
    return {"model_a": dict(model, model_id="toy-a", tokenizer="ta"), "model_b": dict(model, model_id="toy-b", tokenizer="tb"),
            "d_a": D_A, "d_b": D_B, "corpus": "synthetic", "ctx_len": 16, "target_tokens": n_rows}  # fmt: skip


def _synthetic_rows(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return paired rows from a sparse dictionary of 48 features, some only in A, some only in B."""
    gen = torch.Generator().manual_seed(seed)
    dirs_a, dirs_b = torch.randn(48, D_A, generator=gen), torch.randn(48, D_B, generator=gen)
    dirs_a[:6], dirs_b[6:12] = 0, 0
    coefficients = (torch.rand(n, 48, generator=gen) < 0.08) * torch.rand(n, 48, generator=gen) * 3
    return 4 * coefficients @ dirs_a + 0.01 * torch.randn(n, D_A, generator=gen), coefficients @ dirs_b


def _counts(n: int) -> dict:
    return {"windows": 1, "tokens_a": n, "tokens_b": n, "paired": n, "outliers": 0}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A real store (StoreWriter, fp32) of 9 shards x 512 synthetic paired rows."""
    path = tmp_path_factory.mktemp("faults") / "store"
    writer = StoreWriter(path, _header(SHARD_ROWS * N_SHARDS), dtype="fp32", shard_tokens=SHARD_ROWS)
    for shard in range(N_SHARDS):
        writer.add(_synthetic_rows(SHARD_ROWS, shard), _counts(SHARD_ROWS))
    writer.finish()
    return path


STEPS = 60
CONFIG = CrossCoderConfig(d_a=D_A, d_b=D_B, dict_size=256, exclusive_a=16, exclusive_b=16, k=8)


def _train_config(**overrides) -> TrainConfig:
    """The training run of these tests: fp64, CPU, auxk and relocation active within 60 steps."""
    values = dict(
        steps=STEPS,
        batch_size=64,
        lr=3e-3,
        warmup_steps=5,
        dead_after_tokens=1024,
        relocate_every=15,
        relocate_relative_norm=0.6,
        seed=3,
        log_every=1,
        checkpoint_every=10,
        device="cpu",
        dtype="float64",
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def reference(store_path, tmp_path_factory, single_thread) -> dict[str, torch.Tensor]:
    """The final weights of the uninterrupted run."""
    result = train(CONFIG, _train_config(), PairedActivationStore(store_path), tmp_path_factory.mktemp("reference"))
    return {name: tensor.clone() for name, tensor in result.crosscoder.state_dict().items()}


def _assert_same_weights(crosscoder: CrossCoder, reference: dict[str, torch.Tensor]) -> None:
    for name, tensor in crosscoder.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=1e-10, atol=1e-12, msg=name)


def _checkpoint_step(out: Path) -> int | None:
    """Return the step of the checkpoint a resume would read, after checking that it is complete; None without one."""
    folder = _existing_checkpoint(out)
    if folder is None:
        return None
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert file_sha256(folder / "state.safetensors") == meta["state_sha256"], folder
    state = load_file(str(folder / "state.safetensors"))
    assert state["model.W_dec_a"].shape == (CONFIG.dict_size - 16, D_A)
    return int(meta["step"])


# ---------------------------------------------------------------------------- 1. training killed with SIGKILL

TRAIN_CHILD = """
import json, sys
import torch
torch.set_num_threads(1)
from crossdiff_core.crosscoder import CrossCoderConfig
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train
store, out, config, train_config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
train(CrossCoderConfig.from_dict(config), TrainConfig.from_dict(train_config), PairedActivationStore(store), out,
      progress=lambda p: print(p.step, flush=True))
"""


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("trial", range(3))
def test_training_killed_at_a_random_step_resumes_to_the_uninterrupted_weights(trial, store_path, reference, tmp_path):
    """SIGKILL lands at a seeded random step (plus up to one step's time, so also inside checkpoint writes;
    trial 0 checkpoints every step). The checkpoint a resume reads is complete (its checksum matches), the same
    call resumes from it, leaves no `.checkpoint-partial-*`, logs every step once, and ends with the weights of
    the uninterrupted run. Both runs use fp64 on one thread, so they agree to rounding (asserted to 1e-10)."""
    rng = random.Random(1000 + trial)
    every = (1, 4, 10)[trial]
    kill_at = rng.randint(2, STEPS - 20)
    train_config = _train_config(checkpoint_every=every)
    out = tmp_path / "run"
    args = [str(store_path), str(out), json.dumps(CONFIG.to_dict()), json.dumps(train_config.to_dict())]
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, *args], env=CHILD_ENV, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        reached = 0
        for line in proc.stdout:
            reached = int(line)
            if reached >= kill_at:
                break
        time.sleep(rng.uniform(0, 0.003))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert reached >= kill_at, f"the training child stopped at step {reached} before the kill"
    assert not (out / "model.safetensors").exists(), "the child finished before the kill: the trial tested nothing"

    saved = _checkpoint_step(out)
    last_complete = (kill_at - 1) // every * every  # checkpoints before the reported step were written before it
    assert saved is not None or last_complete == 0
    if saved is not None:
        assert saved % every == 0 and last_complete <= saved <= STEPS

    result = train(CONFIG, train_config, PairedActivationStore(store_path), out)
    assert result.resumed_from == saved and result.steps_done == STEPS
    assert not list(out.glob(".checkpoint-*")), "a partial or previous checkpoint survived the resume"
    assert _checkpoint_step(out) == STEPS
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, STEPS + 1))
    _assert_same_weights(result.crosscoder, reference)
    saved_weights = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(saved_weights[name], t) for name, t in result.crosscoder.state_dict().items())


# ---------------------------------------------------------------------------- 2. harvest killed with SIGKILL

HARVEST = HarvestConfig(n_tokens=130, ctx_len=16, batch_windows=2, shard_tokens=20)
HARVEST_CHILD = """
import json, sys
from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.models import load_model
pair = load_model("smollm2-135m", quant="none", device="cpu"), load_model("gemma3-270m", quant="none", device="cpu")
harvest(*pair, "builtin:demo", sys.argv[1], HarvestConfig(**json.loads(sys.argv[2])))
"""


def _listed_shards(path: Path) -> int:
    try:
        return len(json.loads((path / "meta.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def test_harvest_killed_midway_resumes_to_the_uninterrupted_store(demo_pair_unquantized, tmp_path):
    """SIGKILL lands after a seeded random number of shards plus a random delay (possibly inside a shard or
    meta.json write). The same call then completes the store: as many rows, windows and shards (of the same
    sizes) as an uninterrupted harvest, every shard matches the SHA-256 recorded in meta.json, the rows equal the
    uninterrupted harvest's (fp16 storage; compared to 1e-2), and no temporary file is left."""
    rng = random.Random(7)
    killed, uninterrupted = tmp_path / "killed", tmp_path / "uninterrupted"
    proc = subprocess.Popen([sys.executable, "-c", HARVEST_CHILD, str(killed), json.dumps(dataclasses.asdict(HARVEST))],
                            env=CHILD_ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        target = rng.choice((1, 2))
        deadline = time.time() + 300
        while _listed_shards(killed) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    partial = read_meta(killed)
    assert not partial["complete"] and 0 < partial["counts"]["rows"] < HARVEST.n_tokens, "the kill missed the harvest"

    harvest(*demo_pair_unquantized, "builtin:demo", killed, HARVEST)
    harvest(*demo_pair_unquantized, "builtin:demo", uninterrupted, HARVEST)
    resumed, reference = PairedActivationStore(killed, verify=True), PairedActivationStore(uninterrupted)
    assert resumed.meta["complete"] and len(resumed) == len(reference) == HARVEST.n_tokens
    assert resumed.meta["windows_done"] == reference.meta["windows_done"]
    assert resumed.meta["counts"] == reference.meta["counts"]
    assert [s["n"] for s in resumed.meta["shards"]] == [s["n"] for s in reference.meta["shards"]]
    assert len(resumed.shards) >= 5
    for store in (resumed, reference):
        for index in range(len(store.shards)):
            store.load_shard(index)  # checks the shard's SHA-256 against meta.json
    listed = {Path(s["file"]).name for s in resumed.meta["shards"]}
    assert {p.name for p in (killed / "shards").iterdir()} == listed
    assert sorted(p.name for p in killed.iterdir()) == ["meta.json", "shards"]
    for side in (0, 1):
        rows = torch.cat([resumed.load_shard(i)[side] for i in range(len(resumed.shards))]).float()
        expected = torch.cat([reference.load_shard(i)[side] for i in range(len(reference.shards))]).float()
        torch.testing.assert_close(rows, expected, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------- 3. damaged files


def _flip_byte(path: Path, offset_from_end: int = 9) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_flip_byte, _truncate], ids=["bit-flip", "truncated"])
def test_training_on_a_damaged_store_shard_stops_naming_the_shard(damage, store_path, tmp_path):
    """A damaged shard is found when training reads it (checksum), not trained on. (tests/test_store.py checks
    load_shard itself.)"""
    copy = tmp_path / "store"
    copy.mkdir()
    (copy / "shards").mkdir()
    (copy / "meta.json").write_bytes((store_path / "meta.json").read_bytes())
    for shard in (store_path / "shards").iterdir():
        (copy / "shards" / shard.name).write_bytes(shard.read_bytes())
    damage(copy / "shards" / "shard_00000.safetensors")
    with pytest.raises(StoreError, match=r"shard_00000\.safetensors is corrupt.*harvest again"):
        train(CONFIG, _train_config(steps=200, dtype="float32"), PairedActivationStore(copy), tmp_path / "run")


@pytest.fixture(scope="module")
def stopped_run(store_path, tmp_path_factory, single_thread) -> Path:
    """A run stopped after 10 steps: its checkpoint folder holds step 10."""
    out = tmp_path_factory.mktemp("stopped")
    calls = []
    train(
        CONFIG,
        _train_config(),
        PairedActivationStore(store_path),
        out,
        should_stop=lambda: len(calls) > 8 or calls.append(1),
    )
    assert _checkpoint_step(out) == 10
    return out


def _copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        ("state.safetensors", _flip_byte, r"state\.safetensors .*(SHA-256 differs)"),
        ("state.safetensors", _truncate, r"state\.safetensors is missing, corrupt or truncated"),
        ("state.safetensors", Path.unlink, r"state\.safetensors is missing"),
        ("checkpoint.json", lambda p: p.write_text('{"step": 10}'), r"checkpoint\.json is missing or corrupt"),
        ("checkpoint.json", _truncate, r"checkpoint\.json is missing or corrupt"),
    ],
    ids=["state-bit-flip", "state-truncated", "state-missing", "json-incomplete", "json-truncated"],
)
def test_damaged_checkpoint_is_refused_naming_the_file(file, damage, message, stopped_run, store_path, tmp_path):
    """Resuming from a damaged checkpoint raises CheckpointError naming the file and the way out (delete it and
    train again); a flipped bit inside the tensors is caught by the SHA-256 in checkpoint.json. tests/test_train.py
    covers a truncated state and a corrupt checkpoint.json through the same path."""
    out = _copy_tree(stopped_run, tmp_path / "run")
    damage(out / "checkpoint" / file)
    with pytest.raises(CheckpointError, match=message + r".*delete .* start over"):
        train(CONFIG, _train_config(), PairedActivationStore(store_path), out)


@pytest.fixture(scope="module")
def saved_crosscoder(tmp_path_factory) -> Path:
    """A crosscoder folder written by save_pretrained."""
    folder = tmp_path_factory.mktemp("crosscoder")
    CrossCoder(CrossCoderConfig(d_a=D_A, d_b=D_B, dict_size=64, exclusive_a=8, exclusive_b=8, k=4, scale_a=0.5,
                                scale_b=2.0), seed=0).save_pretrained(folder)  # fmt: skip
    return folder


def _set_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: _flip_byte(f / "model.safetensors", 100),
            r"model\.safetensors is corrupt \(its tensors do not match",
        ),
        (lambda f: (f / "config.json").write_text("{}"), r"config\.json of .*lacks required keys"),
        (
            lambda f: _set_config(f, scale_a=0.25),
            r"config\.json of .*does not match .*scale_a: 0\.25 in config\.json, 0\.5",
        ),
        (lambda f: _set_config(f, k="4"), r"config\.json of .*(does not match|is not a valid crosscoder config)"),
    ],
    ids=["weights-bit-flip", "config-empty", "config-scale-changed", "config-bad-value"],
)
def test_damaged_crosscoder_files_are_refused_naming_the_file(damage, message, saved_crosscoder, tmp_path):
    """Damage that still parses is caught: model.safetensors records a SHA-256 of its tensors and the config fields
    they depend on. (Truncated weights, garbage weights and invalid JSON are in tests/crosscoder/test_model.py.)"""
    folder = _copy_tree(saved_crosscoder, tmp_path / "cc")
    damage(folder)
    with pytest.raises(CrossCoderError, match=message) as caught:
        CrossCoder.from_pretrained(folder)
    assert "re-download" in str(caught.value) or "re-train" in str(caught.value)


def test_undamaged_crosscoder_loads_identically(saved_crosscoder):
    loaded = CrossCoder.from_pretrained(saved_crosscoder)
    fresh = CrossCoder(loaded.config, seed=0)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory) -> Path:
    """A small feature index written by FeatureIndex.save (4 latents)."""
    folder = tmp_path_factory.mktemp("cc") / "feature_index"
    meta = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "dict_size": 4}
    arrays = {"block": np.array([0, 1, 1, 2], dtype=np.int8), "n_fires": np.arange(4, dtype=np.int64),
              "top_window": np.zeros((4, 2), dtype=np.int32)}  # fmt: skip
    windows = [
        {"text": "hello world", "a": [["hello", 0, 5, False]], "b": [["hello", 0, 5, False]], "pairs": [[0, 0, 5]]}
    ]
    FeatureIndex(meta, arrays, ["l0", "l1", "l2", "l3"], {}, windows, {"a": {1: "x"}, "b": {2: "y"}}).save(folder)
    return folder


@pytest.mark.parametrize("file", ["index.json", "labels.json", "arrays.safetensors", "windows.json", "vocab.json"])
@pytest.mark.parametrize("damage", [_truncate, lambda p: p.write_bytes(b"")], ids=["truncated", "emptied"])
def test_damaged_feature_index_files_are_refused_naming_the_file(file, damage, saved_index, tmp_path):
    """Every index file is checked where it is read (windows.json and vocab.json on first use): the error names the
    file and says how to rebuild the index."""
    folder = _copy_tree(saved_index, tmp_path / "cc" / "feature_index")
    assert FeatureIndex.load(folder).vocab()["a"] == {1: "x"}
    damage(folder / file)
    with pytest.raises(CrossDiffError, match=rf"{file.replace('.', '[.]')} is damaged.*python -m crossdiff_core index"):
        index = FeatureIndex.load(folder)
        index.windows()
        index.vocab()


@pytest.mark.parametrize("file", ["arrays.safetensors", "windows.json", "vocab.json"])
def test_a_flipped_bit_in_feature_index_data_is_caught_by_its_checksum(file, saved_index, tmp_path):
    folder = _copy_tree(saved_index, tmp_path / "cc" / "feature_index")
    data = bytearray((folder / file).read_bytes())
    data[-3] ^= 0x01  # inside the data, not a header: the file still parses
    (folder / file).write_bytes(bytes(data))
    with pytest.raises(CrossDiffError, match=rf"{file.replace('.', '[.]')} is damaged \(its contents do not match"):
        index = FeatureIndex.load(folder)
        index.windows()
        index.vocab()


def test_an_index_saved_without_checksums_still_loads(saved_index, tmp_path):
    folder = _copy_tree(saved_index, tmp_path / "cc" / "feature_index")
    (folder / "checksums.json").unlink()
    assert FeatureIndex.load(folder).vocab()["b"] == {2: "y"}


# ---------------------------------------------------------------------------- 4. disk full


@contextlib.contextmanager
def file_size_limit(n_bytes: int):
    """Make every write beyond `n_bytes` of a file fail with EFBIG in this process, as a full disk fails with
    ENOSPC (unprivileged: RLIMIT_FSIZE, with SIGXFSZ ignored so the write returns an error instead of killing)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.usefixtures("single_thread")
def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(stopped_run, store_path, reference, tmp_path):
    """The checkpoint at step 20 cannot be written: DiskFullError says so and what to do; the step-10 checkpoint
    stays intact and loadable, no partial folder is left, and once there is room the same call resumes from
    step 10 and ends with the uninterrupted weights."""
    out = _copy_tree(stopped_run, tmp_path / "run")
    state_size = (out / "checkpoint" / "state.safetensors").stat().st_size
    with file_size_limit(state_size // 3), pytest.raises(DiskFullError) as caught:
        train(CONFIG, _train_config(), PairedActivationStore(store_path), out)
    message = str(caught.value)
    assert "disk is full" in message and "checkpoint" in message and "run the same command again" in message
    assert _checkpoint_step(out) == 10 and not list(out.glob(".checkpoint-*"))
    result = train(CONFIG, _train_config(), PairedActivationStore(store_path), out)
    assert result.resumed_from == 10
    _assert_same_weights(result.crosscoder, reference)


def test_disk_full_while_harvesting_keeps_the_written_shards(tmp_path):
    """A shard (and, separately, meta.json) that cannot be written raises DiskFullError; the store keeps its complete
    shards, verifiable against their checksums, leaves no temporary file, and the next writer resumes it."""
    path = tmp_path / "store"
    writer = StoreWriter(path, _header(3 * 200), dtype="fp32", shard_tokens=200)
    for shard in range(2):
        writer.add(_synthetic_rows(200, shard), _counts(200))
    meta_before = (path / "meta.json").read_bytes()
    with (
        file_size_limit(8192),
        pytest.raises(DiskFullError, match=r"disk is full: writing .*shard_00002.*2 complete shards"),
    ):
        writer.add(_synthetic_rows(200, 2), _counts(200))
    assert (path / "meta.json").read_bytes() == meta_before
    assert sorted(p.name for p in (path / "shards").iterdir()) == ["shard_00000.safetensors", "shard_00001.safetensors"]

    writer = StoreWriter(path, _header(3 * 200), dtype="fp32", shard_tokens=200)
    writer.add((torch.zeros(0, D_A), torch.zeros(0, D_B)), _counts(0))
    with file_size_limit(256), pytest.raises(DiskFullError, match=r"meta\.json.*unchanged"):
        writer.flush()  # a window without pairs: only meta.json is written
    assert (path / "meta.json").read_bytes() == meta_before and sorted(p.name for p in path.iterdir()) == [
        "meta.json",
        "shards",
    ]
    partial = PairedActivationStore(path, allow_incomplete=True)
    assert len(partial) == 400 and all(partial.load_shard(i)[0].shape == (200, D_A) for i in range(2))

    writer = StoreWriter(path, _header(3 * 200), dtype="fp32", shard_tokens=200)
    assert writer.windows_done == 2
    writer.add(_synthetic_rows(200, 2), _counts(200))
    writer.finish()
    store = PairedActivationStore(path, holdout_fraction=0.0)
    torch.testing.assert_close(store.load_shard(2)[0], _synthetic_rows(200, 2)[0])


def test_disk_full_while_saving_a_crosscoder_keeps_the_saved_one(saved_crosscoder, tmp_path):
    """save_pretrained over an existing crosscoder fails with DiskFullError; both files of the old one stay as they
    were (byte for byte) and it still loads."""
    folder = _copy_tree(saved_crosscoder, tmp_path / "cc")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = CrossCoder(CrossCoder.from_pretrained(folder).config, seed=1)
    with file_size_limit(4096), pytest.raises(DiskFullError, match=r"disk is full.*unchanged; free space"):
        other.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    CrossCoder.from_pretrained(folder)


def test_disk_full_while_saving_a_feature_index_keeps_the_saved_one(saved_index, tmp_path):
    """FeatureIndex.save over an existing index fails with DiskFullError; every file of the old index stays as it was
    (byte for byte), it still loads, and no temporary folder is left next to it."""
    folder = _copy_tree(saved_index, tmp_path / "cc" / "feature_index")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    old = FeatureIndex.load(folder)
    bigger = FeatureIndex(old.meta, {**old.arrays, "top_window": np.zeros((4, 4096), dtype=np.int32)},
                          old.labels, {}, old.windows(), old.vocab())  # fmt: skip
    with (
        file_size_limit(4096),
        pytest.raises(DiskFullError, match=r"disk is full.*feature index already in .* is unchanged; free space"),
    ):
        bigger.save(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["feature_index"]
    assert FeatureIndex.load(folder).vocab()["a"] == {1: "x"}


# ---------------------------------------------------------------------------- 5. out of memory

OOM_CHILD = """
import resource, sys
import crossdiff_core.activations.store, crossdiff_core.training.loop  # import before limiting the address space
from crossdiff_core.cli import main
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
sys.exit(main(sys.argv[1:]))
"""


def test_out_of_memory_in_a_training_step_is_one_line_with_options(store_path, tmp_path):
    """A real allocation failure: the CLI trains a 131072-latent crosscoder with 4096-token batches in a process
    limited to 1 GiB more address space than it has after imports; the model fits, a step's [batch, latents]
    activations (2 GiB) do not. Outcome: exit code 2 and one line saying out of memory, with the options."""
    args = ["train", "--store", str(store_path), "--out", str(tmp_path / "run"), "--dict-size", "131072",
            "--k", "16", "--batch-size", "4096", "--steps", "2"]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", OOM_CHILD, *args], env=CHILD_ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert last.startswith("error: out of memory while training on cpu")
    batch = "smaller batch size (--batch-size, or 'Batch size' in the app's Train tab; now 4096"
    dict_size = "smaller dictionary size (--dict-size, or 'Dictionary size' in the app's Train tab; now 131072)"
    for option in (
        "can't allocate memory",
        batch,
        dict_size,
        "--quant nf4",
        "new --out folder",
        "automatic job folder",
    ):
        assert option in last, (option, last)


def test_a_batch_larger_than_two_shards_is_served_not_an_endless_loop(store_path):
    """Found by the out-of-memory test: with batches larger than a group of two shards, every group yielded no
    batch and `iter_batches` looped forever. Now groups widen until one holds a batch; an epoch still serves
    each row at most once."""

    def give_up(*_):
        raise TimeoutError("iter_batches served no batch within 30 s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(30)
    try:
        batches = list(itertools.islice(PairedActivationStore(store_path).iter_batches(1500, seed=0), 4))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert all(x_a.shape == (1500, D_A) and x_b.shape == (1500, D_B) for x_a, x_b in batches)
    first_epoch = torch.cat([x_a for x_a, _ in batches[:2]])  # 4374 training rows: 2 batches per epoch
    assert torch.unique(first_epoch, dim=0).shape[0] == 3000


def test_a_crosscoder_too_large_to_build_is_out_of_memory_in_one_line(store_path, tmp_path, capsys):
    """The CPU allocator's failure (a plain RuntimeError) while the model is built: no traceback, exit code 3."""
    from crossdiff_core.cli import main

    out = tmp_path / "huge"
    code = main(["train", "--store", str(store_path), "--out", str(out), "--dict-size", str(2**38), "--k", "8"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert err.strip().startswith("error: out of memory") and "smaller --dict-size" in err


def test_written_files_get_the_usual_permissions_not_owner_only(saved_crosscoder, saved_index, store_path):
    """safetensors and tempfile create owner-only files; what CrossDiff writes follows the umask like open() would."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    for path in [saved_crosscoder / "model.safetensors", saved_index / "arrays.safetensors",
                 *sorted((store_path / "shards").iterdir())[:1], store_path / "meta.json"]:  # fmt: skip
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
    assert saved_index.stat().st_mode & 0o777 == 0o777 & ~mask


LOAD_OOM_CHILD = """
import resource, sys
import torch, transformers  # what a loaded app has imported already
from crossdiff_core.models import load_model
with open("/proc/self/status") as status:
    vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (200 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    load_model("gemma3-270m", quant="none", dtype="fp32", device="cpu")
except Exception as error:
    print(type(error).__name__, error)
"""


def test_out_of_memory_while_loading_a_model_names_the_options():
    """Loading Gemma-3-270M in fp32 (about 1 GiB) with 200 MiB of address space to spare: a ModelLoadError saying
    out of memory, with 4-bit, a smaller model, another device and freeing memory as the options."""
    proc = subprocess.run([sys.executable, "-c", LOAD_OOM_CHILD], env=CHILD_ENV, cwd=REPO, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert last.startswith("ModelLoadError out of memory loading google/gemma-3-270m"), last
    for option in ("--quant nf4", "a smaller model", "--device cpu", "free memory"):
        assert option in last, (option, last)


_FILL_ONCE = """
import sys, time
from pathlib import Path
from crossdiff_core.files import folder_lock, write_folder_atomically

target, log = Path(sys.argv[1]), Path(sys.argv[2])
def fill(tmp):
    with log.open("a") as handle:
        handle.write("fill\\n")
    time.sleep(1.0)
    (tmp / "done").write_text("ok")
with folder_lock(target):
    if not (target / "done").is_file():
        write_folder_atomically(target, fill)
print((target / "done").read_text())
"""


def test_two_processes_filling_one_cache_folder_take_turns(tmp_path):
    """The second process waits for the first and finds the folder done, rather than replacing it under its reader."""
    target, log = tmp_path / "cache" / "converted", tmp_path / "fills.log"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _FILL_ONCE, str(target), str(log)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs == ["ok", "ok"]
    assert log.read_text().splitlines() == ["fill"]
