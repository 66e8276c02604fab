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
    (new_ids,) = generate_ids(model, input_ids_1T, max_new_tokens, greedy, seed)
    return model.tokenizer.decode(new_ids, skip_special_tokens=True)


@torch.no_grad()
def generate_ids(
    model: LoadedModel, input_ids_BT: torch.Tensor, max_new_tokens: int, greedy: bool = True, seed: int = 0
) -> list[torch.Tensor]:
    """Return the new token ids the model generates after each row of `input_ids_BT`, each cut after its first
    end-of-text token (greedy, or sampled with a fixed `seed`). The rows must have the same length (no padding)."""
    if max_new_tokens < 1:
        raise CrossDiffError(f"max_new_tokens={max_new_tokens} must be at least 1")
    ids = input_ids_BT.to(model.device)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": not greedy, "pad_token_id": pad_id(model.tokenizer)}
    if greedy:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        torch.manual_seed(seed)
    out = model.model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    stops = set(_eos_ids(model))
    rows = []
    for row in out[:, ids.shape[1] :].cpu():
        ends = [i for i, token in enumerate(row.tolist()) if token in stops]
        rows.append(row[: ends[0] + 1] if ends else row)
    return rows


def _eos_ids(model: LoadedModel) -> list[int]:
    """Return the ids that end a generation: the generation config's end-of-text ids, else the tokenizer's."""
    config = getattr(model.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = model.tokenizer.eos_token_id
    if eos is None:
        return []
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


@torch.no_grad()
def continuation_perplexities(
    model: LoadedModel, input_ids_1T: torch.Tensor, continuations: list[torch.Tensor]
) -> list[float]:
    """Return the perplexity of each continuation (new token ids) after the prompt, under `model` as it is now.

    Perplexity is exp(mean negative log-likelihood) of the continuation's tokens given the prompt and the tokens
    before them: 1 when the model was sure of every token, about the vocabulary size for random tokens. All
    continuations are scored in one batch (padded on the right, padding masked). An empty continuation is NaN.
    """
    prompt = input_ids_1T[0].cpu()
    longest = max((len(c) for c in continuations), default=0)
    if longest == 0:
        return [float("nan")] * len(continuations)
    pad = pad_id(model.tokenizer)
    ids_BT = torch.full((len(continuations), len(prompt) + longest), pad, dtype=torch.long)
    mask_BT = torch.zeros_like(ids_BT)
    for row, new in enumerate(continuations):
        ids_BT[row, : len(prompt)] = prompt
        ids_BT[row, len(prompt) : len(prompt) + len(new)] = new
        mask_BT[row, : len(prompt) + len(new)] = 1
    logits = model.model(ids_BT.to(model.device), attention_mask=mask_BT.to(model.device)).logits
    logp_BNV = torch.log_softmax(logits[:, len(prompt) - 1 : -1].float(), dim=-1).cpu()
    nll_BN = -logp_BNV.gather(-1, ids_BT[:, len(prompt) :, None])[..., 0]
    out = []
    for row, new in enumerate(continuations):
        n = len(new)
        out.append(float(torch.exp(nll_BN[row, :n].mean())) if n else float("nan"))
    return out
