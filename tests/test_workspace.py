"""The shared workspace: models loaded once, crosscoders cached, train jobs that cancel and resume."""

from __future__ import annotations

import pytest

from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.workspace import PairKey, TrainJob, Workspace, run_train_job

DEMO = PairKey("smollm2-135m", "gemma3-270m", quant="nf4")


@pytest.fixture(scope="module")
def workspace(demo_pair):
    ws = Workspace(device="cpu")
    ws._pairs[DEMO] = demo_pair  # reuse the session's loaded pair instead of loading it twice
    return ws


def test_pairs_are_loaded_once_and_shared(workspace, demo_pair):
    assert workspace.pair(DEMO) is workspace.pair(DEMO)
    assert workspace.pair(DEMO)[0] is demo_pair[0]


def test_train_job_reports_phases_cancels_and_resumes(workspace, sentences, tmp_path):
    job = TrainJob(
        pair=DEMO,
        out_dir=tmp_path / "job",
        corpus=sentences,
        n_tokens=1000,
        dict_size=128,
        k=8,
        steps=40,
        batch_size=128,
        index_windows=4,
    )
    phases, metrics = [], []
    calls = {"n": 0}

    def stop_during_training():
        calls["n"] += 1
        return bool(phases) and phases[-1][0] == "train" and phases[-1][1] >= 0.25

    cancelled = run_train_job(workspace, job, progress=lambda *p: phases.append(p), should_stop=stop_during_training)
    assert cancelled is None
    assert [p for p, *_ in phases][:2] == ["load", "harvest"] and any(p == "train" for p, *_ in phases)
    assert (tmp_path / "job" / "crosscoder" / "checkpoint").exists()
    phases.clear()
    done = run_train_job(workspace, job, progress=lambda *p: phases.append(p), on_metrics=metrics.append)
    assert done == tmp_path / "job" / "crosscoder" and phases[-1][0] == "done"
    assert "index" in [p for p, *_ in phases], "the job indexes the new crosscoder after training"
    assert metrics and {"fvu_a", "fvu_b", "l0"} <= set(metrics[-1])
    assert metrics[0]["step"] > 1, "the resumed job must continue, not restart"
    cc = workspace.crosscoder(str(done))
    assert isinstance(cc, CrossCoder) and workspace.crosscoder(str(done)) is cc
    index = workspace.index(str(done))
    assert index is not None and index.meta["n_windows"] == 4 and workspace.index(str(done)) is index


def test_bad_crosscoder_sources_are_explained(workspace, tmp_path):
    with pytest.raises(CrossDiffError, match="no crosscoder chosen"):
        workspace.crosscoder("  ")
    with pytest.raises(CrossDiffError, match="no crosscoder at"):
        workspace.crosscoder(str(tmp_path / "missing" / "deep"))
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(CrossDiffError, match="is a file"):
        workspace.crosscoder(str(tmp_path / "file.bin"))


TINY = PairKey("tiny-llama", "tiny-gemma")
TINY_JOB = {"n_tokens": 1500, "dict_size": 64, "k": 4, "steps": 40, "batch_size": 64, "index_windows": 0}


def test_the_cli_continues_a_job_on_the_same_train_path(tiny_pair, sentences, tmp_path, capsys):
    """The app's job and the CLI's `train` build one config from the same settings: a job cancelled at step 20 is
    finished by `train` with the job's settings and ends as the uninterrupted job ends; other settings are refused."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file

    from crossdiff_core.cli import main

    ws = Workspace(device="cpu")
    ws._pairs[TINY] = tiny_pair
    cut = TrainJob(pair=TINY, out_dir=tmp_path / "cut", corpus=sentences, **TINY_JOB)
    phases = []

    def stop_at_half() -> bool:
        return bool(phases) and phases[-1][0] == "train" and phases[-1][1] >= 0.5

    assert run_train_job(ws, cut, progress=lambda *p: phases.append(p), should_stop=stop_at_half) is None
    store, crosscoder = cut.out_dir / "store", cut.out_dir / "crosscoder"
    assert json.loads((crosscoder / "checkpoint" / "checkpoint.json").read_text())["step"] == 20
    whole = TrainJob(pair=TINY, out_dir=tmp_path / "whole", corpus=sentences, **TINY_JOB)
    shutil.copytree(store, whole.out_dir / "store")  # the same rows: the job finds its store complete
    assert run_train_job(ws, whole) == whole.out_dir / "crosscoder"

    options = ["train", "--store", str(store), "--out", str(crosscoder), "--dict-size", "64", "--k", "4",
               "--batch-size", "64"]  # fmt: skip
    assert main([*options, "--steps", "50"]) == 2
    assert "steps: checkpoint has 40, now 50" in capsys.readouterr().err, "a run is continued only as it began"
    assert main([*options, "--steps", "40"]) == 0
    assert f"saved crosscoder to {crosscoder}" in capsys.readouterr().err
    by_cli = json.loads((crosscoder / "training.json").read_text())
    by_app = json.loads((whole.out_dir / "crosscoder" / "training.json").read_text())
    assert by_cli["resumed_from"] == 20 and by_cli["steps_done"] == 40 and by_app["resumed_from"] is None
    assert by_cli["crosscoder_config"] == by_app["crosscoder_config"]
    assert {**by_cli["train_config"], "checkpoint_every": None} == {**by_app["train_config"], "checkpoint_every": None}
    cli_weights, app_weights = (
        load_file(str(crosscoder / "model.safetensors")),
        load_file(str(whole.out_dir / "crosscoder" / "model.safetensors")),
    )
    assert cli_weights.keys() == app_weights.keys()
    for name in cli_weights:
        torch.testing.assert_close(cli_weights[name], app_weights[name], msg=name)
