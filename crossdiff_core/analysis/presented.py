"""Which features CrossDiff presents as specific to one model, best first, and how to score one on probes.

A feature is presented as specific to model `side` when it is one of that model's exclusive latents
(a DFC block, or a standard-crosscoder latent beyond the relative-norm cut), or when it is a shared
latent whose one-model part (`components.one_model_components`) is attributed to that model. Both
kinds are ranked by the index's evidence: exclusive latents by `rank_score`; shared latents by the
same factors with the one-model fraction in place of the transfer specificity (the other model
predicting a shared latent is expected, not a flaw), and the two lists are merged by score.

For a model and its fine-tune (`blocks.same_basis`), shared latents are presented by their context
shift instead (`evidence.ContextShift`: how much, and how consistently, the two models' activations
differ where the latent fires), read from the activations, with no map between the models to fit.
A difference has no owner in a shared basis (B adding a direction is A lacking it), so such a latent
is presented for both models, as a change between them.
"""

from __future__ import annotations

import numpy as np
import torch

from crossdiff_core.analysis.blocks import SIDES, same_basis
from crossdiff_core.analysis.components import one_model_components, rank_components
from crossdiff_core.analysis.scores import rank_order
from crossdiff_core.analysis.verdict import DEFAULT_THRESHOLDS, VerdictThresholds
from crossdiff_core.crosscoder import CrossCoder


def component_score(arrays: dict[str, np.ndarray], latents: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Return the ranking score of shared latents presented through their one-model part."""
    base = (
        arrays["score_alive"] * arrays["score_not_dense"] * (arrays["score_consistency"] + arrays["score_strength"]) / 2
    )
    return base[latents].astype(np.float64) * fractions


def component_arrays(crosscoder: CrossCoder, alive_F: np.ndarray) -> tuple[dict[str, np.ndarray], float | None]:
    """Return the one-model component arrays and the median component of the latents the map was fitted on.

    `component_fraction` (float32 `[F]`): for each latent with a decoder in both models, the fraction of its
    decoder in the model its component is attributed to that the other model's decoder does not predict
    (NaN for latents not scored); `component_side` (int8 `[F]`): that model (0 = A, 1 = B) for the latents
    `rank_components` ranks (alive, not one-sided), -1 for the others. The median (None when nothing was
    fitted) describes how well the map explains typical shared latents.
    """
    F = crosscoder.dict_size
    fraction_F = np.full(F, np.nan, dtype=np.float32)
    side_F = np.full(F, -1, dtype=np.int8)
    components = one_model_components(
        crosscoder, torch.as_tensor(np.asarray(alive_F, dtype=bool)), same_basis=same_basis(crosscoder)
    )
    latents_L = components["latents"].numpy()
    if len(latents_L) == 0:
        return {"component_fraction": fraction_F, "component_side": side_F}, None
    in_b_L = components["component_in_b"].numpy()
    fraction_F[latents_L] = np.where(
        in_b_L, components["component_fraction_b"].numpy(), components["component_fraction_a"].numpy()
    )
    for code, side in enumerate(SIDES):
        side_F[rank_components(components, side)[0].numpy()] = code
    fitted_L = components["fitted"].numpy()
    typical = float(np.median(fraction_F[latents_L[fitted_L]])) if fitted_L.any() else None
    return {"component_fraction": fraction_F, "component_side": side_F}, typical


def component_cutoff(arrays: dict[str, np.ndarray], thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> float | None:
    """Return the one-model fraction from which a shared latent is presented, or None when none is.

    A component must stand out from those of the other shared latents: at least `min_component`, and
    `component_z` robust standard deviations (1.4826 × MAD) above their median. When the two models'
    shared directions are not linearly related (or too few latents were fitted), nearly every shared
    latent shows a large "component", the cutoff reaches 1, and none is presented.
    """
    if "component_side" not in arrays or "component_fraction" not in arrays:
        return None
    values = arrays["component_fraction"][arrays["component_side"] >= 0].astype(np.float64)
    values = values[np.isfinite(values)]
    if len(values) < thresholds.min_component_latents:
        return None
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    cutoff = max(thresholds.min_component, median + thresholds.component_z * spread)
    return cutoff if cutoff < 1.0 else None


def shift_cutoff(arrays: dict[str, np.ndarray], thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> float | None:
    """Return the context shift from which a shared latent is presented as a change, or None when not measured.

    At least `min_shift`, and `component_z` robust standard deviations (1.4826 × MAD) above the median
    context shift of the shared latents that fired on at least `min_fires` tokens.
    """
    if "context_shift" not in arrays:
        return None
    shift = arrays["context_shift"].astype(np.float64)
    exclusive = arrays["exclusive_a"].astype(bool) | arrays["exclusive_b"].astype(bool)
    values = shift[np.isfinite(shift) & ~exclusive & (arrays["n_fires"] >= thresholds.min_fires)]
    if len(values) < thresholds.min_component_latents:
        return None
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    return max(thresholds.min_shift, median + thresholds.component_z * spread)


def presented_latents(
    arrays: dict[str, np.ndarray],
    side: str,
    top: int | None = None,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    with_components: bool = True,
) -> list[int]:
    """Return the latents presented as specific to model `side`, best first (at most `top`); see the module docstring.

    Shared latents join when their context shift reaches `shift_cutoff` (a model and its fine-tune, both
    sides), else when their component is attributed to `side` and reaches `component_cutoff`.
    Latents that never fired come last.
    """
    candidates = [np.flatnonzero(arrays[f"exclusive_{side}"]).astype(np.int64)]
    score = arrays["rank_score"].astype(np.float64)
    exclusive = arrays["exclusive_a"].astype(bool) | arrays["exclusive_b"].astype(bool)
    shifts = shift_cutoff(arrays, thresholds) if with_components else None
    cutoff = component_cutoff(arrays, thresholds) if with_components and shifts is None else None
    if shifts is not None:
        shift = arrays["context_shift"].astype(np.float64)
        with np.errstate(invalid="ignore"):
            changed = np.flatnonzero(~exclusive & (shift >= shifts)).astype(np.int64)
        score[changed] = component_score(arrays, changed, shift[changed] / (1.0 + shift[changed]))
        candidates.append(changed)
    if cutoff is not None:
        fraction = arrays["component_fraction"].astype(np.float64)
        with np.errstate(invalid="ignore"):
            chosen = (arrays["component_side"] == SIDES.index(side)) & ~exclusive & (fraction >= cutoff)
        shared = np.flatnonzero(chosen).astype(np.int64)
        score[shared] = component_score(arrays, shared, fraction[shared])
        candidates.append(shared)
    order = rank_order(score, arrays["n_fires"], np.concatenate(candidates))
    return [int(j) for j in order[:top]]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Return the area under the ROC curve of `scores` for boolean `labels` (ties count half; NaN without both)."""
    labels = np.asarray(labels, dtype=bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(np.asarray(scores)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(labels))
    ranks[order] = np.repeat(first + (counts - 1) / 2 + 1, counts)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
