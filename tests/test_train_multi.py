"""`train_multi` with an `out_dir`: checkpoints, resumption to the same weights, another run's checkpoint refused,
the finished crosscoder and logs on disk, and progress reports."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from crossdiff_core.crosscoder.multi import MultiCrossCoder, MultiCrossCoderConfig
from crossdiff_core.errors import CheckpointError
from crossdiff_core.synthetic_multi import SyntheticModels, SyntheticMultiConfig
from crossdiff_core.training.checkpoint import CHECKPOINT_DIR, METRICS_FILE
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.multi import train_multi

pytestmark = pytest.mark.usefixtures("single_thread")

DATA = SyntheticMultiConfig(d=(32, 48, 40), n_features=120, exclusive=0.05, pair_shared=0.03, features_per_token=3.0,
                            seed=1)  # fmt: skip
CROSSCODER = MultiCrossCoderConfig(d=[32, 48, 40], dict_size=240, exclusive=0.05, k=3)
TRAINING = TrainConfig(steps=40, batch_size=64, lr=1e-2, seed=1, dead_after_tokens=320, device="cpu",
                       relocate_every=10, log_every=5, checkpoint_every=10)  # fmt: skip


def stop_after(n: int):
    calls = []
    return lambda: calls.append(1) or len(calls) >= n


def assert_same_weights(model: MultiCrossCoder, reference: MultiCrossCoder) -> None:
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run into a folder, with the progress reports it made."""
    reports = []
    out_dir = tmp_path_factory.mktemp("full")
    result = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), out_dir, progress=reports.append)
    return out_dir, result, reports


def test_a_run_into_a_folder_leaves_a_loadable_crosscoder_logs_and_progress(full):
    out_dir, result, reports = full
    assert result.steps_done == 40 and result.resumed_from is None
    assert_same_weights(MultiCrossCoder.from_pretrained(out_dir), result.crosscoder)
    summary = json.loads((out_dir / "training.json").read_text())
    assert summary["finished"] and summary["steps_done"] == 40 and summary["crosscoder_config"]["d"] == [32, 48, 40]
    logged = [json.loads(line) for line in (out_dir / METRICS_FILE).read_text().splitlines()]
    assert logged == result.history and [m["step"] for m in logged] == list(range(5, 41, 5))
    assert [(p.step, p.total_steps, p.tokens_seen) for p in reports] == [(s, 40, s * 64) for s in range(5, 41, 5)]
    assert [p.metrics for p in reports] == result.history
    assert [p.elapsed_s for p in reports] == sorted(p.elapsed_s for p in reports) and reports[0].elapsed_s > 0
    assert (out_dir / CHECKPOINT_DIR).is_dir()


def test_a_folder_changes_nothing_in_what_is_trained(full):
    _, result, _ = full
    in_memory = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA))
    assert_same_weights(in_memory.crosscoder, result.crosscoder)
    assert in_memory.history == result.history and in_memory.resumed_from is None


def test_a_stopped_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(full, tmp_path):
    _, uninterrupted, _ = full
    stopped = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path, should_stop=stop_after(17))
    assert stopped.steps_done == 17 and not (tmp_path / "model.safetensors").exists()
    assert not json.loads((tmp_path / "training.json").read_text())["finished"]
    reports = []
    resumed = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path, progress=reports.append)
    assert resumed.resumed_from == 17 and resumed.steps_done == 40
    assert [p.step for p in reports] == [20, 25, 30, 35, 40]
    assert_same_weights(resumed.crosscoder, uninterrupted.crosscoder)
    assert resumed.history == uninterrupted.history
    assert_same_weights(MultiCrossCoder.from_pretrained(tmp_path), uninterrupted.crosscoder)


def test_an_interrupted_run_keeps_its_last_step_and_resumes(full, tmp_path):
    _, uninterrupted, _ = full
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 23:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path, should_stop=interrupt)
    resumed = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path)
    assert resumed.resumed_from == 23
    assert_same_weights(resumed.crosscoder, uninterrupted.crosscoder)


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path, should_stop=stop_after(3))
    with pytest.raises(CheckpointError, match=r"different training run \(k: checkpoint has 3, now 4\).*new folder"):
        train_multi(dataclasses.replace(CROSSCODER, k=4), TRAINING, SyntheticModels(DATA), tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint has 0\.01, now 0\.001"):
        train_multi(CROSSCODER, dataclasses.replace(TRAINING, lr=1e-3), SyntheticModels(DATA), tmp_path)
    again = train_multi(CROSSCODER, TRAINING, SyntheticModels(DATA), tmp_path, resume=False, should_stop=stop_after(2))
    assert again.resumed_from is None and again.steps_done == 2
