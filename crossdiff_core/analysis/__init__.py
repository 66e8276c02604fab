"""Analysis engine: turns a trained crosscoder into answers a person can read. The app and the CLI call it.

One module per concept:

- `prompt_diff.diff` — per model, every token of a prompt (plain or chat) with its active latents,
  block and exclusivity score, and a ranked summary of the model's exclusive latents that fired.
- `chat` — each model reads a conversation through its own chat template (plain `User: …` fallback);
  pairing runs on the message content.
- `index_builder.build_index` / `index.load_index` (built as `config.IndexConfig` says) — per-latent evidence stored next to the crosscoder in
  `feature_index/` (safetensors arrays + JSON): frequency, activations and their histogram, decoder
  norms, top contexts with per-token activations, promoted/suppressed tokens, scores, labels.
- `histogram` — a latent's activation histogram from the index, and its matplotlib figure for the app.
- `scores` — ranking of exclusive latents: alive (seen in enough windows) but not dense, strong
  consistent contexts, low transfer, no shrinkage flag; latents that never fired rank last. `stats`
  computes transfer R² (ridge regression from the other model) and Latent Scaling (Minder et al. 2025).
- `labels` / `explain` — short labels from evidence; optional one-line explanations by a chat model.
- `detection` / `heldout` / `explanation_scores` — how well an explanation predicts where its latent fires: a scorer
  model judges, from the explanation alone, held-out texts where the latent fires and texts where it is silent
  (AUROC, 0.5 chance); `explain_and_score` keeps both in the index, next to a shuffled-explanation baseline.
- `steering.steer` — add or remove a latent's decoder direction in its model while it generates;
  `steering.steer_readable` picks the strongest strength whose text stays readable.
- `report.write_report` — HTML + Markdown screening report, PNG histograms, CSV of all latents.

Scores (one sentence each; the same text is stored in every index and in SCORES.md):

- frequency / n_fires / n_contexts: how often the latent fired on the index corpus's paired tokens,
  and in how many distinct windows.
- mean_activation / max_activation: its mean activation when firing, and its largest.
- dec_norm_a / dec_norm_b / relative_norm: its decoder norms per model, and ‖d_b‖ / (‖d_a‖ + ‖d_b‖).
- owner: the model it belongs to (its exclusive block, else the larger decoder norm).
- transfer_r2 (and _from_a / _from_b): test R² of a ridge regression predicting it from the
  other model's paired activations; near 0 means the other model holds no linear trace of it (NaN when
  it fired on too few test tokens to tell).
- ls_error_* / ls_recon_* / nu_error / nu_recon: Latent Scaling scales of its unit decoder direction
  in each model's error and reconstruction, and their other/own ratios ν^ε and ν^r; high ratios flag
  latents that look exclusive only through shrinkage or decoupling (formulas in SCORES.md).
- score_alive, score_not_dense, score_consistency, score_strength, score_specificity, score_shrinkage:
  the factors of rank_score = alive · not_dense · (consistency + strength) / 2 · specificity · shrinkage.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossdiff_core.analysis.config import IndexConfig

if TYPE_CHECKING:
    from crossdiff_core.activations.paired import ModelPair
    from crossdiff_core.analysis.explain import Explanation, explain_latents
    from crossdiff_core.analysis.histogram import ActivationHistogram, histogram_figure
    from crossdiff_core.analysis.index import FeatureIndex, LatentCard, has_index, index_dir, load_index
    from crossdiff_core.analysis.index_builder import IndexProgress, build_index, load_or_build_index
    from crossdiff_core.analysis.prompt_diff import PromptDiff, diff
    from crossdiff_core.analysis.report import ReportFiles, write_report
    from crossdiff_core.analysis.scores import SCORE_DOCS
    from crossdiff_core.analysis.steering import SteerResult, steer, steer_readable
    from crossdiff_core.crosscoder.model import check_models

_LAZY = {
    "ModelPair": "crossdiff_core.activations.paired",
    "Explanation": "crossdiff_core.analysis.explain", "explain_latents": "crossdiff_core.analysis.explain",
    "ActivationHistogram": "crossdiff_core.analysis.histogram", "histogram_figure": "crossdiff_core.analysis.histogram",
    "FeatureIndex": "crossdiff_core.analysis.index", "LatentCard": "crossdiff_core.analysis.index",
    "has_index": "crossdiff_core.analysis.index", "index_dir": "crossdiff_core.analysis.index",
    "load_index": "crossdiff_core.analysis.index",
    "IndexProgress": "crossdiff_core.analysis.index_builder", "build_index": "crossdiff_core.analysis.index_builder",
    "load_or_build_index": "crossdiff_core.analysis.index_builder",
    "PromptDiff": "crossdiff_core.analysis.prompt_diff", "diff": "crossdiff_core.analysis.prompt_diff",
    "ReportFiles": "crossdiff_core.analysis.report", "write_report": "crossdiff_core.analysis.report",
    "SCORE_DOCS": "crossdiff_core.analysis.scores",
    "SteerResult": "crossdiff_core.analysis.steering", "steer": "crossdiff_core.analysis.steering",
    "steer_readable": "crossdiff_core.analysis.steering",
    "check_models": "crossdiff_core.crosscoder.model",
}  # fmt: skip
"""Public names imported on first use (they import torch), and the module that defines each: `IndexConfig` alone
is imported at once, so that the CLI's parser reads its defaults without torch."""

__all__ = [
    "SCORE_DOCS", "ActivationHistogram", "Explanation", "FeatureIndex", "IndexConfig", "IndexProgress", "LatentCard",
    "ModelPair", "PromptDiff", "ReportFiles", "SteerResult", "build_index", "check_models", "diff", "explain_latents",
    "has_index", "histogram_figure", "index_dir", "load_index", "load_or_build_index", "steer", "steer_readable",
    "write_report",
]  # fmt: skip


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
