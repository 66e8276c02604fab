"""Tests for `CrossCoder`: the structural block partition, inference math, and save/load."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.crosscoder.model import EncoderWorkspace
from crossdiff_core.errors import CrossCoderError

D_A, D_B, F = 12, 20, 40


def make(seed: int = 0, **overrides) -> CrossCoder:
    values = dict(d_a=D_A, d_b=D_B, dict_size=F, exclusive_a=6, exclusive_b=4, k=3, scale_a=0.5, scale_b=2.0)
    values.update(overrides)
    return CrossCoder(CrossCoderConfig(**values), seed=seed)


def trained_looking(model: CrossCoder) -> CrossCoder:
    """Give every parameter and buffer a distinctive value, as after training."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
        model.threshold.fill_(0.37)
    return model


MODEL = trained_looking(make())


def test_parameters_only_exist_for_allowed_weights():
    model = make()
    n_a, n_s, n_b = 6, 30, 4
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "W_enc_a": (n_a + n_s, D_A), "W_enc_b": (n_s + n_b, D_B), "b_enc": (F,),
        "W_dec_a": (n_a + n_s, D_A), "W_dec_b": (n_s + n_b, D_B), "b_dec_a": (D_A,), "b_dec_b": (D_B,),
    }  # fmt: skip
    assert {name for name, _ in model.named_buffers()} == {"threshold", "scale_a", "scale_b"}


def test_block_helpers_agree():
    model = make()
    names = model.block_names()
    assert len(names) == F
    assert names.count("A-exclusive") == 6 and names.count("shared") == 30 and names.count("B-exclusive") == 4
    assert all(model.block_of(j) == name for j, name in enumerate(names))
    assert (model.slice_a_exclusive, model.slice_shared, model.slice_b_exclusive) == (
        slice(0, 6),
        slice(6, 36),
        slice(36, 40),
    )
    with pytest.raises(CrossCoderError, match="latent 40 is out of range: this crosscoder has 40 latents"):
        model.block_of(F)


def test_standard_crosscoder_has_only_shared_latents():
    model = make(exclusive_a=0, exclusive_b=0)
    assert (model.n_a, model.n_shared, model.n_b) == (0, F, 0)
    assert model.W_dec_a.shape == (F, D_A) and model.W_enc_b.shape == (F, D_B)
    assert set(model.block_names()) == {"shared"}


@settings(max_examples=40, deadline=None)
@given(latent=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_a_exclusive_latent_never_touches_model_b(latent, seed):
    f_BF = torch.rand(3, F, generator=torch.Generator().manual_seed(seed)) * 4
    x_hat_a, x_hat_b = MODEL.decode(f_BF)
    zeroed_BF = f_BF.clone()
    zeroed_BF[:, latent] = 0
    x_hat_a_zeroed, x_hat_b_zeroed = MODEL.decode(zeroed_BF)
    assert torch.equal(x_hat_b, x_hat_b_zeroed)
    assert not torch.equal(x_hat_a, x_hat_a_zeroed)


@settings(max_examples=40, deadline=None)
@given(latent=st.integers(36, 39), seed=st.integers(0, 2**16))
def test_b_exclusive_latent_never_touches_model_a(latent, seed):
    f_BF = torch.rand(3, F, generator=torch.Generator().manual_seed(seed)) * 4
    x_hat_a, x_hat_b = MODEL.decode(f_BF)
    zeroed_BF = f_BF.clone()
    zeroed_BF[:, latent] = 0
    x_hat_a_zeroed, x_hat_b_zeroed = MODEL.decode(zeroed_BF)
    assert torch.equal(x_hat_a, x_hat_a_zeroed)
    assert not torch.equal(x_hat_b, x_hat_b_zeroed)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_exclusive_latents_only_read_their_own_model(seed):
    generator = torch.Generator().manual_seed(seed)
    x_a, x_b = torch.randn(4, D_A, generator=generator), torch.randn(4, D_B, generator=generator)
    pre = MODEL.pre_activations(x_a, x_b)
    pre_other_b = MODEL.pre_activations(x_a, torch.randn(4, D_B, generator=generator))
    pre_other_a = MODEL.pre_activations(torch.randn(4, D_A, generator=generator), x_b)
    assert torch.equal(pre[:, MODEL.slice_a_exclusive], pre_other_b[:, MODEL.slice_a_exclusive])
    assert torch.equal(pre[:, MODEL.slice_b_exclusive], pre_other_a[:, MODEL.slice_b_exclusive])
    assert not torch.equal(pre[:, MODEL.slice_shared], pre_other_b[:, MODEL.slice_shared])


def test_decoder_norms_are_zero_where_a_model_has_no_weights():
    norm_a, norm_b = MODEL.decoder_norms()
    assert torch.all(norm_b[:6] == 0) and torch.all(norm_a[36:] == 0)
    assert torch.allclose(norm_a[:36], MODEL.W_dec_a.norm(dim=1))
    assert torch.allclose(norm_b[6:], MODEL.W_dec_b.norm(dim=1))


def test_initialization_is_seeded_and_tied():
    a, b, c = make(seed=3), make(seed=3), make(seed=4)
    assert torch.equal(a.W_dec_a, b.W_dec_a) and not torch.equal(a.W_dec_a, c.W_dec_a)
    assert torch.equal(a.W_enc_a, a.W_dec_a) and torch.equal(a.W_enc_b, a.W_dec_b)
    assert torch.allclose(a.W_dec_b.norm(dim=1), torch.full((34,), 0.1))
    assert torch.all(a.b_enc == 0) and torch.all(a.b_dec_a == 0)


def test_inputs_and_outputs_are_in_raw_model_space():
    x_a, x_b = torch.randn(5, D_A), torch.randn(5, D_B)
    f = MODEL.encode(x_a, x_b)
    assert torch.equal(f, MODEL.activate(MODEL.pre_activations(x_a * 0.5, x_b * 2.0)))
    x_hat_a, x_hat_b = MODEL.decode(f)
    norm_a, norm_b = MODEL.decode_normalized(f)
    assert torch.allclose(x_hat_a, norm_a / 0.5) and torch.allclose(x_hat_b, norm_b / 2.0)
    assert [t.shape for t in MODEL(x_a, x_b)] == [(5, D_A), (5, D_B), (5, F)]


def test_batchtopk_inference_keeps_scores_above_threshold_and_l1_is_relu():
    x_a, x_b = torch.randn(8, D_A), torch.randn(8, D_B)
    pre = MODEL.pre_activations(*MODEL.normalize(x_a, x_b))
    norm_a, norm_b = MODEL.decoder_norms()
    expected = torch.where(pre.relu() * (norm_a + norm_b) > 0.37, pre.relu(), 0.0)
    assert torch.equal(MODEL.encode(x_a, x_b), expected)
    l1_model = trained_looking(make(sparsity="l1"))
    assert torch.equal(l1_model.encode(x_a, x_b), l1_model.pre_activations(*l1_model.normalize(x_a, x_b)).relu())


def test_save_and_load_round_trip_exactly(tmp_path):
    MODEL.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = CrossCoder.from_pretrained(tmp_path)
    assert loaded.config == MODEL.config
    for name, tensor in MODEL.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x_a, x_b = torch.randn(6, D_A), torch.randn(6, D_B)
    for ours, theirs in zip(MODEL(x_a, x_b), loaded(x_a, x_b)):
        assert torch.equal(ours, theirs)


def test_truncated_weights_raise_crosscoder_error(tmp_path):
    MODEL.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CrossCoderError, match=r"model\.safetensors is corrupt or truncated.*re-download"):
        CrossCoder.from_pretrained(tmp_path)


def test_garbage_weights_raise_crosscoder_error(tmp_path):
    MODEL.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(CrossCoderError, match=r"model\.safetensors is corrupt or truncated"):
        CrossCoder.from_pretrained(tmp_path)


def test_corrupt_config_raises_crosscoder_error(tmp_path):
    MODEL.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(config_file.read_text()[:40])
    with pytest.raises(CrossCoderError, match=r"config\.json of .* is not valid JSON.*re-download"):
        CrossCoder.from_pretrained(tmp_path)


def test_weights_from_another_config_are_rejected(tmp_path):
    MODEL.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["exclusive_a"] = 2
    config_file.write_text(json.dumps(config))
    with pytest.raises(CrossCoderError, match=r"does not match its config\.json.*shape mismatches"):
        CrossCoder.from_pretrained(tmp_path)


def test_folder_without_config_is_rejected(tmp_path):
    MODEL.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CrossCoderError, match="no readable config.json"):
        CrossCoder.from_pretrained(tmp_path)


@pytest.mark.parametrize("exclusive", [(0.1, 0.2), (0, 0)])
def test_encoder_products_are_the_pre_activations_without_the_bias(exclusive):
    config = CrossCoderConfig(d_a=12, d_b=20, dict_size=64, exclusive_a=exclusive[0], exclusive_b=exclusive[1])
    cc = CrossCoder(config, seed=3)
    with torch.no_grad():
        cc.b_enc.normal_()
    x_a, x_b = torch.randn(5, 12), torch.randn(5, 20)
    products = cc.encoder_products(x_a, x_b)
    assert not products.requires_grad and products.isfinite().all()
    torch.testing.assert_close(products + cc.b_enc.detach(), cc.pre_activations(x_a, x_b).detach())


def test_a_workspace_reuses_its_buffers_with_the_current_weights():
    config = CrossCoderConfig(d_a=12, d_b=20, dict_size=64, exclusive_a=0.1, exclusive_b=0.2)
    cc = CrossCoder(config, seed=3)
    workspace = EncoderWorkspace()
    x_a, x_b = torch.randn(5, 12), torch.randn(5, 20)
    first = cc.encoder_products(x_a, x_b, workspace).data_ptr()
    with torch.no_grad():  # as an optimizer step does: the next call reads the new weights
        cc.W_enc_a.mul_(2.0)
        cc.W_enc_b.add_(1.0)
    products = cc.encoder_products(x_a, x_b, workspace)
    assert products.data_ptr() == first
    torch.testing.assert_close(products, cc.pre_activations(x_a, x_b).detach() - cc.b_enc.detach())
    fewer = cc.encoder_products(x_a[:3], x_b[:3], workspace)  # another batch size gets its own buffer
    torch.testing.assert_close(fewer, products[:3])
