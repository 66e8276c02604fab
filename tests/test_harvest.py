"""Harvest fast path: length-sorted passes without padding waste return exactly the one-window-at-a-time rows."""

from __future__ import annotations

import pytest
import torch

from crossdiff_core.activations.paired import PASS_OVERHEAD_TOKENS, length_sorted_chunks, rows_at_positions
from crossdiff_core.models import load_model


@pytest.fixture(scope="module")
def tiny_models(demo_tokenizers):
    """Two random 3-layer fp32 models (Llama with SmolLM2's tokenizer, Gemma-3 with Gemma's), read at layer 1."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    tok_a, tok_b = demo_tokenizers
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok_a), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512,
    )).eval()  # fmt: skip
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok_b), hidden_size=40, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=512, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )).eval()  # fmt: skip
    return load_model((llama, tok_a), layer=1), load_model((gemma, tok_b), layer=1)


def test_chunks_cover_every_window_once_longest_first_within_budget():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 200, (97,), generator=generator).tolist()
    chunks = length_sorted_chunks(lengths, max_batch_tokens=1024)
    flat = [i for chunk in chunks for i in chunk]
    assert sorted(flat) == [i for i, n in enumerate(lengths) if n > 0]
    assert [lengths[i] for i in flat] == sorted((n for n in lengths if n > 0), reverse=True)
    assert all(len(chunk) * lengths[chunk[0]] <= 1024 for chunk in chunks)
    padded = sum(len(chunk) * lengths[chunk[0]] for chunk in chunks)
    assert padded < 1.2 * sum(lengths)
    assert length_sorted_chunks([300, 5], max_batch_tokens=256) == [[0], [1]]
    # equal lengths never split while they fit; splitting only pays when it saves more than a pass costs
    assert length_sorted_chunks([64] * 8, max_batch_tokens=4096) == [list(range(8))]
    short = PASS_OVERHEAD_TOKENS // 4
    assert len(length_sorted_chunks([512, 512, short, short], max_batch_tokens=4096)) == 2


@pytest.mark.parametrize("side", [0, 1])
def test_rows_match_one_window_at_a_time(tiny_models, side):
    model = tiny_models[side]
    generator = torch.Generator().manual_seed(side)
    input_ids, positions = [], []
    for length in (23, 5, 40, 1, 17, 40, 31):
        input_ids.append(torch.randint(10, 5000, (length,), generator=generator).tolist())
        chosen = torch.randperm(length, generator=generator)[: max(1, length // 3)]
        positions.append(torch.sort(chosen).values.tolist())
    rows_ND = rows_at_positions(model, input_ids, positions, max_batch_tokens=64)
    expected = torch.cat([
        model.activations(torch.tensor([ids]))[0, torch.tensor(pos)] for ids, pos in zip(input_ids, positions)
    ])  # fmt: skip
    assert rows_ND.shape == (sum(len(p) for p in positions), model.d_model)
    torch.testing.assert_close(rows_ND, expected, rtol=1e-5, atol=1e-5)
