"""Diff one prompt: which model-exclusive latents fire for each model.

This is the minimal diff used by the CLI; the analysis engine builds the full per-token view on it.
"""

from __future__ import annotations

import logging

import torch

from crossdiff_core.alignment import align_text
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import LoadedModel

log = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 1024


def check_models(crosscoder: CrossCoder, model_a: LoadedModel, model_b: LoadedModel) -> None:
    """Raise CrossCoderError when the crosscoder was trained on another model pair, layer or tokenizer."""
    crosscoder.config.check_pair(
        model_a.model_id, model_a.layer, model_a.tokenizer_fingerprint,
        model_b.model_id, model_b.layer, model_b.tokenizer_fingerprint,
    )


def token_strings(tokenizer, input_ids: list[int]) -> list[str]:
    """Return each token as the text it stands for (byte pieces decoded as far as possible)."""
    return [tokenizer.decode([i]) for i in input_ids]


@torch.no_grad()
def diff_prompt(crosscoder: CrossCoder, model_a: LoadedModel, model_b: LoadedModel, prompt: str, top: int = 10) -> dict:
    """Return, for each model, its tokens and the strongest exclusive latents that fire on the prompt.

    The result has the shape `{"model_a": {"tokens": [...], "exclusive": [{"latent", "activation",
    "label"}, ...]}, "model_b": {...}, "paired": n}`; activations are the maximum over paired tokens.
    """
    if not prompt or not prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    check_models(crosscoder, model_a, model_b)
    tok_a, tok_b, alignment = align_text(model_a.tokenizer, model_b.tokenizer, prompt, max_tokens=MAX_PROMPT_TOKENS)
    if len(tok_a.input_ids) >= MAX_PROMPT_TOKENS:
        log.warning("prompt truncated to its first %d tokens", MAX_PROMPT_TOKENS)
    result = {
        "model_a": {"model": model_a.model_id, "tokens": token_strings(model_a.tokenizer, tok_a.input_ids), "exclusive": []},
        "model_b": {"model": model_b.model_id, "tokens": token_strings(model_b.tokenizer, tok_b.input_ids), "exclusive": []},
        "paired": int(len(alignment.pos_a)),
    }
    if len(alignment.pos_a) == 0:
        return result
    acts_a = model_a.activations(torch.tensor([tok_a.input_ids]))[0, torch.as_tensor(alignment.pos_a)]
    acts_b = model_b.activations(torch.tensor([tok_b.input_ids]))[0, torch.as_tensor(alignment.pos_b)]
    cc_device = next(crosscoder.parameters()).device
    f_PF = crosscoder.encode(acts_a.to(cc_device), acts_b.to(cc_device)).float().cpu()
    for side, block in (("model_a", crosscoder.slice_a_exclusive), ("model_b", crosscoder.slice_b_exclusive)):
        peak_L = f_PF[:, block].amax(0) if f_PF.shape[0] else torch.zeros(0)
        order = torch.argsort(peak_L, descending=True)
        for j in order[:top].tolist():
            if peak_L[j] <= 0:
                break
            latent = block.start + j
            result[side]["exclusive"].append(
                {"latent": latent, "activation": float(peak_L[j]), "label": f"{crosscoder.block_of(latent)} latent {latent}"}
            )
    return result
