"""Training on synthetic paired activations from a known sparse dictionary (d_a=24, d_b=32)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from crossdiff_core.activations.batches import TensorBatchSource
from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.crosscoder.sparse_ops import DENSE_REFERENCE
from crossdiff_core.errors import CheckpointError, CrossCoderError
from crossdiff_core.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_META_FILE
from crossdiff_core.training.config import TrainConfig, TrainProgress, auto_dead_after_tokens
from crossdiff_core.training.loop import learning_rate, train
from crossdiff_core.training.losses import training_loss
from crossdiff_core.training.normalization import fit_to_source, mean_sample

pytestmark = pytest.mark.usefixtures("single_thread")

D_A, D_B = 24, 32
PAIR_INFO = {
    "model_a": "toy-a",
    "model_b": "toy-b",
    "layer_a": 3,
    "layer_b": 5,
    "tokenizer_a": "ta",
    "tokenizer_b": "tb",
}
METRIC_KEYS = {
    "step", "loss", "mse", "fvu_a", "fvu_b", "l0", "dead_a_exclusive", "dead_shared", "dead_b_exclusive", "never_fired",
    "lr",
}  # fmt: skip


def synthetic_pairs(n: int = 4096, n_features: int = 40, seed: int = 0):
    """Return paired activations from a sparse dictionary: features 0-4 exist only in B, 5-9 only in A."""
    generator = torch.Generator().manual_seed(seed)
    dirs_a = torch.randn(n_features, D_A, generator=generator)
    dirs_b = torch.randn(n_features, D_B, generator=generator)
    dirs_a[:5] = 0
    dirs_b[5:10] = 0
    on = torch.rand(n, n_features, generator=generator) < 0.08
    coefficients = on * torch.rand(n, n_features, generator=generator) * 3
    noise_a = 0.01 * torch.randn(n, D_A, generator=generator)
    noise_b = 0.01 * torch.randn(n, D_B, generator=generator)
    return 5.0 * (coefficients @ dirs_a + noise_a), coefficients @ dirs_b + noise_b


@pytest.fixture(scope="module")
def source():
    x_a, x_b = synthetic_pairs()
    return TensorBatchSource(x_a, x_b, PAIR_INFO)


def crosscoder_config(**overrides) -> CrossCoderConfig:
    values = {"d_a": D_A, "d_b": D_B, "dict_size": 64, "exclusive_a": 8, "exclusive_b": 8, "k": 4}
    values.update(overrides)
    return CrossCoderConfig(**values)


def train_config(**overrides) -> TrainConfig:
    values = {
        "steps": 60,
        "batch_size": 128,
        "lr": 3e-3,
        "warmup_steps": 5,
        "log_every": 10,
        "checkpoint_every": 20,
        "dead_after_tokens": 1024,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_batchtopk_training_reduces_loss_and_fvu(tmp_path, source):
    seen: list[TrainProgress] = []
    result = train(crosscoder_config(), train_config(steps=250, log_every=25), source, tmp_path, progress=seen.append)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.3 * first["loss"]
    assert last["fvu_a"] < 0.1 and last["fvu_b"] < 0.1
    assert last["fvu_a"] < 0.5 * first["fvu_a"] and last["fvu_b"] < 0.5 * first["fvu_b"]
    assert last["l0"] == pytest.approx(4, abs=0.5)
    assert last["threshold"] > 0
    assert set(last) == METRIC_KEYS | {"auxk_loss", "threshold"}
    assert [p.step for p in seen] == list(range(25, 251, 25))
    assert seen[-1].total_steps == 250 and seen[-1].tokens_seen == 250 * 128 and seen[-1].elapsed_s > 0
    assert result.steps_done == 250 and result.resumed_from is None and result.metrics == last


def test_training_writes_a_loadable_crosscoder_and_logs(tmp_path, source):
    result = train(crosscoder_config(), train_config(), source, tmp_path)
    loaded = CrossCoder.from_pretrained(tmp_path)
    x_a, x_b = source.x_a_ND[:16], source.x_b_ND[:16]
    for ours, theirs in zip(result.crosscoder(x_a, x_b), loaded(x_a, x_b)):
        assert torch.equal(ours, theirs)
    mean_sq_a, mean_sq_b = source.mean_sq_norms()
    mean_a, mean_b = mean_sample(source, train_config())
    assert loaded.config.scale_a == pytest.approx(math.sqrt(D_A / (mean_sq_a - float(mean_a.pow(2).sum()))))
    assert loaded.config.scale_b == pytest.approx(math.sqrt(D_B / (mean_sq_b - float(mean_b.pow(2).sum()))))
    assert (loaded.config.model_a, loaded.config.layer_b, loaded.config.tokenizer_a) == ("toy-a", 5, "ta")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40, 50, 60]
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["finished"] and summary["steps_done"] == 60 and summary["tokens_seen"] == 60 * 128
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == ["checkpoint"]


def test_normalization_gives_mean_squared_norm_d(source):
    config = fit_to_source(crosscoder_config(), source)
    assert float((source.x_a_ND * config.scale_a).pow(2).sum(1).mean()) == pytest.approx(D_A, rel=1e-4)
    assert float((source.x_b_ND * config.scale_b).pow(2).sum(1).mean()) == pytest.approx(D_B, rel=1e-4)


def test_normalization_with_means_gives_variance_d_whatever_the_offset(source):
    offset_a, offset_b = 30 * torch.ones(D_A), -50 * torch.ones(D_B)  # a constant component, as Gemma-3 has
    shifted = TensorBatchSource(source.x_a_ND + offset_a, source.x_b_ND + offset_b)
    exact = (shifted.x_a_ND.double().mean(0), shifted.x_b_ND.double().mean(0))
    config = fit_to_source(crosscoder_config(), shifted, exact)
    centered_a, centered_b = shifted.x_a_ND - exact[0].float(), shifted.x_b_ND - exact[1].float()
    assert float((centered_a * config.scale_a).pow(2).sum(1).mean()) == pytest.approx(D_A, rel=1e-3)
    assert float((centered_b * config.scale_b).pow(2).sum(1).mean()) == pytest.approx(D_B, rel=1e-3)
    with pytest.raises(CrossCoderError, match="hardly vary"):
        constant = TensorBatchSource(offset_a.expand(64, D_A).clone(), offset_b.expand(64, D_B).clone())
        fit_to_source(crosscoder_config(), constant, (offset_a.double(), offset_b.double()))


def test_stopped_and_resumed_run_matches_uninterrupted_run(tmp_path, source):
    config, tc = crosscoder_config(), train_config(steps=70, checkpoint_every=20, dead_after_tokens=512)
    full = train(config, tc, source, tmp_path / "full")
    assert full.history[-1]["dead_shared"] + full.history[-1]["dead_a_exclusive"] > 0  # auxk was active

    calls = []
    stopped = train(config, tc, source, tmp_path / "split", should_stop=lambda: calls.append(1) or len(calls) == 33)
    assert stopped.steps_done == 33 and not (tmp_path / "split" / "model.safetensors").exists()
    assert not json.loads((tmp_path / "split" / "training.json").read_text())["finished"]
    resumed = train(config, tc, source, tmp_path / "split")
    assert resumed.resumed_from == 33 and resumed.steps_done == 70

    for name, tensor in full.crosscoder.state_dict().items():
        torch.testing.assert_close(resumed.crosscoder.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert [m["step"] for m in resumed.history] == [m["step"] for m in full.history]
    assert resumed.history[-1]["loss"] == pytest.approx(full.history[-1]["loss"], rel=1e-4)


def test_finished_run_resumes_as_a_no_op(tmp_path, source):
    first = train(crosscoder_config(), train_config(steps=20), source, tmp_path)
    again = train(crosscoder_config(), train_config(steps=20), source, tmp_path)
    assert again.resumed_from == 20 and again.steps_done == 20
    assert torch.equal(first.crosscoder.W_dec_a, again.crosscoder.W_dec_a)


def stop_after(n: int):
    calls = []
    return lambda: calls.append(1) or len(calls) >= n


def test_truncated_checkpoint_raises_checkpoint_error(tmp_path, source):
    train(crosscoder_config(), train_config(), source, tmp_path, should_stop=stop_after(5))
    state = tmp_path / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(
        CheckpointError, match=r"state\.safetensors is missing, corrupt or truncated.*start over"
    ) as err:
        train(crosscoder_config(), train_config(), source, tmp_path)
    assert "resume=False" not in str(err.value), "the advice names no Python argument: the app user has none"
    result = train(crosscoder_config(), train_config(), source, tmp_path, resume=False)
    assert result.resumed_from is None and result.steps_done == 60


def test_corrupt_checkpoint_json_raises_checkpoint_error(tmp_path, source):
    train(crosscoder_config(), train_config(), source, tmp_path, should_stop=stop_after(5))
    (tmp_path / "checkpoint" / "checkpoint.json").write_text('{"step": 5, "hist')
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is missing or corrupt"):
        train(crosscoder_config(), train_config(), source, tmp_path)


def test_checkpoint_of_another_run_is_refused(tmp_path, source):
    train(crosscoder_config(), train_config(), source, tmp_path, should_stop=stop_after(5))
    with pytest.raises(
        CheckpointError, match=r"different training run \(k: checkpoint has 4, now 6\).*new folder"
    ) as err:
        train(crosscoder_config(k=6), train_config(), source, tmp_path)
    assert "--out on the command line" in str(err.value) and "'Job folder' in the app" in str(err.value)
    assert "out_dir" not in str(err.value) and "resume=False" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint has 0\.003, now 0\.001"):
        train(crosscoder_config(), train_config(lr=1e-3), source, tmp_path)
    resumed = train(crosscoder_config(), train_config(log_every=7), source, tmp_path)  # logging may change
    assert resumed.resumed_from == 5


def test_previous_checkpoint_is_used_if_a_swap_was_interrupted(tmp_path, source):
    train(crosscoder_config(), train_config(), source, tmp_path, should_stop=stop_after(5))
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint-previous")
    (tmp_path / ".checkpoint-partial-x").mkdir()
    result = train(crosscoder_config(), train_config(), source, tmp_path)
    assert result.resumed_from == 5
    assert not (tmp_path / ".checkpoint-partial-x").exists()


def test_l1_crosscoder_trains(tmp_path, source):
    result = train(crosscoder_config(sparsity="l1", l1_coeff=0.3), train_config(steps=150), source, tmp_path)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.5 * first["loss"] and last["fvu_a"] < 0.2 and last["fvu_b"] < 0.2
    assert set(last) == METRIC_KEYS | {"l1_loss"}
    assert 0 < last["l0"] < 64


def test_sparse_step_matches_dense_reference(source):
    model = CrossCoder(fit_to_source(crosscoder_config(), source), seed=1).double()
    with torch.no_grad():
        model.b_enc.normal_(0, 0.1)
    x_a, x_b = model.normalize(source.x_a_ND[:96].double(), source.x_b_ND[:96].double())
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[0, 3, 9, 20, 40, 57, 60]] = True  # dead latents in every block, so auxk runs
    tc = train_config()
    results = []
    for ops in (None, DENSE_REFERENCE):
        model.zero_grad()
        out = training_loss(model, x_a, x_b, dead, tc) if ops is None else training_loss(model, x_a, x_b, dead, tc, ops)
        out.loss.backward()
        results.append((out, {name: p.grad.clone() for name, p in model.named_parameters()}))
    (fast, fast_grads), (ref, ref_grads) = results
    assert float(fast.stats["auxk_loss"]) > 0
    torch.testing.assert_close(fast.loss, ref.loss, rtol=1e-10, atol=1e-10)
    for name in fast_grads:
        torch.testing.assert_close(fast_grads[name], ref_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_learning_rate_warms_up_and_decays_to_zero():
    tc = TrainConfig(steps=100, warmup_steps=10, decay_start=0.8)
    rates = [learning_rate(step, tc, 1.0) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0) and rates[50] == 1.0
    assert rates[80] == pytest.approx(1.0) and rates[99] == pytest.approx(0.05)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))


def test_width_mismatch_and_bad_train_config_are_actionable(tmp_path, source):
    with pytest.raises(CrossCoderError, match="d_a=20, d_b=32 but the activations have 24 and 32"):
        train(crosscoder_config(d_a=20), train_config(), source, tmp_path)
    with pytest.raises(CrossCoderError, match="batch_size=0 must be a positive integer"):
        train(crosscoder_config(), train_config(batch_size=0), source, tmp_path)
    with pytest.raises(CrossCoderError, match="dtype='fp8' is not supported"):
        train(crosscoder_config(), train_config(dtype="fp8"), source, tmp_path)


# ---------------------------------------------------------------------------- dead latents


@pytest.mark.parametrize(("steps", "batch", "expected"), [
    (300, 1024, 15_360),  # the CLI default: 5% of 307,200 tokens
    (300, 512, 7_680),  # the app's training job
    (10, 128, 512),  # a very short run: at least 4 batches
    (1_000_000, 4096, 10_000_000),  # a long run: at most 10M tokens
])  # fmt: skip
def test_automatic_dead_window_scales_with_the_run(steps, batch, expected):
    assert auto_dead_after_tokens(steps, batch) == expected
    assert TrainConfig(steps=steps, batch_size=batch).dead_after() == expected
    assert TrainConfig(steps=steps, batch_size=batch, dead_after_tokens=777).dead_after() == 777


def test_dead_after_tokens_must_be_positive_or_automatic():
    TrainConfig(dead_after_tokens=None).validate()
    TrainConfig(dead_after_tokens=5).validate()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(CrossCoderError, match="dead_after_tokens=.* must be a positive integer .or None"):
            TrainConfig(dead_after_tokens=bad).validate()
    assert TrainConfig.from_dict(TrainConfig(dead_after_tokens=4096).to_dict()).dead_after_tokens == 4096
    assert TrainConfig.from_dict(json.loads(json.dumps(TrainConfig().to_dict()))).dead_after_tokens is None


def test_default_config_marks_latents_dead_and_auxk_acts(tmp_path, source):
    """With the default (automatic) window a short run sees dead latents: auxk > 0 and the logged fractions say so."""
    tc = TrainConfig(steps=80, batch_size=128, lr=3e-3, warmup_steps=5, log_every=5, checkpoint_every=80, device="cpu")
    assert tc.dead_after_tokens is None and tc.dead_after() == 4 * 128  # 5% of 10,240 tokens is under 4 batches
    result = train(crosscoder_config(dict_size=256), tc, source, tmp_path)
    assert any(m["auxk_loss"] > 0 for m in result.history)
    assert any(m["dead_shared"] > 0 for m in result.history)
    last = result.history[-1]
    # A latent that never fired has been silent for longer than the window: never_fired ≤ the dead share.
    n_shared, n_excl = 256 - 16, 8
    dead_share = (last["dead_shared"] * n_shared + (last["dead_a_exclusive"] + last["dead_b_exclusive"]) * n_excl) / 256
    assert 0 <= last["never_fired"] <= dead_share + 1e-9
    assert json.loads((tmp_path / "training.json").read_text())["dead_after_tokens_used"] == 512


def test_checkpoint_of_the_old_fixed_window_resumes_with_it(tmp_path, source):
    """A checkpoint written when 10M tokens was the default resumes under the automatic default, keeping 10M."""
    tc = train_config(dead_after_tokens=None)
    train(crosscoder_config(), tc, source, tmp_path, should_stop=stop_after(5))
    meta_file = tmp_path / CHECKPOINT_DIR / CHECKPOINT_META_FILE
    meta = json.loads(meta_file.read_text())
    meta["train_config"]["dead_after_tokens"] = 10_000_000
    meta_file.write_text(json.dumps(meta))
    resumed = train(crosscoder_config(), tc, source, tmp_path)
    assert resumed.resumed_from == 5 and resumed.steps_done == 60
    assert tc.dead_after_tokens is None  # the caller's config is left as it was
    assert all(m["dead_shared"] == 0 for m in resumed.history[1:])  # nothing is dead within 10M tokens
    assert json.loads((tmp_path / "training.json").read_text())["dead_after_tokens_used"] == 10_000_000
    with pytest.raises(CheckpointError, match="dead_after_tokens: checkpoint has 10000000, now 2048"):
        train(crosscoder_config(), train_config(dead_after_tokens=2048), source, tmp_path)  # an explicit other value


def test_cli_dead_after_tokens_reaches_the_train_config(monkeypatch, tmp_path):
    from crossdiff_core.activations.store import PairedActivationStore
    from crossdiff_core.cli.args import build_parser
    from crossdiff_core.cli.pipeline import cmd_train
    from crossdiff_core.training import loop as train_module

    seen = []

    class Stop(Exception):
        pass

    def fake_train(config, train_config, *args, **kwargs):
        seen.append(train_config)
        raise Stop

    monkeypatch.setattr(train_module, "train", fake_train)
    monkeypatch.setattr(PairedActivationStore, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(PairedActivationStore, "d_a", D_A, raising=False)
    monkeypatch.setattr(PairedActivationStore, "d_b", D_B, raising=False)
    monkeypatch.setattr("crossdiff_core.activations.store.is_store", lambda path: True)
    monkeypatch.setattr("crossdiff_core.activations.store.read_meta", lambda path: {"format": "two models"})
    for extra, expected in (([], None), (["--dead-after-tokens", "4096"], 4096)):
        args = build_parser().parse_args(["train", "--store", str(tmp_path), "--out", str(tmp_path / "o"), *extra])
        assert args.dead_after_tokens == expected
        with pytest.raises(Stop):
            cmd_train(args)
        assert seen[-1].dead_after_tokens == expected
    assert seen[0].dead_after() == auto_dead_after_tokens(args.steps, args.batch_size)
