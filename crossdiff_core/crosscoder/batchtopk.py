"""BatchTopK latent selection, its inference threshold, and the auxk selection of dead latents.

BatchTopK (Bussmann et al. 2024) keeps, over a whole batch of B tokens, the `k·B` largest latent
*scores* `relu(pre) · (‖d_a‖ + ‖d_b‖)`: busy tokens may use more than k latents, quiet ones fewer.
At inference a single threshold on the score replaces the batch-wide selection; it is learned as a
running (EMA) estimate of the smallest score selected during training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from crossdiff_core.distributed import Dist, global_cutoff


@dataclass(frozen=True)
class LatentSelection:
    """Active (token, latent) pairs in sparse form, ordered by token then latent."""

    rows_N: torch.Tensor
    """Token (batch row) index of each active pair, int64, non-decreasing."""

    latents_N: torch.Tensor
    """Latent index of each active pair, int64."""

    scores_N: torch.Tensor
    """Selection score of each active pair (what the selection ranked by)."""


def latent_scores(pre_BF: torch.Tensor, decoder_norm_F: torch.Tensor) -> torch.Tensor:
    """Return the BatchTopK ranking scores `relu(pre) · decoder_norm` as a new [B, F] tensor."""
    return pre_BF.relu().mul_(decoder_norm_F)


def select_batch_topk(
    pre_BF: torch.Tensor,
    decoder_norm_F: torch.Tensor,
    k: int,
    group: Dist | None = None,
    bias_F: torch.Tensor | None = None,
) -> LatentSelection:
    """Return the `k·B` highest-scoring (token, latent) pairs of the batch, dropping pairs that score 0.

    `decoder_norm_F` is `‖d_a‖ + ‖d_b‖` per latent. Pairs scoring exactly 0 (a non-positive
    pre-activation) are never selected, so fewer than `k·B` pairs come back when few latents fire.
    The result is exact; on large batches a cutoff estimated from a sample of the scores first
    narrows the candidates (falling back to a full top-k whenever too few pass it).

    With a data-parallel `group`, `pre_BF` is this rank's part of the global batch and the pairs
    returned are this rank's share of the global batch's `k·B·world` best (ties at the cutoff aside).
    With `bias_F`, `pre_BF` lacks the encoder bias (`CrossCoder.encoder_products`) and it is added
    only where a score is read.
    """
    n_latents = pre_BF.shape[1]
    world = group.world if group is not None else 1
    n_keep = min(k * pre_BF.shape[0] * world, pre_BF.numel())
    with torch.no_grad():
        flat_N = scores_N = None
        cutoff = _sampled_cutoff(pre_BF, decoder_norm_F, n_keep, bias_F)
        if cutoff is not None:
            # One pass over [B, F]: pre + bias > cutoff / norm (inf where a latent has no decoder weights).
            per_latent_F = cutoff / decoder_norm_F if bias_F is None else cutoff / decoder_norm_F - bias_F
            candidates_C = (pre_BF > per_latent_F).reshape(-1).nonzero().squeeze(1)
            if candidates_C.numel() >= n_keep:
                latent_C = candidates_C % n_latents
                values_C = pre_BF.reshape(-1)[candidates_C]
                if bias_F is not None:
                    values_C += bias_F[latent_C]
                top = torch.topk(values_C.mul_(decoder_norm_F[latent_C]), n_keep, sorted=False)
                flat_N, scores_N = candidates_C[top.indices], top.values
        if flat_N is None:
            full_BF = pre_BF if bias_F is None else pre_BF + bias_F
            top = torch.topk(latent_scores(full_BF, decoder_norm_F).reshape(-1), n_keep, sorted=False)
            flat_N, scores_N = top.indices, top.values
        keep = scores_N > 0
        if group is not None:
            keep &= scores_N >= global_cutoff(scores_N, k * pre_BF.shape[0] * world, group)
        flat_N, order = torch.sort(flat_N[keep])
        scores_N = scores_N[keep][order]
    return LatentSelection(rows_N=flat_N // n_latents, latents_N=flat_N % n_latents, scores_N=scores_N)


_SAMPLE_SIZE = 1 << 16
"""Scores sampled to estimate the BatchTopK cutoff."""

_HASH_MULTIPLIER = 2654435761
"""Knuth's multiplicative hash constant: spreads sample positions evenly over tokens and latents."""


def _sampled_cutoff(
    pre_BF: torch.Tensor, decoder_norm_F: torch.Tensor, n_keep: int, bias_F: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Return a positive score that about 2·n_keep pairs exceed, estimated from a fixed sample; None if not worth it."""
    numel = pre_BF.numel()
    if numel < 4 * _SAMPLE_SIZE:
        return None
    expected_above = _SAMPLE_SIZE * n_keep / numel
    rank = int(2 * expected_above) + 64
    if rank >= _SAMPLE_SIZE // 4:
        return None
    positions_S = torch.arange(_SAMPLE_SIZE, device=pre_BF.device) * _HASH_MULTIPLIER % numel
    latent_S = positions_S % pre_BF.shape[1]
    sample_S = pre_BF.reshape(-1)[positions_S]
    if bias_F is not None:
        sample_S += bias_F[latent_S]
    sample_S = sample_S.relu_() * decoder_norm_F[latent_S]
    cutoff = torch.kthvalue(sample_S, _SAMPLE_SIZE - rank).values
    return cutoff if cutoff > 0 else None


def updated_threshold(
    threshold: torch.Tensor, selection: LatentSelection, decay: float, first: bool, group: Dist | None = None
) -> torch.Tensor:
    """Return the new inference threshold: an EMA of the smallest selected score, or that score if `first`.

    The threshold is unchanged when nothing was selected. With a data-parallel `group` the smallest
    score is taken over all ranks. Stays on the device (no host sync).
    """
    if selection.scores_N.numel():
        batch_min = selection.scores_N.min().to(threshold.dtype)
    else:
        batch_min = torch.full_like(threshold, torch.inf)
    if group is not None:
        batch_min = group.min(batch_min)
    elif selection.scores_N.numel() == 0:
        return threshold
    new = batch_min if first else torch.lerp(batch_min, threshold, decay)
    return torch.where(torch.isfinite(batch_min), new, threshold)


def default_k_aux(d_a: int, d_b: int) -> int:
    """Return the default number of dead latents the auxk loss revives per token: half the wider model's width."""
    return max(d_a, d_b) // 2


def select_dead_topk(pre_dead_BK: torch.Tensor, k_aux: int) -> torch.Tensor:
    """Return a boolean [B, K] mask of each token's `k_aux` highest pre-activations among K dead latents.

    `k_aux` is capped by K. Pre-activations are ranked as they are (they may be negative).
    """
    k_aux = min(k_aux, pre_dead_BK.shape[1])
    with torch.no_grad():
        top = torch.topk(pre_dead_BK, k_aux, dim=1, sorted=False)
        return torch.zeros_like(pre_dead_BK, dtype=torch.bool).scatter_(1, top.indices, True)
