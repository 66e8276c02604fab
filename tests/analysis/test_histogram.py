"""Activation histograms: stored per latent in the feature index, on every card, and drawn as a figure."""

from __future__ import annotations

import numpy as np

from crossdiff_core.analysis import ActivationHistogram, histogram_figure
from crossdiff_core.analysis.histogram import HISTOGRAM_BINS


def test_real_index_histograms_count_every_firing_token(real_index):
    arrays = real_index.arrays
    hist = arrays["act_hist"]
    assert hist.shape == (real_index.dict_size, HISTOGRAM_BINS) and hist.dtype == np.int32
    np.testing.assert_array_equal(hist.sum(1), arrays["n_fires"])
    alive = np.flatnonzero(arrays["n_fires"] > 0)
    assert len(alive) > 10 and (hist[alive, -1] >= 1).all()  # the max activation lands in the last bin
    for latent in alive:  # each top context's peak lies in a bin that counted something
        peaks = arrays["top_act"][latent][arrays["top_window"][latent] >= 0]
        bins = np.minimum((peaks / arrays["max_activation"][latent] * HISTOGRAM_BINS).astype(int), HISTOGRAM_BINS - 1)
        assert (hist[latent, bins] >= 1).all(), latent
    card = real_index.card(int(alive[0]), 1)
    assert card.histogram.counts == hist[alive[0]].tolist() and card.histogram.total == card.stats["n_fires"]
    assert card.histogram.edges[0] == 0 and card.histogram.edges[-1] == np.float32(card.stats["max_activation"])
    assert card.to_dict()["histogram"]["counts"] == card.histogram.counts


def test_histogram_figure_draws_one_bar_per_bin(real_index):
    latent = int(np.argmax(real_index.arrays["n_fires"]))
    histogram = real_index.histogram(latent)
    fig = histogram_figure(histogram, title=f"Latent {latent}")
    bars = fig.axes[0].patches
    assert len(bars) == HISTOGRAM_BINS
    assert [bar.get_height() for bar in bars] == histogram.counts
    np.testing.assert_allclose([bar.get_x() for bar in bars], histogram.edges[:-1], rtol=1e-6)
    assert fig.axes[0].get_title() == f"Latent {latent}"


def test_histogram_figure_of_a_dead_latent_has_empty_bars_and_a_note():
    histogram = ActivationHistogram.from_index(np.zeros(HISTOGRAM_BINS, dtype=np.int32), 0.0)
    fig = histogram_figure(histogram)
    assert len(fig.axes[0].patches) == HISTOGRAM_BINS and histogram.total == 0
    assert any("did not fire on the texts the index read" in text.get_text() for text in fig.axes[0].texts)
