"""The sparse kernels and BatchTopK selection agree with plain dense PyTorch, values and gradients."""

from __future__ import annotations

import pytest
import torch

from crossdiff_core.crosscoder.batchtopk import (
    latent_scores,
    select_batch_topk,
    select_dead_topk,
    updated_threshold,
)
from crossdiff_core.crosscoder.sparse_ops import (
    gather_preacts,
    gather_preacts_dense,
    sparse_decode,
    sparse_decode_dense,
)

# (batch, d_a, d_b, n_a_exclusive, n_shared, n_b_exclusive)
SHAPES = [
    (16, 8, 8, 0, 24, 0),  # standard crosscoder, equal widths
    (32, 12, 20, 5, 30, 7),  # DFC, d_a != d_b
    (7, 33, 5, 10, 3, 1),  # few shared latents, odd sizes
    (64, 24, 32, 4, 56, 4),
]


def random_pairs(batch: int, n_latents: int, per_row: int, generator, hot_latent: int | None = None):
    """Return distinct (row, latent) pairs; `hot_latent` is chosen by every token."""
    scores = torch.rand(batch, n_latents, generator=generator)
    if hot_latent is not None:
        scores[:, hot_latent] = 2.0
    latents = scores.topk(per_row, dim=1).indices
    rows = torch.arange(batch).repeat_interleave(per_row)
    perm = torch.randperm(rows.numel(), generator=generator)  # any order must work
    return rows[perm], latents.reshape(-1)[perm]


def encoder_inputs(shape, dtype, generator):
    batch, d_a, d_b, n_a, n_s, n_b = shape
    n_latents = n_a + n_s + n_b
    tensors = [
        torch.randn(batch, d_a, generator=generator, dtype=dtype),
        torch.randn(n_a + n_s, d_a, generator=generator, dtype=dtype),
        torch.randn(batch, d_b, generator=generator, dtype=dtype),
        torch.randn(n_s + n_b, d_b, generator=generator, dtype=dtype),
        torch.randn(n_latents, generator=generator, dtype=dtype),
    ]
    return [t.requires_grad_() for t in tensors]


def dense_pre(x_a, W_a, x_b, W_b, b):
    n_latents = b.shape[0]
    pre = b.new_zeros(x_a.shape[0], n_latents)  # without the bias, as CrossCoder.encoder_products
    pre[:, : W_a.shape[0]] += x_a @ W_a.T
    pre[:, n_latents - W_b.shape[0] :] += x_b @ W_b.T
    return pre


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("hot", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gather_preacts_matches_dense_autograd(shape, hot, dtype):
    generator = torch.Generator().manual_seed(hash((shape, hot)) % 2**31)
    batch, _, _, n_a, n_s, n_b = shape
    n_latents = n_a + n_s + n_b
    rows, latents = random_pairs(batch, n_latents, min(4, n_latents), generator, hot_latent=0 if hot else None)
    inputs = encoder_inputs(shape, dtype, generator)
    with torch.no_grad():
        pre = dense_pre(*inputs)
    grad_out = torch.randn(rows.numel(), generator=generator, dtype=dtype)

    fast = gather_preacts(pre, rows, latents, *inputs)
    fast_grads = torch.autograd.grad(fast, inputs, grad_out)
    ref = gather_preacts_dense(pre, rows, latents, *inputs)
    ref_grads = torch.autograd.grad(ref, inputs, grad_out)

    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast, ref, **tol)
    for name, a, b in zip(["x_a", "W_enc_a", "x_b", "W_enc_b", "b_enc"], fast_grads, ref_grads):
        torch.testing.assert_close(a, b, **tol, msg=name)


@pytest.mark.parametrize("batch, n_latents, d, per_row", [(16, 24, 8, 3), (40, 64, 33, 8), (5, 6, 128, 6)])
@pytest.mark.parametrize("hot", [False, True])
def test_sparse_decode_matches_dense_autograd(batch, n_latents, d, per_row, hot):
    generator = torch.Generator().manual_seed(batch * n_latents + hot)
    rows, latents = random_pairs(batch, n_latents, per_row, generator, hot_latent=1 if hot else None)
    values = torch.rand(rows.numel(), generator=generator, dtype=torch.float64).requires_grad_()
    W_dec = torch.randn(n_latents, d, generator=generator, dtype=torch.float64).requires_grad_()
    grad_out = torch.randn(batch, d, generator=generator, dtype=torch.float64)

    fast = sparse_decode(rows, latents, values, W_dec, batch)
    fast_grads = torch.autograd.grad(fast, [values, W_dec], grad_out)
    ref = sparse_decode_dense(rows, latents, values, W_dec, batch)
    ref_grads = torch.autograd.grad(ref, [values, W_dec], grad_out)

    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast_grads[0], ref_grads[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast_grads[1], ref_grads[1], rtol=1e-10, atol=1e-10)


def test_sparse_decode_in_bfloat16_uses_the_portable_path():
    generator = torch.Generator().manual_seed(0)
    rows, latents = random_pairs(12, 30, 5, generator)
    values = torch.rand(rows.numel(), generator=generator)
    W_dec = torch.randn(30, 16, generator=generator)
    grad_out = torch.randn(12, 16, generator=generator)
    ref_values, ref_W = values.clone().requires_grad_(), W_dec.clone().requires_grad_()
    ref_grads = torch.autograd.grad(
        sparse_decode_dense(rows, latents, ref_values, ref_W, 12), [ref_values, ref_W], grad_out
    )
    bf_values, bf_W = values.bfloat16().requires_grad_(), W_dec.bfloat16().requires_grad_()
    bf_grads = torch.autograd.grad(
        sparse_decode(rows, latents, bf_values, bf_W, 12), [bf_values, bf_W], grad_out.bfloat16()
    )
    for ours, ref in zip(bf_grads, ref_grads):
        torch.testing.assert_close(ours.float(), ref, rtol=5e-2, atol=5e-2)


def test_empty_selection_gives_zero_output_and_gradients():
    W_dec = torch.randn(10, 4, requires_grad=True)
    values = torch.zeros(0, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.int64)
    out = sparse_decode(empty, empty, values, W_dec, 3)
    assert torch.equal(out, torch.zeros(3, 4))
    out.sum().backward()
    assert torch.equal(W_dec.grad, torch.zeros(10, 4))


# ---------------------------------------------------------------------------- BatchTopK selection


def naive_batch_topk(pre, norm, k):
    scores = latent_scores(pre, norm).reshape(-1)
    top = torch.topk(scores, k * pre.shape[0])
    keep = top.indices[top.values > 0]
    return set(keep.tolist())


@pytest.mark.parametrize(
    "batch, n_latents, skew",
    [(8, 50, False), (256, 2048, False), (256, 2048, True), (512, 1024, True)],
)
def test_batch_topk_is_exact(batch, n_latents, skew):
    generator = torch.Generator().manual_seed(batch + n_latents + skew)
    pre = torch.randn(batch, n_latents, generator=generator)
    if skew:  # a few tokens with huge activations take far more than k latents each
        pre[:3] *= 50
    norm = torch.rand(n_latents, generator=generator) + 0.1
    k = 8
    selection = select_batch_topk(pre, norm, k)
    flat = (selection.rows_N * n_latents + selection.latents_N).tolist()
    assert set(flat) == naive_batch_topk(pre, norm, k)
    assert flat == sorted(flat)
    torch.testing.assert_close(selection.scores_N, (pre.relu() * norm)[selection.rows_N, selection.latents_N])


@pytest.mark.parametrize("batch, n_latents, skew", [(8, 50, False), (256, 2048, False), (256, 2048, True)])
def test_batch_topk_with_the_bias_apart_selects_the_same_pairs(batch, n_latents, skew):
    generator = torch.Generator().manual_seed(7 + batch)
    products = torch.randn(batch, n_latents, generator=generator, dtype=torch.float64)
    if skew:
        products[:3] *= 50
    bias = torch.randn(n_latents, generator=generator, dtype=torch.float64) * 0.5
    norm = torch.rand(n_latents, generator=generator, dtype=torch.float64) + 0.1
    norm[:10] = 0.0  # latents without decoder weights are never selected
    together = select_batch_topk(products + bias, norm, k=8)
    apart = select_batch_topk(products, norm, k=8, bias_F=bias)
    assert torch.equal(together.rows_N, apart.rows_N) and torch.equal(together.latents_N, apart.latents_N)
    torch.testing.assert_close(together.scores_N, apart.scores_N)
    assert not bool((apart.latents_N < 10).any())


def test_batch_topk_drops_non_positive_scores():
    pre = torch.full((4, 300), -1.0)
    pre[0, 5] = 2.0
    selection = select_batch_topk(pre, torch.ones(300), k=3)
    assert selection.rows_N.tolist() == [0] and selection.latents_N.tolist() == [5]


def test_dead_topk_picks_largest_per_token_capped_by_dead_count():
    pre = torch.tensor([[0.1, 0.9, -0.5, 0.3], [2.0, -1.0, 0.0, 1.0]])
    assert select_dead_topk(pre, 2).tolist() == [[False, True, False, True], [True, False, False, True]]
    assert select_dead_topk(pre, 10).all()


def test_threshold_update_is_an_ema_of_the_smallest_selected_score():
    selection = select_batch_topk(torch.tensor([[1.0, 3.0], [2.0, -1.0]]), torch.ones(2), k=1)
    assert float(updated_threshold(torch.tensor(0.0), selection, decay=0.9, first=True)) == pytest.approx(2.0)
    assert float(updated_threshold(torch.tensor(1.0), selection, decay=0.9, first=False)) == pytest.approx(1.1)
