"""Diff one prompt from the CLI: which latents fire for each model, as a JSON-ready dict.

The engine is `crossdiff_core.analysis.prompt_diff`; this module keeps the CLI's entry point. The dict
has `model_a` / `model_b`, each with `tokens` (per-token dicts), `exclusive` (`[{latent, activation,
label, verdict: {code, label, reason} or None, ...}]`, strongest first) and more; see `PromptDiff`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crossdiff_core.analysis.pairing import check_models
from crossdiff_core.analysis.prompt_diff import MAX_PROMPT_TOKENS, diff
from crossdiff_core.analysis.verdict import Verdict
from crossdiff_core.crosscoder import CrossCoder
from crossdiff_core.models import LoadedModel

__all__ = ["MAX_PROMPT_TOKENS", "check_models", "diff_prompt"]


def diff_prompt(
    crosscoder: CrossCoder,
    model_a: LoadedModel,
    model_b: LoadedModel,
    prompt: str | Sequence[dict],
    top: int = 10,
    chat: bool = False,
    labels: Sequence[str] | None = None,
    verdicts: Callable[[int], Verdict | None] | None = None,
    presented: Callable[[str], Sequence[int]] | None = None,
) -> dict:
    """Return `diff(...).to_dict()`: both models' tokens, per-token latents and their exclusive latents that fired
    (with their verdicts when `verdicts`, e.g. `FeatureIndex.verdict`, is given; with `presented`, e.g.
    `FeatureIndex.presented`, also the shared latents presented as specific to a model)."""
    return diff(crosscoder, (model_a, model_b), prompt, chat=chat, top=top, labels=labels,
                verdicts=verdicts, presented=presented).to_dict()
