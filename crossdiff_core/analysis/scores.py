"""Scores that rank a model's exclusive latents so the top of the list is worth a person's time.

Every score is stored per latent in the feature index (`arrays.safetensors`) and explained in one
sentence in `SCORE_DOCS` (also SCORES.md). The ranking score rewards latents that are alive but not
dense, whose top contexts are strong and consistent, that the other model cannot predict linearly
(low transfer), and, where a latent has decoders in both models, that Latent Scaling does not flag as
exclusive only through shrinkage:

    rank_score = alive · not_dense · (consistency + strength) / 2 · specificity · shrinkage

A latent seen in only a few windows is penalised (`alive` grows with the number of distinct windows
it fired in), a transfer R² measured on too few firing test rows counts as unmeasured (not as
"exclusive"), and `rank_order` puts latents that never fired after every latent that did, whatever
their scores.
"""

from __future__ import annotations

import numpy as np

from crossdiff_core.analysis.stats import MIN_TEST_FIRES

MIN_CONTEXTS = 5
"""A latent that fired in at least this many distinct index windows counts as fully alive."""
DENSE_FROM = 0.05
"""Firing frequency above which a latent starts to count as dense."""
DENSE_AT = 0.5
"""Firing frequency at which a latent counts as fully dense (not_dense = 0)."""

SCORE_DOCS = {
    "frequency": "Fraction of the index's paired tokens on which the latent fired (activation > 0).",
    "n_fires": "Number of the index's paired tokens on which the latent fired.",
    "n_contexts": "Number of distinct index windows in which the latent fired (each gives at most one top context).",
    "mean_activation": "Mean activation over the tokens where the latent fired.",
    "max_activation": "Largest activation seen on the index corpus.",
    "dec_norm_a": (
        "L2 norm of the latent's decoder row for model A in the crosscoder's normalized space (0 if it has none)."
    ),
    "dec_norm_b": (
        "L2 norm of the latent's decoder row for model B in the crosscoder's normalized space (0 if it has none)."
    ),
    "relative_norm": "dec_norm_b / (dec_norm_a + dec_norm_b): 0 writes only to A, 1 only to B, 0.5 equally.",
    "owner": (
        "Model the latent belongs to for transfer and Latent Scaling: 0 = A, 1 = B (its exclusive block, else"
        " the larger decoder norm)."
    ),
    "transfer_r2_from_a": (
        "Test R² of a ridge regression predicting the latent's activation from model A's paired activations."
    ),
    "transfer_r2_from_b": (
        "Test R² of a ridge regression predicting the latent's activation from model B's paired activations."
    ),
    "transfer_r2": (
        "Test R² of predicting the latent from the model that does not own it: near 0 means the other model "
        f"holds no linear trace of it (NaN if it fired on fewer than {MIN_TEST_FIRES} test tokens)."
    ),
    "ls_error_a": (
        "Latent Scaling: least-squares scale of the latent's unit decoder direction in model A's error (own "
        "term put back)."
    ),
    "ls_error_b": "Latent Scaling: the same for model B.",
    "ls_recon_a": (
        "Latent Scaling: least-squares scale of the latent's unit decoder direction in model A's "
        "reconstruction (bias removed)."
    ),
    "ls_recon_b": "Latent Scaling: the same for model B.",
    "nu_error": (
        "ν^ε = ls_error(other) / ls_error(owner): high means the other model's error still carries the latent"
        " (complete shrinkage)."
    ),
    "nu_recon": (
        "ν^r = ls_recon(other) / ls_recon(owner): high means other latents carry it in the other model "
        "(latent decoupling)."
    ),
    "split_share": (
        "Share of the latent's activation mass on tokens the two tokenizers cut differently (a word in several "
        "tokens in one model, one token in the other); compare with the index's split_base_rate."
    ),
    "component_fraction": (
        "One-model component of a latent with a decoder in both models: the fraction of its decoder, in the model "
        "the component is attributed to, that the other model's decoder does not predict (NaN if not scored)."
    ),
    "component_side": (
        "Model its one-model component is attributed to: 0 = A, 1 = B, -1 for none (an exclusive, one-sided or "
        "dead latent)."
    ),
    "context_shift": (
        "For a model and its fine-tune only (NaN otherwise): where the latent fires, the squared length of the "
        "activation-weighted mean of x_b − x_a (centred) over the mean squared difference per token. 0 for identical "
        "models; well above 1 when the models differ in the same way wherever it fires."
    ),
    "score_alive": f"min(1, n_contexts / {MIN_CONTEXTS}): 0 for dead latents, low for latents seen in few windows.",
    "score_not_dense": f"1 up to a frequency of {DENSE_FROM}, falling log-linearly to 0 at {DENSE_AT}.",
    "score_consistency": (
        "Mean of the top-context activations (missing contexts count as 0) divided by the max activation."
    ),
    "score_strength": "Percentile, among latents that fired, of max_activation × the owner's decoder norm.",
    "score_specificity": (
        "1 − transfer_r2 clipped to [0, 1] (0.5 when R² cannot be measured, e.g. too few test fires)."
    ),
    "score_shrinkage": "1 − max(ν^ε, ν^r) clipped to [0, 1] where both models have a decoder row, else 1.",
    "rank_score": (
        "alive · not_dense · (consistency + strength) / 2 · specificity · shrinkage: the ranking key (latents that "
        "never fired rank last)."
    ),
}
"""One sentence per score stored in the feature index."""


def owner_of(
    exclusive_a: np.ndarray, exclusive_b: np.ndarray, dec_norm_a: np.ndarray, dec_norm_b: np.ndarray
) -> np.ndarray:
    """Return the owning model per latent as int8 `[F]` (0 = A, 1 = B): exclusive block, else larger decoder norm."""
    owner = (dec_norm_b > dec_norm_a).astype(np.int8)
    owner[exclusive_a.astype(bool)] = 0
    owner[exclusive_b.astype(bool)] = 1
    return owner


def other_over_own(values_a: np.ndarray, values_b: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Return `value(other model) / value(owner)` per latent (NaN if either is missing or the owner's is ≤ 0)."""
    own = np.where(owner == 0, values_a, values_b)
    other = np.where(owner == 0, values_b, values_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(own > 0, other / own, np.nan).astype(np.float32)


def ranking_scores(arrays: dict[str, np.ndarray], top_n: int) -> dict[str, np.ndarray]:
    """Return the `score_*` components and `rank_score` (float32 `[F]` each) from the index arrays.

    Needs `n_fires`, `n_contexts`, `frequency`, `max_activation`, `top_act` `[F, top_n]`, `dec_norm_a/b`,
    `owner`, `transfer_r2`, `nu_error` and `nu_recon`.
    """
    n_fires = arrays["n_fires"].astype(np.float64)
    freq = arrays["frequency"].astype(np.float64)
    max_act = arrays["max_activation"].astype(np.float64)
    alive = np.clip(arrays["n_contexts"].astype(np.float64) / MIN_CONTEXTS, 0, 1)
    with np.errstate(divide="ignore"):
        log_freq = np.log10(np.maximum(freq, 1e-12))
    not_dense = np.clip((np.log10(DENSE_AT) - log_freq) / (np.log10(DENSE_AT) - np.log10(DENSE_FROM)), 0, 1)
    top_mean = arrays["top_act"][:, :top_n].astype(np.float64).sum(1) / max(top_n, 1)
    consistency = np.where(max_act > 0, top_mean / np.maximum(max_act, 1e-30), 0.0)
    own_norm = np.where(arrays["owner"] == 0, arrays["dec_norm_a"], arrays["dec_norm_b"]).astype(np.float64)
    strength = _percentile(max_act * own_norm, n_fires > 0)
    r2 = arrays["transfer_r2"].astype(np.float64)
    specificity = np.where(np.isnan(r2), 0.5, 1 - np.clip(r2, 0, 1))
    nu = np.fmax(arrays["nu_error"].astype(np.float64), arrays["nu_recon"].astype(np.float64))
    shrinkage = np.where(np.isnan(nu), 1.0, 1 - np.clip(nu, 0, 1))
    rank = alive * not_dense * (consistency + strength) / 2 * specificity * shrinkage
    scores = {
        "score_alive": alive, "score_not_dense": not_dense, "score_consistency": consistency,
        "score_strength": strength, "score_specificity": specificity, "score_shrinkage": shrinkage,
        "rank_score": rank,
    }  # fmt: skip
    return {name: value.astype(np.float32) for name, value in scores.items()}


def _percentile(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Return each masked value's percentile (0..1, ties share the lower rank) among the masked values; 0 elsewhere."""
    out = np.zeros(len(values))
    chosen = values[mask]
    if len(chosen) == 1:
        out[mask] = 1.0
    elif len(chosen) > 1:
        out[mask] = np.searchsorted(np.sort(chosen), chosen, side="left") / (len(chosen) - 1)
    return out


def rank_order(rank_score: np.ndarray, n_fires: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Return the candidate latent ids best first: latents that fired by `rank_score`, then those that never fired.

    A dead latent scores 0, like an alive but fully dense one; without the explicit split, ties broken by id
    would put dead latents among (or above) alive ones. Ties go to the lower id; a NaN score sorts last among
    the alive.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    score = rank_score[candidates].astype(np.float64)
    key = np.where(np.isnan(score), np.inf, -score)
    order = np.lexsort((candidates, key, n_fires[candidates] <= 0))
    return candidates[order]
