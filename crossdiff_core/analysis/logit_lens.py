"""Which output tokens a latent's decoder direction promotes and suppresses in the model it writes to.

The direction is passed through that model's own final norm and unembedding, as if it were the residual
stream at the last layer: `logits = W_U · norm(d_j)`. RMSNorm is scale-invariant, so the de-normalised
and the normalized decoder rows give the same tokens. This is the direct effect only (later layers are
skipped), a quick hint at what the latent "wants to say", not a measurement of behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from crossdiff_core.errors import ModelLoadError
from crossdiff_core.models import LoadedModel

_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "final_norm")


@dataclass
class TopTokens:
    """Promoted and suppressed token ids with their logits, per direction."""

    promote_ids_LK: torch.Tensor
    promote_logits_LK: torch.Tensor
    suppress_ids_LK: torch.Tensor
    """Most negative first."""
    suppress_logits_LK: torch.Tensor


def final_norm(model: LoadedModel) -> nn.Module:
    """Return the model's final norm (applied before the unembedding), or raise `ModelLoadError`."""
    decoder = model.model.get_decoder() if hasattr(model.model, "get_decoder") else model.model
    for owner in (decoder, model.model):
        for name in _NORM_NAMES:
            module = getattr(owner, name, None)
            if isinstance(module, nn.Module):
                return module
    raise ModelLoadError(
        f"cannot find the final norm of {model.model_id} ({type(model.model).__name__}); promoted tokens need "
        f"a final norm module named one of {', '.join(_NORM_NAMES)}"
    )


@torch.no_grad()
def top_tokens(
    model: LoadedModel,
    directions_LD: torch.Tensor,
    k: int,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> TopTokens:
    """Return the `k` tokens each direction promotes most and suppresses most through the final norm and unembedding.

    `progress(n)` is called with the number of directions done after each chunk.
    """
    norm = final_norm(model)
    unembed = model.model.get_output_embeddings()
    param = next(unembed.parameters())
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    for start in range(0, len(directions_LD), chunk):
        block_LD = directions_LD[start : start + chunk].to(param.device)
        normed_LD = norm(block_LD.to(_norm_dtype(norm, param.dtype)))
        logits_LV = unembed(normed_LD.to(param.dtype)).float()
        n_vocab = min(logits_LV.shape[1], len(model.tokenizer))
        logits_LV = logits_LV[:, :n_vocab]
        kk = min(k, n_vocab)
        top = torch.topk(logits_LV, kk, dim=1)
        bottom = torch.topk(-logits_LV, kk, dim=1)
        for store, value in zip(parts, (top.indices, top.values, bottom.indices, -bottom.values)):
            store.append(value.cpu())
        if progress is not None:
            progress(min(start + chunk, len(directions_LD)))
    if not parts[0]:
        empty_ids, empty = torch.zeros(0, k, dtype=torch.int64), torch.zeros(0, k)
        return TopTokens(empty_ids, empty, empty_ids, empty)
    ids_p, logits_p, ids_s, logits_s = (torch.cat(p) for p in parts)
    return TopTokens(ids_p, logits_p, ids_s, logits_s)


def _norm_dtype(norm: nn.Module, fallback: torch.dtype) -> torch.dtype:
    """Return the dtype of the norm's weight (the dtype it computes in), else `fallback`."""
    weight = getattr(norm, "weight", None)
    return weight.dtype if isinstance(weight, torch.Tensor) and weight.is_floating_point() else fallback
