"""Cancelling a training job in each phase (load, harvest, train, index): the job returns within 5 s of the cancel,
keeps what is done, and running it again continues from there. The real demo models, unquantized, on a corpus of
one-sentence windows (a few hundred tokens per harvest batch)."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time

import pytest

from crossdiff_core.activations.store import read_meta
from crossdiff_core.analysis.index import has_index
from crossdiff_core.crosscoder.model import WEIGHTS_FILE
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.files import file_sha256
from crossdiff_core.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_META_FILE
from crossdiff_core.workspace import PairKey, TrainJob, Workspace, run_train_job, saved_job

KEY = PairKey("smollm2-135m", "gemma3-270m", quant="none", layer_a=15, layer_b=9)
WITHIN_S = 5.0
"""How soon a cancel must take effect, in every phase (issue 16)."""
SMALL_JOB = {"n_tokens": 1200, "dict_size": 64, "k": 8, "steps": 60, "batch_size": 64, "index_windows": 4}


@pytest.fixture(scope="module")
def workspace(demo_pair_unquantized):
    ws = Workspace(device="cpu")
    ws._pairs[KEY] = demo_pair_unquantized  # the session's loaded pair
    return ws


class Run:
    """One run of a job whose stop flag is set when `when(phase, fraction, message)` first holds, or by `cancel()`;
    records the reports, the metrics and how long the job took to return after the flag was set."""

    def __init__(self, workspace, job, when=lambda *_: False):
        self.workspace, self.job, self.when = workspace, job, when
        self.stop = threading.Event()
        self.phases: list[tuple[str, float, str]] = []
        self.metrics: list[dict] = []
        self.stopped_at: float | None = None
        self.latency: float | None = None

    def cancel(self) -> None:
        if not self.stop.is_set():
            self.stopped_at = time.perf_counter()
            self.stop.set()

    def progress(self, *report) -> None:
        self.phases.append(report)
        if self.when(*report):
            self.cancel()

    def __call__(self):
        result = run_train_job(
            self.workspace, self.job, self.progress, should_stop=self.stop.is_set, on_metrics=self.metrics.append
        )
        if self.stopped_at is not None:
            self.latency = time.perf_counter() - self.stopped_at
        return result

    def reports(self, phase: str) -> list[float]:
        return [fraction for name, fraction, _ in self.phases if name == phase]


def cancel_inside_forward(model, run: Run, when):
    """Cancel `run` from inside `model`'s forward pass (before its first block) once `when()` holds."""

    def hook(_module, _inputs):
        if when():
            run.cancel()

    return model.decoder_layers()[0].register_forward_pre_hook(hook)


def test_cancel_in_harvest_train_and_index_keeps_what_is_done_and_resumes(workspace, sentences, tmp_path):
    job = TrainJob(pair=KEY, out_dir=tmp_path / "job", corpus=sentences, **SMALL_JOB)
    store, crosscoder = job.out_dir / "store", job.out_dir / "crosscoder"
    model_a, model_b = workspace.pair(KEY)

    # Harvest: cancelled inside model B's forward pass of a batch, once an earlier batch was read.
    run = Run(workspace, job)
    handle = cancel_inside_forward(model_b, run, lambda: len(run.reports("harvest")) >= 2)
    try:
        assert run() is None
    finally:
        handle.remove()
    assert run.latency < WITHIN_S, f"the harvest took {run.latency:.1f} s to stop"
    print(f"[cancel] harvest: stopped {run.latency:.2f} s after the cancel")
    last = run.phases[-1]
    assert last[0] == "harvest" and re.search(r"[\d,]+ / 1,200 paired tokens read · about \d+ (s|min) left", last[2])
    meta = read_meta(store)
    kept = meta["counts"]["rows"]
    reported = int(last[2].split(" / ")[0].replace(",", ""))
    assert not meta["complete"] and 0 < kept == reported < job.n_tokens, (
        "earlier batches are kept, not the cancelled one"
    )
    shards = {shard["file"]: shard["sha256"] for shard in meta["shards"]}

    # Train: the harvest continues where it stopped; training is cancelled at step 20 and stops right there.
    run = Run(workspace, job, when=lambda phase, fraction, _: phase == "train" and fraction >= 20 / job.steps)
    assert run() is None
    assert run.latency < WITHIN_S, f"training took {run.latency:.1f} s to stop"
    print(f"[cancel] train: stopped {run.latency:.2f} s after the cancel")
    assert run.phases[1][0] == "harvest" and run.phases[1][2].startswith(f"{kept:,} / 1,200"), "the harvest resumed"
    assert all(file_sha256(store / name) == sha for name, sha in shards.items()), "the kept shards are untouched"
    assert read_meta(store)["complete"]
    checkpoint = json.loads((crosscoder / CHECKPOINT_DIR / CHECKPOINT_META_FILE).read_text())
    assert checkpoint["step"] == 20, "no step runs after the cancel, and the checkpoint holds the last one"

    # Index: training continues from its checkpoint; the index is cancelled inside its first forward pass.
    run = Run(workspace, job)
    handle = cancel_inside_forward(model_a, run, lambda: bool(run.reports("index")))
    try:
        assert run() is None
    finally:
        handle.remove()
    assert run.latency < WITHIN_S, f"the index took {run.latency:.1f} s to stop"
    print(f"[cancel] index: stopped {run.latency:.2f} s after the cancel")
    assert run.metrics[0]["step"] > 20 and run.metrics[-1]["step"] == job.steps, "training resumed at its checkpoint"
    assert run.reports("index") == [0.0], "cancelled before the first batch of windows finished"
    assert (crosscoder / WEIGHTS_FILE).is_file() and not has_index(crosscoder)

    # Done: the trained crosscoder is kept (no training again); only the index is built.
    run = Run(workspace, job)
    assert run() == crosscoder
    assert not run.reports("train") and run.reports("index") and run.phases[-1][0] == "done"
    assert has_index(crosscoder)


def test_cancel_while_the_models_load_returns_at_once_and_they_finish_loading(sentences, tmp_path):
    fresh = Workspace(device="cpu")  # nothing loaded: the job has to load the pair
    job = TrainJob(pair=KEY, out_dir=tmp_path / "job", corpus=sentences, **SMALL_JOB)
    run = Run(fresh, job, when=lambda phase, *_: phase == "load")
    assert run() is None
    assert run.latency < WITHIN_S, f"the load took {run.latency:.1f} s to stop"
    print(f"[cancel] load: stopped {run.latency:.2f} s after the cancel")
    assert not (job.out_dir / "store").exists()
    loading = [t for t in threading.enumerate() if t.name == "crossdiff-load-pair"]
    assert loading, "the models go on loading in the background"
    for thread in loading:
        thread.join(600)
    loaded = list(fresh._pairs.values())
    assert len(loaded) == 1 and fresh.pair(KEY) is loaded[0], "the next job finds the models loaded"


def test_a_job_folder_keeps_its_settings_and_refuses_others(workspace, tmp_path):
    job = TrainJob(pair=KEY, out_dir=tmp_path / "job", **SMALL_JOB)
    assert Run(workspace, job, when=lambda *_: True)() is None  # cancelled at once: only the settings are written
    assert saved_job(job.out_dir) == job
    other = dataclasses.replace(job, steps=70)
    with pytest.raises(CrossDiffError, match=r"holds a job with other settings \(steps: 60 there, 70 now\)") as error:
        run_train_job(workspace, other)
    assert "new job folder" in str(error.value) and "resume=False" not in str(error.value)
