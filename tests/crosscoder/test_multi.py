"""Tests for `MultiCrossCoder`: validation, the structural partition over N models, agreement with the two-model
`CrossCoder` at N = 2, and save/load."""

from __future__ import annotations

import json

import pytest
import torch

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.crosscoder.multi import MultiCrossCoder, MultiCrossCoderConfig
from crossdiff_core.errors import CrossCoderError
from tests.crosscoder.test_model import trained_looking

D = [12, 20, 16]
F = 48
EXCLUSIVE = [6, 4, 5]
N_SHARED = F - sum(EXCLUSIVE)


def make(seed: int = 0, **overrides) -> MultiCrossCoder:
    values = dict(d=D, dict_size=F, exclusive=EXCLUSIVE, k=3, scales=[0.5, 2.0, 1.5])
    values.update(overrides)
    return MultiCrossCoder(MultiCrossCoderConfig(**values), seed=seed)


def inputs(batch: int = 7, seed: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, d, generator=generator) for d in D]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d": [12]}, "at least two"),
        ({"d": [12, 0, 4]}, r"d\[1\]=0 must be a positive integer"),
        ({"exclusive": [6, 4]}, "lists 2 block sizes for 3 models: give one per model"),
        ({"exclusive": [6, -1, 5]}, r"exclusive\[1\]=-1 must be a fraction"),
        ({"exclusive": 0.4}, "lower exclusive or raise dict_size"),
        ({"k": 0}, "k=0 must be between 1 and dict_size=48"),
        ({"scales": [1.0, 2.0]}, "one entry per model"),
        ({"scales": [1.0, float("nan"), 1.0]}, r"scales\[1\]=nan must be a positive finite number"),
        ({"models": ["a", "b"]}, "models=.* one entry per model"),
    ],
)
def test_inconsistent_configs_say_what_to_change(overrides, message):
    values = dict(d=D, dict_size=F, exclusive=EXCLUSIVE, k=3)
    values.update(overrides)
    with pytest.raises(CrossCoderError, match=message):
        MultiCrossCoderConfig(**values)


def test_one_block_size_for_all_models_and_the_standard_crosscoder():
    config = MultiCrossCoderConfig(d=D, dict_size=100, exclusive=0.05)
    assert config.n_exclusive == [5, 5, 5] and config.n_shared == 85
    standard = MultiCrossCoder(MultiCrossCoderConfig(d=D, dict_size=F, exclusive=0))
    assert standard.block_names() == ["shared"] * F


def test_parameters_only_exist_for_allowed_weights_and_blocks_are_ordered():
    model = make()
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    expected = {"b_enc": (F,)}
    for m, (d, n) in enumerate(zip(D, EXCLUSIVE, strict=True)):
        expected |= {f"W_enc.{m}": (N_SHARED + n, d), f"W_dec.{m}": (N_SHARED + n, d), f"b_dec.{m}": (d,)}
    assert shapes == expected
    names = model.block_names()
    assert names[:N_SHARED] == ["shared"] * N_SHARED
    assert [model.slice_exclusive(m) for m in range(3)] == [slice(33, 39), slice(39, 43), slice(43, 48)]
    assert names[39:43] == ["model-1-exclusive"] * 4
    assert model.latents_of(2).tolist() == [*range(N_SHARED), *range(43, 48)]


def test_decoder_norms_are_zero_where_a_model_has_no_weights():
    norms_NF = make().decoder_norms()
    for m in range(3):
        for other in range(3):
            block = make().slice_exclusive(other)
            assert bool((norms_NF[m, block] > 0).all()) == (m == other)
    assert bool((norms_NF[:, :N_SHARED] > 0).all())


@pytest.mark.parametrize("owner", [0, 1, 2])
def test_an_exclusive_latent_neither_reads_nor_writes_another_model_nor_gets_its_gradient(owner):
    model = trained_looking(make())
    xs = [x.requires_grad_() for x in inputs()]
    block = model.slice_exclusive(owner)
    pre_BF = model.pre_activations(xs)
    for m in range(3):
        (grad,) = torch.autograd.grad(pre_BF[:, block].sum(), xs[m], retain_graph=True)
        assert bool((grad == 0).all()) == (m != owner)
    for m in range(3):
        model.zero_grad()
        model.decode_normalized(pre_BF.relu())[m].pow(2).sum().backward(retain_graph=True)
        bias_grad = model.b_enc.grad[block]
        assert bool((bias_grad == 0).all()) == (m != owner), (m, owner)
        assert model.W_enc[owner].grad is not None
        exclusive_rows = model.W_enc[owner].grad[N_SHARED:]
        assert bool((exclusive_rows == 0).all()) == (m != owner)


def test_two_models_give_the_two_model_crosscoders_encode_and_decode():
    n_a, n_b, d_a, d_b = 6, 4, 12, 20
    two = trained_looking(CrossCoder(CrossCoderConfig(d_a=d_a, d_b=d_b, dict_size=F, exclusive_a=n_a,
                                                      exclusive_b=n_b, k=3, scale_a=0.5, scale_b=2.0)))  # fmt: skip
    multi = MultiCrossCoder(MultiCrossCoderConfig(d=[d_a, d_b], dict_size=F, exclusive=[n_a, n_b], k=3,
                                                  scales=[0.5, 2.0]))  # fmt: skip
    n_s = F - n_a - n_b
    # Multi order [shared | A | B] ← two-model order [A | shared | B].
    order = torch.cat([torch.arange(n_a, n_a + n_s), torch.arange(n_a), torch.arange(n_a + n_s, F)])
    with torch.no_grad():
        multi.W_enc[0].copy_(torch.cat([two.W_enc_a[n_a:], two.W_enc_a[:n_a]]))
        multi.W_dec[0].copy_(torch.cat([two.W_dec_a[n_a:], two.W_dec_a[:n_a]]))
        multi.W_enc[1].copy_(two.W_enc_b)
        multi.W_dec[1].copy_(two.W_dec_b)
        multi.b_enc.copy_(two.b_enc[order])
        multi.b_dec[0].copy_(two.b_dec_a)
        multi.b_dec[1].copy_(two.b_dec_b)
        multi.threshold.copy_(two.threshold)
    x_a, x_b = torch.randn(9, d_a), torch.randn(9, d_b)
    f_two = two.encode(x_a, x_b)
    f_multi = multi.encode([x_a, x_b])
    assert (f_two > 0).any()
    close = {"rtol": 1e-5, "atol": 1e-4}  # the two sum the same products in another order (fp32 rounding)
    torch.testing.assert_close(f_multi, f_two[:, order], **close)
    for got, want in zip(multi.decode(f_multi), two.decode(f_two), strict=True):
        torch.testing.assert_close(got, want, **close)
    torch.testing.assert_close(multi.decoder_norms()[:, order.argsort()], torch.stack(two.decoder_norms()))


def test_inputs_and_outputs_are_in_raw_model_space_and_the_threshold_applies():
    model = trained_looking(make())
    xs = inputs()
    x_hats, f_BF = model(xs)
    pre_BF = model.pre_activations([x * s for x, s in zip(xs, [0.5, 2.0, 1.5], strict=True)])
    scores_BF = pre_BF.relu() * model.decoder_norms().sum(0)
    torch.testing.assert_close(f_BF, torch.where(scores_BF > 0.37, pre_BF.relu(), 0.0))
    for x_hat, normalized, scale in zip(x_hats, model.decode_normalized(f_BF), [0.5, 2.0, 1.5], strict=True):
        torch.testing.assert_close(x_hat, normalized / scale)
    with pytest.raises(CrossCoderError, match="got activations of 2 models; this crosscoder reads 3"):
        model.encode(xs[:2])


def test_move_to_exclusive_keeps_the_models_weights_and_redraws_the_shared_latent():
    model = trained_looking(make())
    before_enc, before_dec = model.W_enc[1][3].clone(), model.W_dec[1][3].clone()
    bias = float(model.b_enc[3].detach())
    target = torch.tensor([40])
    model.move_to_exclusive(1, torch.tensor([3]), target, torch.Generator().manual_seed(0))
    row = int(model.exclusive_row(1, target))
    torch.testing.assert_close(model.W_enc[1][row], before_enc)
    torch.testing.assert_close(model.W_dec[1][row], before_dec)
    assert float(model.b_enc[40].detach()) == bias and float(model.b_enc[3].detach()) == 0.0
    torch.testing.assert_close(model.W_dec[0][3].norm(), torch.tensor(0.1))


def test_save_and_load_round_trip_exactly(tmp_path):
    model = trained_looking(make(models=["m0", "m1", "m2"], layers=[3, 4, 5]))
    model.save_pretrained(tmp_path)
    loaded = MultiCrossCoder.from_pretrained(tmp_path)
    assert loaded.config == model.config
    for (name, want), (_, got) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(want, got), name
    assert json.loads((tmp_path / "config.json").read_text())["crosscoder_kind"] == "multi"
    assert not loaded.training


def test_the_two_kinds_of_crosscoder_refuse_each_others_folders(tmp_path):
    make().save_pretrained(tmp_path / "multi")
    with pytest.raises(CrossCoderError, match="N-model crosscoder's \\(3 models\\): load it with MultiCrossCoder"):
        CrossCoder.from_pretrained(tmp_path / "multi")
    CrossCoder(CrossCoderConfig(d_a=12, d_b=20, dict_size=F)).save_pretrained(tmp_path / "two")
    with pytest.raises(CrossCoderError, match="load a two-model crosscoder with CrossCoder.from_pretrained"):
        MultiCrossCoder.from_pretrained(tmp_path / "two")
    assert CrossCoder.from_pretrained(tmp_path / "two").config.d_a == 12


def test_corrupt_or_mismatched_files_are_refused(tmp_path):
    make().save_pretrained(tmp_path)
    weights = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(CrossCoderError, match="corrupt or truncated"):
        MultiCrossCoder.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(weights)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "scales": [1.0, 1.0, 1.0]}))
    with pytest.raises(CrossCoderError, match="does not match the crosscoder its model.safetensors was saved with"):
        MultiCrossCoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "exclusive": [1, 1, 1]}))
    with pytest.raises(CrossCoderError, match="the files come from different crosscoders"):
        MultiCrossCoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CrossCoderError, match="not valid JSON"):
        MultiCrossCoder.from_pretrained(tmp_path)
    with pytest.raises(CrossCoderError, match="no config.json in"):
        MultiCrossCoder.from_pretrained(tmp_path / "missing")


def test_info_lists_each_models_name_and_exclusive_block(tmp_path, capsys):
    from crossdiff_core.cli import main

    make(models=["org/m0", "org/m1", "org/m2"], layers=[3, 4, 5]).save_pretrained(tmp_path)
    assert main(["info", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kind"] == "multi-crosscoder" and summary["n_models"] == 3
    assert summary["models"] == ["org/m0", "org/m1", "org/m2"] and summary["layers"] == [3, 4, 5]
    assert summary["n_exclusive"] == EXCLUSIVE and summary["n_shared"] == N_SHARED and summary["d"] == D
