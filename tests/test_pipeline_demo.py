"""End to end on the real demo pair (SmolLM2-135M-Instruct × Gemma-3-270M) in 4-bit on CPU:
harvest paired activations from builtin:demo, train a DFC, save/load it, diff a prompt from the CLI,
and check that bad input and interruptions lose nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crossdiff_core.activations.config import HarvestConfig
from crossdiff_core.activations.harvest import harvest
from crossdiff_core.activations.store import PairedActivationStore
from crossdiff_core.analysis.prompt_diff import diff
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig, check_models
from crossdiff_core.errors import CrossCoderError, StoreError
from crossdiff_core.training.config import TrainConfig
from crossdiff_core.training.loop import train

REPO = Path(__file__).resolve().parents[1]
N_TOKENS = 4000


def cli(*args, check=True, timeout=600):
    """Run `python -m crossdiff_core ARGS` and return the completed process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "crossdiff_core", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def store_dir(demo_pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    harvest(
        *demo_pair,
        "builtin:demo",
        out,
        HarvestConfig(n_tokens=N_TOKENS, ctx_len=96, batch_windows=8, shard_tokens=1500),
    )
    return out


@pytest.fixture(scope="module")
def trained(store_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dfc")
    config = CrossCoderConfig(d_a=576, d_b=640, dict_size=512, exclusive_a=0.05, exclusive_b=0.05, k=16)
    result = train(
        config,
        TrainConfig(steps=300, batch_size=256, seed=0, checkpoint_every=100),
        PairedActivationStore(store_dir),
        out,
    )
    return result


def test_harvest_stores_paired_tokens_with_metadata(store_dir, demo_pair):
    store = PairedActivationStore(store_dir)
    meta = store.meta
    assert len(store) == N_TOKENS and store.d_a == 576 and store.d_b == 640
    assert len(store.shards) >= 3
    assert meta["model_a"]["model_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["model_b"]["model_id"] == "google/gemma-3-270m"
    assert meta["model_a"]["tokenizer"] == demo_pair[0].tokenizer_fingerprint
    assert meta["corpus"] == "builtin:demo" and meta["dtype"] == "fp16"
    counts = meta["counts"]
    assert 0.5 < counts["coverage_a"] <= 1 and 0.5 < counts["coverage_b"] <= 1
    assert counts["outliers_dropped"] >= 0
    x_a, x_b = next(store.iter_batches(64, seed=0))
    assert torch.isfinite(x_a).all() and torch.isfinite(x_b).all()
    norms_a = x_a.norm(dim=-1)
    assert norms_a.max() < 10 * norms_a.median(), "attention-sink outliers must be filtered"


def test_harvest_rows_match_the_models_activations(store_dir, demo_pair):
    """The first stored row pair is each model's activation at a paired position of the first window."""
    from crossdiff_core.alignment import align_text
    from crossdiff_core.corpus.sources import iter_windows

    model_a, model_b = demo_pair
    text = next(iter_windows("builtin:demo", model_a.tokenizer, 96))
    tok_a, _tok_b, al = align_text(model_a.tokenizer, model_b.tokenizer, text, max_tokens=96)
    acts_a = model_a.activations(torch.tensor([tok_a.input_ids]))[0, torch.as_tensor(al.pos_a)]
    a, _b = PairedActivationStore(store_dir).load_shard(0)
    norms = acts_a.norm(dim=-1)
    first_inlier = int(torch.nonzero(norms <= 10 * norms.median())[0])
    torch.testing.assert_close(a[0].float(), acts_a[first_inlier], rtol=2e-2, atol=0.5)


def test_dfc_training_lowers_fvu_for_both_models(trained):
    history = trained.history
    first, last = history[0], trained.metrics
    assert last["fvu_a"] < 0.8 * first["fvu_a"] and last["fvu_b"] < 0.8 * first["fvu_b"]
    assert last["fvu_a"] < 0.6 and last["fvu_b"] < 0.6
    print(f"\nFINAL FVU A {last['fvu_a']:.3f}  B {last['fvu_b']:.3f}  L0 {last['l0']:.1f}")


def test_held_out_fvu_is_reasonable_and_save_load_is_identical(trained, store_dir, tmp_path):
    cc = trained.crosscoder.eval()
    x_a, x_b = PairedActivationStore(store_dir).held_out()
    with torch.no_grad():
        r_a, r_b, _ = cc(x_a, x_b)
    fvu_a = ((x_a - r_a).pow(2).sum() / (x_a - x_a.mean(0)).pow(2).sum()).item()
    fvu_b = ((x_b - r_b).pow(2).sum() / (x_b - x_b.mean(0)).pow(2).sum()).item()
    assert fvu_a < 0.8 and fvu_b < 0.8
    cc.save_pretrained(tmp_path / "copy")
    loaded = CrossCoder.from_pretrained(str(tmp_path / "copy")).eval()
    with torch.no_grad():
        l_a, l_b, _ = loaded(x_a, x_b)
    assert torch.equal(l_a, r_a) and torch.equal(l_b, r_b)
    assert loaded.config.model_a == "HuggingFaceTB/SmolLM2-135M-Instruct" and loaded.config.layer_b == 9


def test_exclusive_latents_never_touch_the_other_model(trained, store_dir):
    cc = trained.crosscoder.eval()
    x_a, x_b = PairedActivationStore(store_dir).held_out(max_rows=64)
    with torch.no_grad():
        f = cc.encode(x_a, x_b) + 0.5  # make every latent active
        base_a, base_b = cc.decode(f)
        for block, other in ((cc.slice_a_exclusive, 1), (cc.slice_b_exclusive, 0)):
            g = f.clone()
            g[:, block] = 0
            out = cc.decode(g)
            assert torch.equal(out[other], (base_a, base_b)[other])
            assert not torch.equal(out[1 - other], (base_a, base_b)[1 - other])


def test_diff_finds_exclusive_latents_and_cli_prints_json(trained, demo_pair):
    result = diff(
        trained.crosscoder, demo_pair, "The history of the Roman Empire. 中国的历史。 def f(x): return x"
    ).to_dict()
    assert result["paired"] > 5 and result["model_a"]["tokens"] and result["model_b"]["tokens"]
    out = cli("diff", "--crosscoder", str(trained.out_dir), "Paris is the capital of France.", "--json")
    parsed = json.loads(out.stdout)
    for side, block in (("model_a", "A-exclusive"), ("model_b", "B-exclusive")):
        assert parsed[side]["tokens"], side
        for row in parsed[side]["exclusive"]:
            assert set(row) >= {"latent", "activation", "label"} and row["activation"] > 0 and block in row["label"]
    info = json.loads(cli("info", str(trained.out_dir), "--json").stdout)
    assert (info["d_a"], info["d_b"], info["dict_size"]) == (576, 640, 512)
    assert info["n_exclusive_a"] + info["n_exclusive_b"] + info["n_shared"] == 512
    assert (info["layer_a"], info["layer_b"]) == (15, 9)


def test_crosscoder_against_the_wrong_pair_is_refused(trained, demo_pair):
    model_a, model_b = demo_pair
    with pytest.raises(CrossCoderError, match="swapped"):
        check_models(trained.crosscoder, model_b, model_a)
    proc = cli("diff", "--crosscoder", str(trained.out_dir), "hello", "--layer-a", "3", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "layer" in proc.stderr


def test_harvest_interrupted_resumes_to_the_same_rows(demo_pair, store_dir, tmp_path):
    config = HarvestConfig(n_tokens=N_TOKENS, ctx_len=96, batch_windows=8, shard_tokens=1500)
    batches = []  # stop once one batch of windows is stored: should_stop is asked before every block too
    harvest(
        *demo_pair, "builtin:demo", tmp_path / "s", config, progress=batches.append, should_stop=lambda: bool(batches)
    )
    partial = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert not partial["complete"] and 0 < partial["counts"]["rows"] < N_TOKENS
    harvest(*demo_pair, "builtin:demo", tmp_path / "s", config)
    resumed, reference = PairedActivationStore(tmp_path / "s"), PairedActivationStore(store_dir)
    assert len(resumed) == len(reference)
    ra = torch.cat([resumed.load_shard(i)[0] for i in range(len(resumed.shards))])
    fa = torch.cat([reference.load_shard(i)[0] for i in range(len(reference.shards))])
    torch.testing.assert_close(ra.float(), fa.float(), rtol=1e-2, atol=0.1)


def test_empty_corpus_and_corpus_without_pairs_are_clear_errors(demo_pair, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(StoreError, match="no paired tokens"):
        harvest(*demo_pair, str(tmp_path / "empty.txt"), tmp_path / "s1", HarvestConfig(n_tokens=100))
    (tmp_path / "specials.txt").write_text("<|im_start|><|im_end|><|im_start|>\n\n<|im_end|><|im_start|>")
    with pytest.raises(StoreError, match="no paired tokens"):
        harvest(*demo_pair, str(tmp_path / "specials.txt"), tmp_path / "s2", HarvestConfig(n_tokens=100))


def test_cli_rejects_bad_input_in_one_line(store_dir, tmp_path):
    cases = [
        (["train", "--store", str(store_dir), "--out", str(tmp_path / "x"), "--dict-size", "64", "--k", "100"], "k"),
        (["train", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")], "not an activation store"),
        (
            ["harvest", "--model-a", "no-such-org/model", "--model-b", "gemma3-270m", "--out", str(tmp_path / "z")],
            "cannot load model",
        ),
        (
            [
                "harvest",
                "--model-a",
                "smollm2-135m",
                "--model-b",
                "gemma3-270m",
                "--layer-a",
                "99",
                "--out",
                str(tmp_path / "w"),
            ],
            "out of range",
        ),
        (["info", str(tmp_path)], "neither"),
    ]
    for args, needle in cases:
        proc = cli(*args, check=False)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, proc.stderr
        assert needle in proc.stderr.strip().splitlines()[-1], (args, proc.stderr[-500:])


def test_killed_training_resumes_from_its_checkpoint(store_dir, tmp_path):
    args = [
        "train",
        "--store",
        str(store_dir),
        "--out",
        str(tmp_path / "run"),
        "--dict-size",
        "256",
        "--k",
        "8",
        "--steps",
        "400",
        "--batch-size",
        "128",
        "--checkpoint-every",
        "25",
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossdiff_core", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = tmp_path / "run" / "checkpoint"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists(), "no checkpoint was written before the kill"
    cli(*args)
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["resumed_from"] > 0 and summary["steps_done"] == 400
    uninterrupted = cli(*[a if a != str(tmp_path / "run") else str(tmp_path / "ref") for a in args])
    assert uninterrupted.returncode == 0
    resumed = CrossCoder.from_pretrained(str(tmp_path / "run"))
    reference = CrossCoder.from_pretrained(str(tmp_path / "ref"))
    for (name, p), (_, q) in zip(resumed.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
