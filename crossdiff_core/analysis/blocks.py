"""Which latents belong to which model: blocks, owners, and the latents each model can read and write.

A DFC partitions its latents structurally (`[A-exclusive | shared | B-exclusive]`). A standard
crosscoder (no exclusive blocks) has every latent in both models; the classic way to call one of its
latents model-specific is its *relative decoder norm* `‖d_b‖ / (‖d_a‖ + ‖d_b‖)`: near 0 it writes
almost only to A, near 1 almost only to B. `exclusive_latents` uses the block for a DFC and that
relative norm (≤ `RELATIVE_NORM_EXCLUSIVE` or ≥ 1 − it) for a standard crosscoder.
"""

from __future__ import annotations

import torch

from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.crosscoder.model import BLOCK_A_EXCLUSIVE, BLOCK_B_EXCLUSIVE, BLOCK_SHARED
from crossdiff_core.errors import CrossCoderError, CrossDiffError

SIDES = ("a", "b")
RELATIVE_NORM_EXCLUSIVE = 0.1
"""A standard crosscoder's latent is A-specific when ‖d_b‖/(‖d_a‖+‖d_b‖) ≤ this (B-specific: ≥ 1 − this)."""

BLOCK_CODES = {BLOCK_A_EXCLUSIVE: 0, BLOCK_SHARED: 1, BLOCK_B_EXCLUSIVE: 2}
"""Integer code of each block, as stored in the feature index."""


def same_basis(crosscoder: CrossCoder) -> bool:
    """Return True when the two models share a residual basis: same width and same tokenizer (a model and its fine-tune)."""
    config = crosscoder.config
    return config.d_a == config.d_b and config.tokenizer_a is not None and config.tokenizer_a == config.tokenizer_b


def check_side(side: str) -> str:
    """Return `side` as "a" or "b" (accepts A/B, model_a/model_b), or raise `CrossDiffError` saying what to pass."""
    key = str(side).strip().lower().removeprefix("model_").removeprefix("model-")
    if key not in SIDES:
        raise CrossDiffError(f"unknown model {side!r}: pass 'a' (model A) or 'b' (model B)")
    return key


def check_latent(crosscoder: CrossCoder, latent: int) -> str:
    """Return the block name of `latent`, or raise `CrossCoderError` naming the valid range."""
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < crosscoder.dict_size:
        raise CrossCoderError(
            f"latent {latent!r} is out of range: this crosscoder has {crosscoder.dict_size} latents, "
            f"numbered 0..{crosscoder.dict_size - 1}"
        )
    return crosscoder.block_of(latent)


def is_standard(crosscoder: CrossCoder) -> bool:
    """Return True for a standard crosscoder (no exclusive blocks), False for a DFC."""
    return crosscoder.n_a == 0 and crosscoder.n_b == 0


def model_slice(crosscoder: CrossCoder, side: str) -> slice:
    """Return the latent range that model `side` reads from and writes to."""
    return crosscoder.slice_a if check_side(side) == "a" else crosscoder.slice_b


def decoder_rows(crosscoder: CrossCoder, side: str) -> torch.Tensor:
    """Return model `side`'s decoder rows `[latents of model_slice, d]` (normalized space, detached)."""
    return (crosscoder.W_dec_a if check_side(side) == "a" else crosscoder.W_dec_b).detach()


def relative_norm(crosscoder: CrossCoder) -> torch.Tensor:
    """Return `‖d_b‖ / (‖d_a‖ + ‖d_b‖)` per latent `[F]` (0: A-exclusive, 1: B-exclusive, 0.5 if both 0)."""
    norm_a_F, norm_b_F = (n.detach().float() for n in crosscoder.decoder_norms())
    total_F = norm_a_F + norm_b_F
    return torch.where(total_F > 0, norm_b_F / total_F.clamp_min(1e-30), torch.full_like(total_F, 0.5))


def exclusive_latents(crosscoder: CrossCoder, side: str) -> torch.Tensor:
    """Return the int64 ids of model `side`'s exclusive latents (block for a DFC, relative norm if standard)."""
    side = check_side(side)
    if not is_standard(crosscoder):
        block = crosscoder.slice_a_exclusive if side == "a" else crosscoder.slice_b_exclusive
        return torch.arange(block.start, block.stop)
    rel_F = relative_norm(crosscoder)
    mask_F = rel_F <= RELATIVE_NORM_EXCLUSIVE if side == "a" else rel_F >= 1 - RELATIVE_NORM_EXCLUSIVE
    return torch.nonzero(mask_F).squeeze(1)


def block_codes(crosscoder: CrossCoder) -> torch.Tensor:
    """Return the int8 block code of every latent `[F]` (see `BLOCK_CODES`)."""
    return torch.tensor([BLOCK_CODES[name] for name in crosscoder.block_names()], dtype=torch.int8)


def crosscoder_device(crosscoder: CrossCoder) -> torch.device:
    """Return the device the crosscoder's weights live on."""
    return crosscoder.W_dec_a.device
