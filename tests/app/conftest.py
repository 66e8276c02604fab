"""App fixtures: the demo pair (unquantized, fastest on CPU), a tiny DFC with a small feature index, and the
app launched once on a free port, pointed at that DFC."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from crossdiff_core.workspace import PairKey, TrainJob, Workspace, run_train_job

from .helpers import free_port

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The demo pair read at its middle layers (30 // 2 and 18 // 2), unquantized: on CPU it loads in seconds,
# while 4-bit loading quantizes every weight first.
KEY = PairKey("smollm2-135m", "gemma3-270m", quant="none", layer_a=15, layer_b=9)
TINY_JOB = {
    "n_tokens": 1000,
    "dict_size": 128,
    "k": 16,
    "exclusive_a": 0.25,
    "exclusive_b": 0.25,
    "steps": 30,
    "batch_size": 128,
    "index_windows": 0,
}


@pytest.fixture(scope="session")
def workspace(demo_pair_unquantized):
    """A Workspace holding the loaded demo pair (the session's, loaded once for every test that needs it)."""
    ws = Workspace(device="cpu")
    model_a, model_b = demo_pair_unquantized
    assert (model_a.layer, model_b.layer, model_a.quant, model_b.quant) == (KEY.layer_a, KEY.layer_b, "none", "none")
    ws._pairs[KEY] = demo_pair_unquantized
    return ws


@pytest.fixture(scope="session")
def tiny_dfc(workspace, tmp_path_factory) -> Path:
    """A tiny DFC trained on the demo pair, with a feature index built from 32 held-out windows.

    30 steps leave it close to its initialization, where exclusive latents (one decoder) lose the BatchTopK
    contest to shared ones (two decoders); their decoder rows are scaled by 4 so that they fire, as they do in
    a fully trained DFC. The app is what is under test here, not the training.
    """
    import torch

    from crossdiff_core.activations.config import HarvestConfig
    from crossdiff_core.activations.harvest import harvest
    from crossdiff_core.activations.store import read_meta
    from crossdiff_core.analysis import IndexConfig, build_index, index_dir
    from crossdiff_core.crosscoder import CrossCoder

    start = time.perf_counter()
    job_dir = tmp_path_factory.mktemp("tiny-job")
    job = TrainJob(pair=KEY, out_dir=job_dir, **TINY_JOB)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared machine: one thread is faster (as in the server's workers)
    try:
        # The job would read corpus windows 64 at a time (HarvestConfig's batch), three times the ~20 windows that
        # its 1000 tokens take; the same store harvested 24 windows at a time is complete when the job finds it.
        harvest(*workspace.pair(KEY), job.corpus, job_dir / "store", HarvestConfig(job.n_tokens, batch_windows=24))
        folder = run_train_job(workspace, job)
        assert folder is not None
        cc = CrossCoder.from_pretrained(str(folder))
        with torch.no_grad():
            cc.W_dec_a[: cc.n_a] *= 4.0
            cc.W_dec_b[cc.W_dec_b.shape[0] - cc.n_b :] *= 4.0
        cc.save_pretrained(folder)
        workspace.forget(str(folder))
        meta = read_meta(job_dir / "store")
        build_index(
            workspace.crosscoder(str(folder)),
            workspace.pair(KEY),
            IndexConfig(n_windows=32, ctx_len=64, top_contexts=4, skip_windows=meta["windows_done"]),
            out_dir=index_dir(folder),
        )
    finally:
        torch.set_num_threads(threads)
    print(f"[app tests] tiny DFC trained and indexed in {time.perf_counter() - start:.1f} s")
    return folder


@pytest.fixture(scope="session")
def tiny_store(tiny_dfc) -> Path:
    """The complete activation store the tiny DFC was trained on (copy it into a job folder to skip harvesting)."""
    return tiny_dfc.parent / "store"


@pytest.fixture(scope="session")
def served(workspace, tiny_dfc, tmp_path_factory):
    """The app, launched once on a free port; yields `(url, app)` where `app` is its CrossDiffApp."""
    from crossdiff_app.server import serve
    from crossdiff_app.ui import build

    start = time.perf_counter()
    demo = build(
        workspace=workspace, default_crosscoder=str(tiny_dfc), quant="none", runs_dir=tmp_path_factory.mktemp("runs")
    )
    port = free_port()
    serve(demo, port=port, block=False, quiet=True)
    controller = demo.crossdiff
    assert controller.ready.wait(120), "the preload did not finish"
    controller.launch_seconds = time.perf_counter() - start
    yield f"http://127.0.0.1:{port}/", controller
    demo.close()


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
