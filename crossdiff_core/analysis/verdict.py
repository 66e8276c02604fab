"""A verdict on every feature presented as specific to one model, with its reason in plain words.

The classes, checked in this order (the first that applies is the verdict):

- `rare`: too rare to tell: it fired on too few tokens or in too few texts to judge (of the texts the index
  read: a latent that did not fire there may still fire on a prompt);
- `tokenizer`: likely a tokenizer effect: most of its activation sits on text the two tokenizers cut
  differently (one model reads a word as several tokens, the other as one), far above how often that
  happens overall;
- `copy`: likely a copy of a shared feature: the other model's activations predict it linearly
  (transfer R² high, or nearly as high as from its own model's activations), or, for the one-model
  part of a shared latent, that part is small (or, for a model and its fine-tune, the two models'
  activations barely differ where it fires);
- `unstable`: unstable across seeds: crosscoders trained with other seeds have no latent with a
  similar decoder direction (only judged when other seeds were trained);
- `real`: likely a real difference: alive, not a tokenizer artefact, not linearly predictable from
  the other model (or a large one-model part that the other model's geometry does not explain), and
  stable where that was measured.

The thresholds live in `VerdictThresholds`; the organism benchmark (`benchmarks/organisms`) chose
them on some organisms and reports them on the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

VERDICTS = {
    "real": "likely a real difference",
    "tokenizer": "likely a tokenizer effect",
    "copy": "likely a copy of a shared feature",
    "unstable": "unstable across seeds",
    "rare": "too rare to tell",
}
"""Verdict code → the words shown to the user."""


@dataclass(frozen=True)
class VerdictThresholds:
    """Where each verdict starts (chosen on calibration organisms, see benchmarks/organisms/RESULTS.md)."""

    min_fires: int = 20
    """Fewer firing tokens than this: too rare to tell."""

    min_contexts: int = 3
    """Fired in fewer distinct texts than this: too rare to tell."""

    tokenizer_share: float = 0.5
    """A tokenizer effect needs at least this share of its activation on differently cut text ..."""

    tokenizer_excess: float = 2.0
    """... and at least this multiple of the share over all text."""

    max_transfer_r2: float = 0.5
    """An exclusive latent the other model predicts with R² above this is a copy of a shared feature."""

    copy_ratio: float = 0.9
    """... and so is one the other model predicts at least this fraction as well as its own model does."""

    min_component: float = 0.5
    """A shared latent's one-model part must be at least this fraction of its decoder to count (else a copy)."""

    component_z: float = 3.0
    """... and this many robust standard deviations above the median part of the other shared latents ..."""

    min_component_latents: int = 10
    """... of which there must be at least this many (fewer: no shared latent is presented)."""

    min_shift: float = 1.0
    """A shared latent of a model and its fine-tune is presented as a change when its context shift (the consistent
    difference of the two models' activations where it fires, `evidence.ContextShift`) is at least this many times
    the mean difference per token, and `component_z` robust standard deviations above the other shared latents'."""

    min_seed_cosine: float = 0.7
    """A latent is stable when another seed's crosscoder has a latent with at least this decoder cosine."""


DEFAULT_THRESHOLDS = VerdictThresholds()


@dataclass(frozen=True)
class Verdict:
    """One feature's verdict: its code, the words shown, and why."""

    code: str
    label: str
    reason: str

    def to_dict(self) -> dict:
        """Return the verdict as a JSON-ready dict."""
        return asdict(self)


def judge(
    arrays: dict[str, np.ndarray],
    latent: int,
    split_base_rate: float,
    component: float | None = None,
    seed_cosine: float | None = None,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    shift: float | None = None,
) -> Verdict:
    """Return the verdict on `latent` from the index arrays (see module docstring).

    `component` is the one-model part of a shared latent (`‖r‖/‖d‖`, None for an exclusive latent);
    `shift` is the context shift of a shared latent of a model and its fine-tune (then `component` is None);
    `seed_cosine` is the best decoder cosine with another seed's crosscoder (None when not measured).
    """
    t = thresholds
    fires = int(arrays["n_fires"][latent])
    contexts = int(arrays["n_contexts"][latent])
    if fires < t.min_fires or contexts < t.min_contexts:
        needed = f"at least {t.min_fires} tokens in {t.min_contexts} texts are needed"
        if fires == 0:
            return _verdict(
                "rare",
                f"it did not fire on the texts the feature index read, so there is nothing to judge it by ({needed})",
            )
        return _verdict(
            "rare",
            f"on the texts the feature index read it fired on only {fires} tokens in {contexts} texts, "
            f"too few to judge ({needed})",
        )
    share = _value(arrays, "split_share", latent)
    if share is not None and share >= t.tokenizer_share and share >= t.tokenizer_excess * max(split_base_rate, 1e-9):
        return _verdict(
            "tokenizer",
            f"{share:.0%} of its activation is on words the two models' tokenizers cut "
            f"differently, against {split_base_rate:.0%} of all text: it probably "
            "reflects how the models split words, not what they know",
        )
    if shift is not None:
        if shift < t.min_shift:
            return _verdict(
                "copy",
                f"where it fires the two models' activations differ little ({shift:.1f}× the "
                "typical difference): both hold it the same way",
            )
    elif component is None:
        r2 = _value(arrays, "transfer_r2", latent)
        own = _own_r2(arrays, latent)
        if r2 is not None and r2 > t.max_transfer_r2:
            return _verdict(
                "copy",
                f"the other model's activations predict it well (R² {r2:.2f}): the other "
                "model holds the same information, so it is probably a shared feature",
            )
        if r2 is not None and own is not None and own > MIN_OWN_R2 and r2 >= t.copy_ratio * own:
            return _verdict(
                "copy",
                f"the other model's activations predict it about as well as its own model's do "
                f"(R² {r2:.2f} against {own:.2f}), so it is probably a shared feature",
            )
    elif component < t.min_component:
        return _verdict(
            "copy",
            f"only {component:.0%} of what it writes into this model is not explained by "
            "the other model's version of the same feature",
        )
    if seed_cosine is not None and seed_cosine < t.min_seed_cosine:
        return _verdict(
            "unstable",
            f"crosscoders trained with other random seeds found nothing like it "
            f"(best match {seed_cosine:.2f}, {t.min_seed_cosine} needed)",
        )
    if shift is not None:
        why = (
            f"a concept both models hold, but wherever it fires their activations differ in the same way "
            f"({shift:.1f}× the typical difference between them): one of them changed how it writes it"
        )
    elif component is None:
        r2 = _value(arrays, "transfer_r2", latent)
        why = (
            "the other model cannot predict it (R² unmeasured)"
            if r2 is None
            else f"the other model cannot predict it (R² {r2:.2f})"
        )
    else:
        why = f"{component:.0%} of what it writes into this model has no counterpart in the other model"
    stable = "" if seed_cosine is None else f", and other seeds find it too (match {seed_cosine:.2f})"
    return _verdict("real", f"it fired on {fires} tokens in {contexts} texts, {why}{stable}")


MIN_OWN_R2 = 0.05
"""Below this R² from its own model's activations, a latent is too non-linear for the ratio test."""


def _own_r2(arrays: dict[str, np.ndarray], latent: int) -> float | None:
    if "owner" not in arrays:
        return None
    side = "a" if int(arrays["owner"][latent]) == 0 else "b"
    return _value(arrays, f"transfer_r2_from_{side}", latent)


def _verdict(code: str, reason: str) -> Verdict:
    return Verdict(code, VERDICTS[code], reason[0].upper() + reason[1:] + ".")


def _value(arrays: dict[str, np.ndarray], name: str, latent: int) -> float | None:
    if name not in arrays:
        return None
    value = float(arrays[name][latent])
    return None if math.isnan(value) else value
