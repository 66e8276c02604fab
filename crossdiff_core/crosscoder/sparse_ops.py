"""The training fast path: sparse gradients for the encoder gather and the decoder.

Only about k of F latents are active per token, so after the one unavoidable dense encoder
matmul (`x @ W_enc^T`, run without autograd) every other step works on the N ≈ k·B active
(token, latent) pairs:

- `gather_preacts` picks the active pre-activations out of the dense bias-free `pre_BF` matrix
  (adding the bias of the picked latents); its backward
  builds `grad_W_enc = Sᵀ x` and `grad_b_enc` from the N gradient values (S is the sparse [B, F]
  gradient matrix), never a dense [B, F] gradient.
- `sparse_decode` computes `x̂ = S W_dec` from the active values; its backward gives
  `grad_W_dec = Sᵀ grad_x̂` and each active value's gradient as a row dot product.

Both sparse products are `embedding_bag` weighted sums (CPU and CUDA, any float dtype); the row
dot products are one SDDMM (`torch.sparse.sampled_addmm`) in fp32/fp64, else chunked gathers so
memory stays bounded. `DENSE_REFERENCE` computes the same values with plain dense autograd; tests
check that values and gradients agree.

Latent layout: the crosscoder has F latents; model A's encoder covers latents `[0, L_a)` and model
B's covers `[F − L_b, F)` (they overlap on the shared block).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

_CHUNK_ELEMENTS = 1 << 21
"""Largest temporary (in elements) a chunked row dot product materializes."""


def gather_preacts(
    pre_BF: torch.Tensor,
    rows_N: torch.Tensor,
    latents_N: torch.Tensor,
    x_a_BD: torch.Tensor,
    W_enc_a_LD: torch.Tensor,
    x_b_BD: torch.Tensor,
    W_enc_b_LD: torch.Tensor,
    b_enc_F: torch.Tensor,
) -> torch.Tensor:
    """Return `pre_BF[rows_N, latents_N] + b_enc_F[latents_N]`, differentiable w.r.t. both encoders, `b_enc_F` and the inputs.

    `pre_BF` must equal `x_a W_enc_aᵀ (on [0, L_a)) + x_b W_enc_bᵀ (on [F − L_b, F))` without the
    bias (`CrossCoder.encoder_products`), computed without autograd; it is only read, never differentiated.
    """
    return _GatherPreacts.apply(pre_BF, rows_N, latents_N, x_a_BD, W_enc_a_LD, x_b_BD, W_enc_b_LD, b_enc_F)


def sparse_decode(
    rows_N: torch.Tensor, latents_N: torch.Tensor, values_N: torch.Tensor, W_dec_LD: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Return `S @ W_dec_LD` as a dense [batch_size, D] tensor, where S[rows_N, latents_N] = values_N.

    Differentiable w.r.t. `values_N` and `W_dec_LD`. (token, latent) pairs must be distinct.
    """
    return _SparseDecode.apply(rows_N, latents_N, values_N, W_dec_LD, batch_size)


def gather_preacts_dense(
    pre_BF: torch.Tensor,
    rows_N: torch.Tensor,
    latents_N: torch.Tensor,
    x_a_BD: torch.Tensor,
    W_enc_a_LD: torch.Tensor,
    x_b_BD: torch.Tensor,
    W_enc_b_LD: torch.Tensor,
    b_enc_F: torch.Tensor,
) -> torch.Tensor:
    """Reference for `gather_preacts`: return the same values, recomputing the pre-activations with dense autograd.

    `pre_BF` is ignored; it is accepted so both implementations share one signature.
    """
    n_latents = b_enc_F.shape[0]
    pre_a_BL = x_a_BD @ W_enc_a_LD.T
    pre_b_BL = x_b_BD @ W_enc_b_LD.T
    pad_a = (0, n_latents - pre_a_BL.shape[1])
    pad_b = (n_latents - pre_b_BL.shape[1], 0)
    dense_BF = nnf.pad(pre_a_BL, pad_a) + nnf.pad(pre_b_BL, pad_b) + b_enc_F
    return dense_BF[rows_N, latents_N]


def sparse_decode_dense(
    rows_N: torch.Tensor, latents_N: torch.Tensor, values_N: torch.Tensor, W_dec_LD: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Reference for `sparse_decode`: return `S @ W_dec_LD` through a dense [B, L] matrix and dense autograd."""
    f_BL = values_N.new_zeros(batch_size, W_dec_LD.shape[0]).index_put((rows_N, latents_N), values_N)
    return f_BL @ W_dec_LD


@dataclass(frozen=True)
class LatentOps:
    """The two operations a training step needs; `SPARSE` and `DENSE_REFERENCE` are interchangeable."""

    gather_preacts: Callable[..., torch.Tensor]
    """Active pre-activations with gradients to the encoders (see `gather_preacts`)."""

    decode: Callable[..., torch.Tensor]
    """Decoding of active values with gradients to values and decoder (see `sparse_decode`)."""


SPARSE = LatentOps(gather_preacts=gather_preacts, decode=sparse_decode)
DENSE_REFERENCE = LatentOps(gather_preacts=gather_preacts_dense, decode=sparse_decode_dense)


# ---------------------------------------------------------------------------- kernels


def _weighted_row_sum(
    table_TD: torch.Tensor, src_N: torch.Tensor, dst_N: torch.Tensor, weights_N: torch.Tensor, n_out: int
) -> torch.Tensor:
    """Return out[n_out, D] with out[dst_i] = Σ_i weights_i · table[src_i] (a sparse-dense matmul)."""
    if _is_sorted(dst_N):  # the decoder's rows arrive sorted: no sort, no gathers
        counts = torch.bincount(dst_N, minlength=n_out)
    else:
        dst_sorted_N, order = torch.sort(dst_N)
        counts = torch.bincount(dst_sorted_N, minlength=n_out)
        src_N, weights_N = src_N[order], weights_N[order]
    offsets = counts.cumsum(0) - counts
    return nnf.embedding_bag(src_N, table_TD, offsets, mode="sum", per_sample_weights=weights_N.to(table_TD.dtype))


def _is_sorted(values_N: torch.Tensor) -> bool:
    """Return whether a 1-D tensor is non-decreasing (one cheap pass; sorting costs far more)."""
    return values_N.numel() < 2 or bool((values_N[1:] >= values_N[:-1]).all())


def _row_dots(a_TD: torch.Tensor, a_rows_N: torch.Tensor, b_UD: torch.Tensor, b_rows_N: torch.Tensor) -> torch.Tensor:
    """Return the N dot products a[a_rows_i] · b[b_rows_i] (pairs must be distinct)."""
    if a_TD.dtype in _SDDMM_DTYPES and b_UD.dtype == a_TD.dtype:
        return _sampled_row_dots(a_TD, a_rows_N, b_UD, b_rows_N)
    return _chunked_row_dots(a_TD, a_rows_N, b_UD, b_rows_N)


_SDDMM_DTYPES = (torch.float32, torch.float64)
"""Dtypes `torch.sparse.sampled_addmm` supports on CPU and CUDA."""


def _sampled_row_dots(
    a_TD: torch.Tensor, a_rows_N: torch.Tensor, b_UD: torch.Tensor, b_rows_N: torch.Tensor
) -> torch.Tensor:
    """Return the row dot products as the entries of (a bᵀ) sampled at the pairs (one SDDMM, no [N, D] copies)."""
    n_b = b_UD.shape[0]
    keys_N = a_rows_N * n_b + b_rows_N
    order = None
    if not _is_sorted(keys_N):
        keys_N, order = torch.sort(keys_N)
    rows_sorted_N = keys_N // n_b
    crow = torch.zeros(a_TD.shape[0] + 1, dtype=torch.int64, device=a_TD.device)
    crow[1:] = torch.bincount(rows_sorted_N, minlength=a_TD.shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        pattern = torch.sparse_csr_tensor(
            crow,
            keys_N - rows_sorted_N * n_b,
            a_TD.new_zeros(keys_N.shape[0]),
            (a_TD.shape[0], n_b),
            check_invariants=False,  # sorted, distinct pairs by construction
        )
    sampled = torch.sparse.sampled_addmm(pattern, a_TD, b_UD.T, beta=0.0).values()
    return sampled if order is None else torch.empty_like(sampled).index_copy_(0, order, sampled)


def _chunked_row_dots(
    a_TD: torch.Tensor, a_rows_N: torch.Tensor, b_UD: torch.Tensor, b_rows_N: torch.Tensor
) -> torch.Tensor:
    """Return the row dot products by gathering rows in chunks of bounded memory (any dtype)."""
    out_N = a_TD.new_empty(a_rows_N.shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // max(1, a_TD.shape[1]))
    for start in range(0, a_rows_N.shape[0], chunk):
        end = start + chunk
        torch.sum(a_TD[a_rows_N[start:end]] * b_UD[b_rows_N[start:end]], dim=1, out=out_N[start:end])
    return out_N


def _encoder_grads(
    grad_N: torch.Tensor,
    rows_N: torch.Tensor,
    local_N: torch.Tensor,
    x_BD: torch.Tensor,
    W_LD: torch.Tensor,
    need_x: bool,
    need_W: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Return (grad_x = S W, grad_W = Sᵀ x) for one model's encoder, S[rows, local] = grad."""
    grad_x = _weighted_row_sum(W_LD, local_N, rows_N, grad_N, x_BD.shape[0]) if need_x else None
    grad_W = _weighted_row_sum(x_BD, rows_N, local_N, grad_N, W_LD.shape[0]) if need_W else None
    return grad_x, grad_W


class _GatherPreacts(torch.autograd.Function):
    """Gather of active pre-activations with a sparse backward into both encoders."""

    @staticmethod
    def forward(ctx, pre_BF, rows_N, latents_N, x_a_BD, W_enc_a_LD, x_b_BD, W_enc_b_LD, b_enc_F):
        ctx.save_for_backward(rows_N, latents_N, x_a_BD, W_enc_a_LD, x_b_BD, W_enc_b_LD)
        ctx.n_latents = b_enc_F.shape[0]
        return pre_BF[rows_N, latents_N] + b_enc_F[latents_N]

    @staticmethod
    def backward(ctx, grad_N):
        rows_N, latents_N, x_a_BD, W_enc_a_LD, x_b_BD, W_enc_b_LD = ctx.saved_tensors
        need = ctx.needs_input_grad
        grad_N = grad_N.contiguous()
        in_a = latents_N < W_enc_a_LD.shape[0]
        offset_b = ctx.n_latents - W_enc_b_LD.shape[0]
        in_b = latents_N >= offset_b
        grad_x_a, grad_W_a = _encoder_grads(
            grad_N[in_a], rows_N[in_a], latents_N[in_a], x_a_BD, W_enc_a_LD, need[3], need[4]
        )
        grad_x_b, grad_W_b = _encoder_grads(
            grad_N[in_b], rows_N[in_b], latents_N[in_b] - offset_b, x_b_BD, W_enc_b_LD, need[5], need[6]
        )
        grad_b = None
        if need[7]:
            grad_b = grad_N.new_zeros(ctx.n_latents).index_add_(0, latents_N, grad_N)
        return None, None, None, grad_x_a, grad_W_a, grad_x_b, grad_W_b, grad_b


class _SparseDecode(torch.autograd.Function):
    """Sparse-dense decode `S @ W_dec` with sparse gradients."""

    @staticmethod
    def forward(ctx, rows_N, latents_N, values_N, W_dec_LD, batch_size):
        ctx.save_for_backward(rows_N, latents_N, values_N, W_dec_LD)
        return _weighted_row_sum(W_dec_LD, latents_N, rows_N, values_N, batch_size)

    @staticmethod
    def backward(ctx, grad_BD):
        rows_N, latents_N, values_N, W_dec_LD = ctx.saved_tensors
        grad_BD = grad_BD.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[2]:
            grad_values = _row_dots(grad_BD, rows_N, W_dec_LD, latents_N).to(values_N.dtype)
        if ctx.needs_input_grad[3]:
            grad_W = _weighted_row_sum(grad_BD, rows_N, latents_N, values_N, W_dec_LD.shape[0])
        return None, None, grad_values, grad_W, None
