"""Top activating contexts of a latent, as each model tokenized them, with per-token activations.

The feature index stores every corpus window once (`windows.json`: text, both tokenizations, paired
positions) and, per latent and context, the window, the peak's paired position, and the latent's
activations on a crop of paired positions around the peak (`ctx_acts`). `build_context` turns that
into a `Context`: the crop's text and each model's tokens, where a paired token carries the latent's
activation and an unpaired one carries None (the crosscoder only reads paired positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ContextToken:
    """One token of a context as one model cut it."""

    text: str
    activation: float | None
    """The latent's activation at this token (None: not a paired position, so not measured)."""
    peak: bool
    """True for the token where the context's activation peaks."""


@dataclass
class Context:
    """One top activating context of a latent."""

    window: int
    """Index of the corpus window (in the feature index's window list)."""
    activation: float
    """Peak activation in this context."""
    text: str
    """The cropped text."""
    tokens_a: list[ContextToken]
    tokens_b: list[ContextToken]

    def marked(self, side: str = "a") -> str:
        """Return the text with the peak token of model `side` wrapped in `[[ ]]`."""
        tokens = self.tokens_a if side == "a" else self.tokens_b
        return "".join(f"[[{t.text}]]" if t.peak else t.text for t in tokens)


def crop_span(pairs: list, start: int, width: int) -> tuple[int, int]:
    """Return the characters `(lo, hi)` of a window's text that the paired positions `start .. start + width - 1`
    cover (`pairs` as stored: `[pos_a, pos_b, char_end]`): from the end of the pair before to the end of the last."""
    stop = min(start + width, len(pairs))
    lo = pairs[start - 1][2] if start > 0 else 0
    return lo, pairs[stop - 1][2] if stop > start else lo


def build_context(
    window: dict, window_index: int, peak: int, start: int, acts_C: np.ndarray, activation: float
) -> Context:
    """Return the `Context` of a window record from the peak's paired index, the crop start and its activations."""
    pairs = window["pairs"]
    stop = min(start + len(acts_C), len(pairs))
    lo, hi = crop_span(pairs, start, len(acts_C))
    views = []
    for side, column in (("a", 0), ("b", 1)):
        by_position = {pairs[i][column]: float(acts_C[i - start]) for i in range(start, stop)}
        peak_position = pairs[peak][column]
        tokens = []
        for position, (shown, tok_start, tok_end, special) in enumerate(window[side]):
            if special or not lo < tok_end <= hi:
                continue
            tokens.append(ContextToken(shown, by_position.get(position), position == peak_position))
        views.append(tokens)
    return Context(window_index, activation, window["text"][lo:hi], views[0], views[1])
