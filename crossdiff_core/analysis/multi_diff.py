"""What each of N models holds on one prompt: an N-model crosscoder's latents that fire, one column per model.

Every model tokenizes the prompt; at the positions where all the tokenizers split it cleanly (`align_many`) each model
runs and the crosscoder encodes the N activations together (attention-sink outliers dropped in any model drop the
position, as in the harvest). A latent's *share* in model m is its decoder norm for m over its largest decoder norm
in any model: 0 means it writes nothing to m. Each column lists, ranked by peak activation × what the latent writes:

- *only in this model*: latents of the model's own exclusive block that fire (they read and write this model alone),
  and shared latents that fire with a share below `ABSENT_SHARE` in every other model;
- *missing only in this model*: shared latents that fire with a share below `ABSENT_SHARE` in this model and at least
  that in every other one (for two models, what is only in the other one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from crossdiff_core.activations.config import OUTLIER_FACTOR
from crossdiff_core.activations.paired import model_rows
from crossdiff_core.alignment import align_many_texts
from crossdiff_core.crosscoder.multi import MultiCrossCoder
from crossdiff_core.models import LoadedModel

ABSENT_SHARE = 0.1
"""A latent whose decoder norm for a model is below this share of its largest one counts as absent from that model."""
CONTEXT_CHARS = 24
"""Characters of the prompt shown up to the token where a latent peaks."""


@dataclass
class MultiHit:
    """A latent that fires on the prompt, as one model's column lists it."""

    latent: int
    block: str
    """"shared" or "model-m-exclusive"."""
    activation: float
    """Its largest activation on the prompt."""
    n_tokens: int
    """Paired positions where it fires."""
    context: str
    """The prompt's text up to the position where it peaks (the last `CONTEXT_CHARS` characters)."""
    share: list[float]
    """Per model, its decoder norm over its largest one (0: writes nothing to that model)."""


@dataclass
class ModelColumn:
    """One model's column of an N-model prompt diff."""

    model: str
    n_tokens: int
    coverage: float
    """Share of this model's tokens at positions all the models share."""
    only_here: list[MultiHit] = field(default_factory=list)
    missing_only_here: list[MultiHit] = field(default_factory=list)


@dataclass
class MultiPromptDiff:
    """An N-model crosscoder's reading of one prompt, one column per model."""

    prompt: str
    paired: int
    """Positions where all the models' tokenizers split the prompt cleanly (outliers dropped)."""
    columns: list[ModelColumn]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (what `diff --json` prints)."""
        return asdict(self)


@torch.no_grad()
def diff_many(
    crosscoder: MultiCrossCoder,
    models: list[LoadedModel],
    prompt: str,
    top: int = 10,
    outlier_factor: float = OUTLIER_FACTOR,
) -> MultiPromptDiff:
    """Return what each of `models` (in the crosscoder's model order) holds on `prompt`: at most `top` latents per
    list of each column (see the module docstring)."""
    if len(models) != crosscoder.n_models:
        raise ValueError(f"the crosscoder reads {crosscoder.n_models} models, got {len(models)}")
    toks, alignment = align_many_texts([m.tokenizer for m in models], [prompt])[0]
    columns = [ModelColumn(model.model_id, n, c) for model, n, c in zip(models, alignment.n_tokens, alignment.coverage)]
    if not len(alignment.char_end):
        return MultiPromptDiff(prompt, 0, columns, ["the models' tokenizers share no split point in this prompt: "
                                                    "type a longer text"])  # fmt: skip
    xs, keep = model_rows(models, [[t.input_ids] for t in toks], [[p] for p in alignment.positions], outlier_factor)
    f_PF = crosscoder.encode([x[keep].to(crosscoder.b_enc.dtype) for x in xs]).float()
    ends = torch.as_tensor(alignment.char_end)[keep]
    norms_NF = crosscoder.decoder_norms().float()
    share_NF = norms_NF / norms_NF.amax(0).clamp_min(1e-12)
    absent_NF = share_NF < ABSENT_SHARE
    peak_F, at_F = f_PF.max(0) if f_PF.shape[0] else (torch.zeros(crosscoder.dict_size), None)
    fired_F = peak_F > 0
    shared_F = torch.zeros(crosscoder.dict_size, dtype=torch.bool)
    shared_F[crosscoder.slice_shared] = True
    names = crosscoder.block_names()
    for m, column in enumerate(columns):
        others = [j for j in range(crosscoder.n_models) if j != m]
        own_F = torch.zeros_like(shared_F)
        own_F[crosscoder.slice_exclusive(m)] = True
        only_F = fired_F & (own_F | (shared_F & absent_NF[others].all(0)))
        missing_F = fired_F & shared_F & absent_NF[m] & ~absent_NF[others].any(0)
        column.only_here = _hits(only_F, peak_F * norms_NF[m], f_PF, at_F, ends, share_NF, names, prompt, top)
        column.missing_only_here = _hits(missing_F, peak_F * norms_NF[others].amax(0), f_PF, at_F, ends, share_NF,
                                         names, prompt, top)  # fmt: skip
    return MultiPromptDiff(prompt, int(keep.sum()), columns)


def _hits(chosen_F, score_F, f_PF, at_F, ends, share_NF, names, prompt: str, top: int) -> list[MultiHit]:
    """Return the `top` chosen latents by score, as `MultiHit`s."""
    latents = chosen_F.nonzero().squeeze(1)
    order = latents[torch.argsort(score_F[latents], descending=True)][:top]
    hits = []
    for j in order.tolist():
        end = int(ends[at_F[j]])
        hits.append(MultiHit(
            latent=j, block=names[j], activation=float(f_PF[at_F[j], j]), n_tokens=int((f_PF[:, j] > 0).sum()),
            context=prompt[max(0, end - CONTEXT_CHARS) : end], share=[round(float(s), 3) for s in share_NF[:, j]],
        ))  # fmt: skip
    return hits
