"""A quantized model computing in fp32 keeps its embeddings in bf16: the LM head multiplies in fp32, block by block."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, Gemma3TextConfig

from crossdiff_core import embedding_storage
from crossdiff_core.embedding_storage import UpcastHead, compute_in


def test_the_head_multiplies_bf16_rows_in_fp32_one_block_at_a_time(monkeypatch):
    torch.manual_seed(0)
    head = nn.Linear(48, 1000, bias=True).to(torch.bfloat16)
    monkeypatch.setattr(embedding_storage, "HEAD_BLOCK_BYTES", 48 * 4 * 96)  # 96 rows a block: 11 blocks
    x_BTD = torch.randn(2, 3, 48, dtype=torch.bfloat16)
    out = UpcastHead(head, torch.float32)(x_BTD)
    expected = nn.functional.linear(x_BTD.float(), head.weight.float(), head.bias.float())
    assert out.dtype == torch.float32 and out.shape == (2, 3, 1000)
    torch.testing.assert_close(out, expected)


def test_a_bf16_model_computes_in_fp32_with_its_tied_embedding_kept():
    config = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16).eval()
    reference = AutoModelForCausalLM.from_config(config).eval()  # the same weights, in fp32
    reference.load_state_dict({name: weight.float() for name, weight in model.state_dict().items()})
    compute_in(model, torch.float32)
    embedding = model.get_input_embeddings().weight
    assert embedding.dtype == torch.bfloat16 and model.get_output_embeddings().weight is embedding
    assert {p.dtype for p in model.parameters() if p is not embedding} == {torch.float32}
    ids = torch.randint(0, 300, (1, 9))
    logits, expected = model(ids).logits, reference(ids).logits
    assert logits.dtype == torch.float32
    # Gemma scales its embedding in the embedding's dtype: bf16 rounds that product (measured 0.2% of the largest logit)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0.01 * float(expected.abs().max()))
