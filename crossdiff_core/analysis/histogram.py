"""How strongly a latent fires: a histogram of its activations, stored in the feature index, and its plot.

The index keeps, per latent, the counts of its positive activations on the index corpus in
`HISTOGRAM_BINS` equal-width bins spanning (0, max_activation] (array `act_hist`); the bin edges follow
from the latent's `max_activation`, so a histogram costs `HISTOGRAM_BINS` integers and the app can draw
it without running a model. `histogram_figure` draws one with matplotlib (no pyplot state, no UI).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTOGRAM_BINS = 20
"""Bins of the stored activation histogram of every latent."""


@dataclass
class ActivationHistogram:
    """A latent's activations on the index corpus, counted in equal-width bins from 0 to its max activation."""

    counts: list[int]
    """Tokens whose activation falls in each bin; they sum to the latent's `n_fires`."""
    edges: list[float]
    """`len(counts) + 1` bin edges from 0 to the max activation; bin b is `[edges[b], edges[b+1])`, the last closed."""

    @classmethod
    def from_index(cls, counts_B: np.ndarray, max_activation: float) -> ActivationHistogram:
        """Return the histogram of one latent from its stored `act_hist` row and `max_activation`."""
        edges = np.linspace(0.0, float(max_activation), len(counts_B) + 1)
        return cls([int(c) for c in counts_B], [float(e) for e in edges])

    @property
    def total(self) -> int:
        """Return the number of tokens counted (the latent's `n_fires`)."""
        return sum(self.counts)


def histogram_figure(histogram: ActivationHistogram, title: str | None = None):
    """Return a matplotlib `Figure` with one bar per bin of `histogram` (activation on x, tokens on y).

    A latent that did not fire on the index's texts gets empty bars and a note saying so. The figure is built
    without pyplot, so it is safe to create from any thread and needs no `close`.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 2.6), layout="constrained")
    ax = fig.add_subplot()
    edges = np.asarray(histogram.edges, dtype=np.float64)
    ax.bar(
        edges[:-1],
        histogram.counts,
        width=np.diff(edges),
        align="edge",
        color="tab:orange",
        edgecolor="white",
        linewidth=0.5,
    )
    if histogram.total == 0:
        ax.text(0.5, 0.5, "did not fire on the texts the index read", transform=ax.transAxes, ha="center", va="center")
    ax.set(
        xlabel="activation",
        ylabel="tokens",
        title=title if title is not None else f"Activation histogram ({histogram.total} tokens)",
    )
    return fig
