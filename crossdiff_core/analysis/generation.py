"""Generate text from one loaded model: prompt encoding (plain or through its chat template) and decoding."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from crossdiff_core.activations.paired import pad_id
from crossdiff_core.analysis.chat import check_messages, render_chat
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import LoadedModel


def prompt_ids(model: LoadedModel, prompt: str | Sequence[dict], chat: bool = False) -> torch.Tensor:
    """Return the `[1, T]` input ids of a prompt: plain text, or (chat, or a message list) the model's chat rendering.

    Chat prompts end with the template's generation prompt (the plain fallback's `Assistant:` line for a
    tokenizer without a template).
    """
    if isinstance(prompt, str) and not chat:
        if not prompt.strip():
            raise CrossDiffError("the prompt is empty: type some text for the model to continue")
        ids = model.tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        messages = check_messages([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt))
        rendered = render_chat(model.tokenizer, messages, add_generation_prompt=True)
        ids = model.tokenizer(rendered.text, add_special_tokens=not rendered.used_template)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


@torch.no_grad()
def generate_text(
    model: LoadedModel, input_ids_1T: torch.Tensor, max_new_tokens: int, greedy: bool = True, seed: int = 0
) -> str:
    """Return the text the model generates after `input_ids_1T` (greedy, or sampled with a fixed `seed`)."""
    if max_new_tokens < 1:
        raise CrossDiffError(f"max_new_tokens={max_new_tokens} must be at least 1")
    ids = input_ids_1T.to(model.device)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": not greedy, "pad_token_id": pad_id(model.tokenizer)}
    if greedy:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        torch.manual_seed(seed)
    out = model.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return model.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
