"""Relocation: moving one-model shared latents of a DFC into dead exclusive latents of that model.

In a DFC, every `relocate_every` steps an alive shared latent that only writes to one model
(relative decoder norm beyond `relocate_relative_norm`) moves into a dead latent of that model's
exclusive block: shared latents pick up one-model features as easily as exclusive ones do, and
nothing else would carry such a feature to the block that says what it is.
"""

from __future__ import annotations

import torch

from crossdiff_core.crosscoder.model import CrossCoder
from crossdiff_core.training.config import TrainConfig


def relocate_one_sided(
    model: CrossCoder,
    optimizer: torch.optim.Optimizer,
    tokens_since_fired_F: torch.Tensor,
    train_config: TrainConfig,
    step: int,
) -> int:
    """Move alive shared latents that write to one model only into dead exclusive latents of it; return how many.

    The most one-sided latents move first, as many as there are dead latents in the block. A moved
    latent keeps its Adam moments and is marked as just fired; the vacated shared latent is
    re-drawn (seeded by `train_config.seed` and `step`), loses its first Adam moment and is marked
    dead, so auxk revives it. A no-op for a standard crosscoder.
    """
    dead_after = train_config.dead_after()
    dead_F = tokens_since_fired_F >= dead_after
    with torch.no_grad():
        norm_a_F, norm_b_F = model.decoder_norms()
        relative_F = norm_a_F / (norm_a_F + norm_b_F).clamp_min(1e-12)
    shared_S = torch.arange(model.slice_shared.start, model.slice_shared.stop, device=dead_F.device)
    alive_S = shared_S[~dead_F[shared_S]]
    bound = train_config.relocate_relative_norm
    moved = 0
    blocks = ((model.slice_a_exclusive, relative_F > bound), (model.slice_b_exclusive, relative_F < 1 - bound))
    for block, one_sided in blocks:
        slots_N = torch.arange(block.start, block.stop, device=dead_F.device)
        slots_N = slots_N[dead_F[slots_N]]
        candidates_N = alive_S[one_sided[alive_S]]
        order = (relative_F[candidates_N] - 0.5).abs().argsort(descending=True)
        count = min(slots_N.numel(), candidates_N.numel())
        if count == 0:
            continue
        shared_N, exclusive_N = candidates_N[order[:count]], slots_N[:count]
        generator = torch.Generator().manual_seed(train_config.seed * 1_000_003 + step)
        model.move_to_exclusive(shared_N, exclusive_N, generator)
        _move_adam_rows(model, optimizer, shared_N, exclusive_N)
        tokens_since_fired_F[exclusive_N] = 0
        tokens_since_fired_F[shared_N] = dead_after
        moved += count
    return moved


def _move_adam_rows(model: CrossCoder, optimizer, shared_N: torch.Tensor, exclusive_N: torch.Tensor) -> None:
    """Mirror `CrossCoder.move_to_exclusive` in Adam's moments: copy the moved rows, zero the first moment of re-drawn ones."""
    offset_b = model.slice_b.start
    if bool(exclusive_N[0] < model.n_a):
        moved = ((model.W_enc_a, 0), (model.W_dec_a, 0), (model.b_enc, 0))
    else:
        moved = ((model.W_enc_b, offset_b), (model.W_dec_b, offset_b), (model.b_enc, 0))
    for param, offset in moved:
        for moments in optimizer.state.get(param, {}).values():
            if moments.dim() > 0:  # skip the scalar step count
                moments[exclusive_N - offset] = moments[shared_N - offset]
    redrawn = ((model.W_enc_a, 0), (model.W_dec_a, 0), (model.W_enc_b, offset_b), (model.W_dec_b, offset_b),
               (model.b_enc, 0))  # fmt: skip
    for param, offset in redrawn:
        state = optimizer.state.get(param, {})
        if "exp_avg" in state:
            state["exp_avg"][shared_N - offset] = 0.0
