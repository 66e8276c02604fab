"""Model loading and the truncated forward pass, on tiny random models and the real demo pair."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

from crossdiff_core.compute_dtype import pick_compute_dtype
from crossdiff_core.errors import ModelLoadError
from crossdiff_core.models import conversion_seconds, find_demo, load_model, tokenizer_fingerprint


def _tiny_folder(tmp_path, tokenizer, kind: str):
    vocab = len(tokenizer)
    if kind == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
    else:
        config = Gemma3TextConfig(
            vocab_size=vocab,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
        )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, demo_tokenizers):
    return _tiny_folder(tmp_path_factory.mktemp("m"), demo_tokenizers[0], "llama")


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory, demo_tokenizers):
    return _tiny_folder(tmp_path_factory.mktemp("m"), demo_tokenizers[1], "gemma")


@pytest.mark.parametrize("which", ["tiny_llama", "tiny_gemma"])
def test_activations_equal_hidden_states_and_stop_at_layer(request, which):
    folder = request.getfixturevalue(which)
    loaded = load_model(str(folder), layer=1, quant="none", dtype="fp32", device="cpu")
    assert loaded.layer == 1 and loaded.n_layers == 4 and loaded.d_model == 64
    ids = loaded.tokenizer(
        ["A short test sentence.", "Another one, longer than the first!"], return_tensors="pt", padding=True
    )
    with torch.no_grad():
        reference = loaded.model(**ids, output_hidden_states=True).hidden_states[2]
    ran = []
    later = loaded.decoder_layers()[2].register_forward_hook(lambda *_: ran.append("layer2"))
    head = loaded.model.get_output_embeddings().register_forward_hook(lambda *_: ran.append("head"))
    try:
        acts = loaded.activations(ids.input_ids, ids.attention_mask)
    finally:
        later.remove()
        head.remove()
    assert ran == [], "blocks after the read layer or the LM head ran"
    torch.testing.assert_close(acts, reference.float())


def test_default_layer_is_middle_and_negative_layers_count_from_end(tiny_llama):
    assert load_model(str(tiny_llama), quant="none", device="cpu").layer == 2
    assert load_model(str(tiny_llama), layer=-1, quant="none", device="cpu").layer == 3


def test_out_of_range_layer_says_what_to_choose(tiny_llama):
    with pytest.raises(ModelLoadError, match=r"layer 9 is out of range .* 4 layers: choose 0\.\.3"):
        load_model(str(tiny_llama), layer=9, quant="none", device="cpu")


def test_nf4_loads_on_cpu_and_stays_close_to_full_precision(tiny_llama):
    full = load_model(str(tiny_llama), quant="none", dtype="fp32", device="cpu")
    nf4 = load_model(str(tiny_llama), quant="nf4", dtype="fp32", device="cpu")
    assert nf4.quant == "nf4"
    assert any("4bit" in type(m).__name__ for m in nf4.model.modules())
    ids = full.tokenizer(["Quantized models should agree roughly."], return_tensors="pt").input_ids
    a, b = full.activations(ids), nf4.activations(ids)
    assert (a - b).norm() / a.norm() < 0.5


def test_preloaded_pair_is_accepted(tiny_llama, demo_tokenizers):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    loaded = load_model((model, demo_tokenizers[0]), layer=0)
    assert loaded.model is model and loaded.layer == 0
    assert loaded.tokenizer_fingerprint == tokenizer_fingerprint(demo_tokenizers[0])
    assert loaded.compute_dtype == "fp32" and "keeps the dtype it has" in loaded.compute_dtype_reason


def test_compute_dtype_is_automatic_unless_given(tiny_llama):
    picked = pick_compute_dtype("cpu")
    auto = load_model(str(tiny_llama), quant="none", device="cpu")
    assert (auto.compute_dtype, auto.compute_dtype_reason) == (picked.dtype, picked.reason)
    assert auto.model.get_input_embeddings().weight.dtype == picked.torch_dtype
    for dtype, torch_dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        given = load_model(str(tiny_llama), quant="none", dtype=dtype, device="cpu")
        assert given.compute_dtype == dtype and given.model.get_input_embeddings().weight.dtype == torch_dtype
        assert "--dtype" in given.compute_dtype_reason
    with pytest.raises(ModelLoadError, match="unknown compute dtype 'fp8'"):
        load_model(str(tiny_llama), dtype="fp8")


def test_unknown_model_id_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model", quant="none")


def test_missing_paths_and_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelLoadError, match="not an existing folder"):
        load_model(str(tmp_path / "missing" / "deeper" / "folder"))
    with pytest.raises(ModelLoadError, match="unknown quantization"):
        load_model("smollm2-135m", quant="3bit")
    with pytest.raises(ModelLoadError, match="no model given"):
        load_model("   ")


def test_demo_names_resolve_by_short_name_and_hub_id():
    assert find_demo("smollm2-135m").hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert find_demo("google/gemma-3-270m").short_name == "gemma3-270m"
    assert find_demo("GEMMA3-270M") is not None
    assert find_demo("gpt2") is None
    assert find_demo("smollm2-135m").local_gguf() is not None, "demo packages must be installed for the test suite"


def test_demo_models_load_in_nf4_with_their_real_shapes(demo_pair):
    model_a, model_b = demo_pair
    assert (model_a.d_model, model_a.n_layers, model_a.layer) == (576, 30, 15)
    assert (model_b.d_model, model_b.n_layers, model_b.layer) == (640, 18, 9)
    assert model_a.quant == model_b.quant == "nf4"
    assert model_a.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    ids = model_b.tokenizer(["The capital of France is"], return_tensors="pt").input_ids
    acts = model_b.activations(ids)
    assert acts.shape == (1, ids.shape[1], 640) and torch.isfinite(acts).all()


def test_int8_loads_on_cpu(tiny_llama):
    full = load_model(str(tiny_llama), quant="none", dtype="fp32", device="cpu")
    int8 = load_model(str(tiny_llama), quant="int8", device="cpu")
    assert any("8bit" in type(m).__name__ for m in int8.model.modules())
    ids = full.tokenizer(["Eight-bit weights."], return_tensors="pt").input_ids
    a, b = full.activations(ids), int8.activations(ids)
    assert (a - b).norm() / a.norm() < 0.2


def test_gguf_file_converts_once_to_a_cached_safetensors_folder(demo_pair):
    from crossdiff_core.models import convert_gguf, find_demo

    gguf = find_demo("smollm2-135m").local_gguf()
    folder = convert_gguf(gguf)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert convert_gguf(gguf) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_every_copy_of_a_converted_gguf_file_shares_its_conversion(demo_tokenizers, tmp_path):
    """The cache is keyed by the file's bytes: a second clone's copy of a demo model is not converted again."""
    original = find_demo("smollm2-135m").local_gguf()
    assert conversion_seconds(str(original)) is None  # converted when the demo tokenizers loaded
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    assert conversion_seconds(str(copy)) is None
    with open(copy, "r+b") as handle:  # one bit changed: another file, converted on its own
        handle.seek(-1, 2)
        last = handle.read(1)[0]
        handle.seek(-1, 2)
        handle.write(bytes([last ^ 1]))
    assert conversion_seconds(str(copy)) > 0
