"""Diff one prompt: for each model, every token with the latents active there and how exclusive it is.

`diff(crosscoder, pair, prompt)` runs both models on a prompt (plain text, or a chat conversation that
each model reads through its own chat template, see `chat`), pairs their positions, encodes the paired
activations with the crosscoder and returns a `PromptDiff`:

- per model, its tokens (template and unpaired tokens included) and its paired positions;
- per token, the latents that model reads and writes (its exclusive block and the shared one) that are
  active there, with their activation and block, and the token's *exclusivity*:
  `‖Σ_{j exclusive} f_j d_j‖ / (‖Σ_{j exclusive} f_j d_j‖ + ‖Σ_{j other} f_j d_j‖)` over that model's
  decoder rows in the crosscoder's normalized space (bias excluded): the share of the token's
  reconstruction norm that comes from the model's exclusive latents (0 when nothing fires);
- tokens that are not paired (they end where the other tokenizer does not, are chat-template tokens,
  or were dropped as attention-sink outliers) show the values of the nearest paired position to their
  left and are marked `paired=False`; tokens before the first paired position show nothing;
- per model, a summary of its exclusive latents that fired, strongest first, with labels and verdicts
  (`FeatureIndex.verdict`: likely real, tokenizer effect, copy, unstable, too rare) from the feature
  index when one is given, and with `explanations` (`FeatureIndex.explanations`) each one's explanation, its score
  and the name to show (`labels.feature_name`: the explanation only when it scored clear); with `presented` (e.g. `FeatureIndex.presented`), the shared latents
  presented as specific to that model (a large one-model part, or a change between a model and its
  fine-tune) join the summary when they fire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from crossdiff_core.activations.paired import ModelPair, display_strings, run_paired
from crossdiff_core.alignment import TokenizedText, align, tokenize_with_offsets
from crossdiff_core.analysis.blocks import crosscoder_device, decoder_rows, exclusive_latents, model_slice
from crossdiff_core.analysis.chat import check_messages, tokenize_chat
from crossdiff_core.analysis.labels import explanation_parts, feature_name
from crossdiff_core.analysis.lead import lead
from crossdiff_core.analysis.serialize import json_ready
from crossdiff_core.analysis.verdict import Verdict
from crossdiff_core.crosscoder import CrossCoder, check_models
from crossdiff_core.errors import CrossDiffError
from crossdiff_core.models import LoadedModel

log = logging.getLogger(__name__)

MAX_PROMPT_TOKENS = 1024
"""Tokens each model reads at most; longer prompts are cut (with a warning)."""

MAX_CHARS_PER_TOKEN = 64
"""A prompt (or chat message) is cut to `max_tokens` × this many characters before tokenizing, so that a huge
paste costs no more than a long prompt: tokens are far shorter than this, so the cut text is never read anyway."""


@dataclass
class ActiveLatent:
    """A latent active at one position."""

    latent: int
    activation: float
    block: str


@dataclass
class TokenDiff:
    """One token of one model and what the crosscoder sees there."""

    index: int
    """Position in the model's input."""
    text: str
    """What the token shows (the characters it completes, or a special token's name)."""
    start: int
    """Character offset in the text this model reads (its chat rendering in chat mode)."""
    end: int
    special: bool
    """BOS/EOS/chat-template token."""
    paired: bool
    """True when this token is itself a paired position; False when it shows its nearest paired neighbour's values."""
    pair: int | None
    """Index (into the paired positions) whose values this token shows; None before the first paired position."""
    exclusivity: float | None
    """Share of the reconstruction norm from this model's exclusive latents (None when `pair` is None)."""
    latents: list[ActiveLatent] = field(default_factory=list)
    """Active latents this model reads and writes, strongest first."""


@dataclass
class ExclusiveHit:
    """One latent presented as specific to the model (exclusive, or a presented shared latent) that fired on the prompt."""

    latent: int
    activation: float
    """Peak activation over the paired positions."""
    mean_activation: float
    """Mean activation over the positions where it fired."""
    n_tokens: int
    """Paired positions where it fired."""
    peak_token: int
    """Index (in this model's tokens) of the peak."""
    label: str
    name: str
    """What to call it (`labels.feature_name`): its explanation when that scored clear, else its label."""
    explanation: str | None = None
    """The one-line explanation a chat model wrote of it, or None."""
    explanation_score: float = float("nan")
    """How well that explanation predicts where it fires (0.5: chance, 1: perfect; see `detection`), NaN if unscored."""
    verdict: Verdict | None = None
    """Its verdict from the feature index (code, words, reason), or None without an index."""


@dataclass
class ModelDiff:
    """What one model read and which of its latents fired."""

    side: str
    model: str
    text: str
    """The text this model read (its chat rendering in chat mode)."""
    tokens: list[TokenDiff]
    paired_positions: list[int]
    """Token indices of this model that are paired, in order."""
    coverage: float
    """Fraction of this model's non-special tokens that are paired."""
    truncated: bool
    exclusive: list[ExclusiveHit]
    """This model's exclusive latents that fired, strongest first."""


@dataclass
class PromptDiff:
    """The result of `diff`: both models' views of one prompt."""

    mode: str
    """"text" or "chat"."""
    content: str
    """The text both models are paired on (the prompt, or the message contents joined)."""
    model_a: ModelDiff
    model_b: ModelDiff
    paired: int
    """Number of paired positions kept (outliers removed)."""
    char_ends: list[int]
    """Character offset (in `content`) where each paired position ends."""
    warnings: list[str] = field(default_factory=list)
    lead: str = ""
    """What the diff shows and how far to trust it, in plain words (Markdown; `analysis.lead`)."""

    def to_dict(self) -> dict:
        """Return the result as a JSON-serializable dict (keys as the field names)."""
        return json_ready(self)


@torch.no_grad()
def diff(
    crosscoder: CrossCoder,
    pair: ModelPair,
    prompt: str | Sequence[dict],
    *,
    chat: bool = False,
    top: int = 10,
    per_token: int = 8,
    labels: Sequence[str] | None = None,
    max_tokens: int = MAX_PROMPT_TOKENS,
    verdicts: Callable[[int], Verdict | None] | None = None,
    presented: Callable[[str], Sequence[int]] | None = None,
    explanations: Mapping[int, dict] | None = None,
) -> PromptDiff:
    """Return the `PromptDiff` of a prompt: per-token latents and exclusivity, and each model's exclusive latents.

    `prompt` is text, or a list of chat messages (then chat mode is implied); with `chat=True` a text
    prompt becomes one user message. `labels` (one per latent, e.g. `FeatureIndex.labels`) names the
    latents; without it they are called "<block> latent <id>". `explanations` (latent id → stored explanation, e.g.
    `FeatureIndex.explanations`) adds each summarized latent's explanation and score. `verdicts` (latent id → `Verdict`, e.g.
    `FeatureIndex.verdict`) gives each exclusive latent that fired its verdict; `presented` (side → latent ids,
    e.g. `FeatureIndex.presented`) adds the shared latents presented for that side to the summary. Each model reads at most `max_tokens`
    tokens (also capped by its context length); a longer prompt is cut and a warning says so.
    """
    model_a, model_b = pair
    messages = None
    if not isinstance(prompt, str) or chat:
        messages = check_messages([{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt))
    elif not prompt.strip():
        raise CrossDiffError("the prompt is empty: type some text to compare the two models on")
    if labels is not None and len(labels) != crosscoder.dict_size:
        raise CrossDiffError(
            f"got {len(labels)} labels for a crosscoder with {crosscoder.dict_size} latents: "
            "use the feature index built for this crosscoder"
        )
    check_models(crosscoder, model_a, model_b)  # pair, layers, tokenizers and activation widths
    warnings: list[str] = []
    prompt, messages, cut = _cap_characters(prompt, messages, max(1, max_tokens) * MAX_CHARS_PER_TOKEN, warnings)
    views = [_tokenize(model, prompt, messages, max_tokens, warnings) for model in (model_a, model_b)]
    (shown_a, tok_a, truncated_a), (shown_b, tok_b, truncated_b) = views
    truncated_a, truncated_b = truncated_a or cut, truncated_b or cut
    alignment = align(tok_a, tok_b)
    f_PF = torch.zeros(0, crosscoder.dict_size)
    pos_a = pos_b = char_end = np.zeros(0, dtype=np.int64)
    if len(alignment.pos_a):
        run = run_paired(model_a, model_b, [(tok_a, tok_b, alignment)])[0]
        pos_a, pos_b, char_end = run.pos_a, run.pos_b, run.char_end
        if run.n_outliers:
            log.debug("%d paired positions dropped as attention-sink outliers", run.n_outliers)
        device = crosscoder_device(crosscoder)
        f_PF = crosscoder.encode(run.x_a_PD.to(device), run.x_b_PD.to(device)).float().cpu()
    only_special = [m.model_id for m, tok in ((model_a, tok_a), (model_b, tok_b)) if tok.n_content_tokens == 0]
    if len(pos_a) == 0 and only_special:
        warnings.append(
            f"{' and '.join(only_special)} read{'s' if len(only_special) == 1 else ''} this prompt as "
            "special tokens only (BOS/EOS or chat-template markers), which are never compared; "
            "type ordinary text"
        )
    elif len(pos_a) == 0:
        warnings.append(
            "the two models share no token boundary in this prompt, so nothing could be compared; use a longer prompt"
        )
    names = labels if labels is not None else [f"{b} latent {j}" for j, b in enumerate(crosscoder.block_names())]
    sides = []
    for side, model, shown, positions, truncated, coverage in (
        ("a", model_a, shown_a, pos_a, truncated_a, alignment.coverage_a),
        ("b", model_b, shown_b, pos_b, truncated_b, alignment.coverage_b),
    ):
        listed = exclusive_latents(crosscoder, side)
        if presented is not None:
            extra = sorted(set(presented(side)) - set(listed.tolist()))
            listed = torch.cat([listed, torch.as_tensor(extra, dtype=listed.dtype)])
        sides.append(
            _model_diff(
                crosscoder,
                side,
                model,
                shown,
                positions,
                f_PF,
                names,
                top,
                per_token,
                truncated,
                coverage,
                verdicts,
                listed,
                explanations or {},
            )
        )
    result = PromptDiff(
        mode="text" if messages is None else "chat",
        content=tok_a.text,
        model_a=sides[0],
        model_b=sides[1],
        paired=len(pos_a),
        char_ends=[int(e) for e in char_end],
        warnings=warnings,
    )
    result.lead = lead(result)
    return result


def _cap_characters(prompt, messages, max_chars: int, warnings: list[str]):
    """Return `(prompt, messages, cut)`: the text (or each message) cut to `max_chars` characters, warning if cut."""
    if messages is None and len(prompt) > max_chars:
        warnings.append(
            f"the prompt has {len(prompt):,} characters: only its first {max_chars:,} are tokenized "
            "(far more than the models read)"
        )
        return prompt[:max_chars], None, True
    if messages is not None and any(len(m["content"]) > max_chars for m in messages):
        warnings.append(
            f"a message has more than {max_chars:,} characters: only its first {max_chars:,} are "
            "tokenized (far more than the models read)"
        )
        return prompt, [{"role": m["role"], "content": m["content"][:max_chars]} for m in messages], True
    return prompt, messages, False


def _tokenize(model: LoadedModel, prompt, messages, max_tokens: int, warnings: list[str]):
    """Return `(shown, content_tokens, truncated)`: the tokens as the model reads them, in content coordinates."""
    limit = min(max_tokens, _context_length(model))
    if messages is None:
        full = tokenize_with_offsets(model.tokenizer, prompt)
        truncated = len(full.input_ids) > limit
        cut = tokenize_with_offsets(model.tokenizer, prompt, max_tokens=limit) if truncated else full
        shown, content = cut, cut
    else:
        full = tokenize_chat(model.tokenizer, messages)
        truncated = len(full.templated.input_ids) > limit
        cut = tokenize_chat(model.tokenizer, messages, max_tokens=limit) if truncated else full
        shown, content = cut.templated, cut.content
    if truncated:
        message = (
            f"the prompt is longer than {limit} tokens for {model.model_id}: it reads only its first "
            f"{len(shown.input_ids)} tokens, the rest is not compared"
        )
        log.warning(message)
        warnings.append(message)
    return shown, content, truncated


def _context_length(model: LoadedModel) -> int:
    """Return the model's context length (max position embeddings), or a large number when it does not say."""
    config = model.model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text_config, "max_position_embeddings", None) or 1 << 30)


def _model_diff(
    crosscoder,
    side,
    model,
    shown: TokenizedText,
    positions: np.ndarray,
    f_PF: torch.Tensor,
    names,
    top: int,
    per_token: int,
    truncated: bool,
    coverage: float,
    verdicts: Callable[[int], Verdict | None] | None,
    listed_L: torch.Tensor,
    explanations: Mapping[int, dict],
) -> ModelDiff:
    """Return one model's `ModelDiff` from the paired latent activations; `listed_L` are the latents summarized."""
    own = model_slice(crosscoder, side)
    exclusive_L = exclusive_latents(crosscoder, side)
    exclusivity_P = _exclusivity(crosscoder, side, f_PF, exclusive_L)
    blocks = crosscoder.block_names()
    active_per_pair = []
    f_own_PF = f_PF[:, own]
    if f_own_PF.shape[0] and f_own_PF.shape[1]:
        # One batched top-k over all tokens (strongest first) instead of a full sort per token.
        top_PK = torch.topk(f_own_PF, min(per_token, f_own_PF.shape[1]), dim=1)
        for values, latents in zip(top_PK.values.tolist(), top_PK.indices.tolist()):
            active_per_pair.append(
                [
                    ActiveLatent(own.start + j, value, blocks[own.start + j])
                    for value, j in zip(values, latents)
                    if value > 0
                ]
            )
    else:
        active_per_pair = [[] for _ in range(f_own_PF.shape[0])]
    strings = display_strings(model.tokenizer, shown)
    tokens = []
    for index, (text, (start, end), special) in enumerate(zip(strings, shown.offsets, shown.special)):
        k = int(np.searchsorted(positions, index, side="right")) - 1
        has_pair = k >= 0
        tokens.append(TokenDiff(
            index=index, text=text, start=int(start), end=int(end), special=bool(special),
            paired=bool(has_pair and positions[k] == index), pair=k if has_pair else None,
            exclusivity=float(exclusivity_P[k]) if has_pair else None,
            latents=list(active_per_pair[k]) if has_pair else [],
        ))  # fmt: skip
    hits = []
    if len(positions) and len(listed_L):
        f_PL = f_PF[:, listed_L]
        peak_L, arg_L = f_PL.max(0)
        fired_L = (f_PL > 0).sum(0)
        order = torch.argsort(peak_L, descending=True, stable=True)
        for j in order[:top].tolist():
            if peak_L[j] <= 0:
                break
            latent = int(listed_L[j])
            fired = f_PL[:, j][f_PL[:, j] > 0]
            text, score = explanation_parts(explanations.get(latent))
            hits.append(
                ExclusiveHit(
                    latent,
                    float(peak_L[j]),
                    float(fired.mean()),
                    int(fired_L[j]),
                    int(positions[arg_L[j]]),
                    names[latent],
                    feature_name(names[latent], explanations.get(latent)),
                    text or None,
                    score,
                    verdicts(latent) if verdicts is not None else None,
                )
            )
    return ModelDiff(
        side=side,
        model=model.model_id,
        text=shown.text,
        tokens=tokens,
        paired_positions=[int(p) for p in positions],
        coverage=float(coverage),
        truncated=truncated,
        exclusive=hits,
    )


def _exclusivity(crosscoder: CrossCoder, side: str, f_PF: torch.Tensor, exclusive_L: torch.Tensor) -> torch.Tensor:
    """Return `[P]`: the share of each position's reconstruction norm (model `side`, no bias) from exclusive latents."""
    own = model_slice(crosscoder, side)
    W_dec_LD = decoder_rows(crosscoder, side).float().cpu()
    f_PL = f_PF[:, own]
    is_exclusive_L = torch.zeros(f_PL.shape[1], dtype=torch.bool)
    is_exclusive_L[exclusive_L - own.start] = True
    exclusive_PD = f_PL[:, is_exclusive_L] @ W_dec_LD[is_exclusive_L]
    other_PD = f_PL[:, ~is_exclusive_L] @ W_dec_LD[~is_exclusive_L]
    norm_x_P, norm_o_P = exclusive_PD.norm(dim=-1), other_PD.norm(dim=-1)
    total_P = norm_x_P + norm_o_P
    return torch.where(total_P > 0, norm_x_P / total_P.clamp_min(1e-30), torch.zeros_like(total_P))
