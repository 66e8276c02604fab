"""The texts an explanation is tested on: where its latent fires (not shown to the explainer) and where it is silent.

Activating: a latent's top contexts in the feature index alternate between the explainer (ranks 1, 3, 5, …:
`explainer_contexts`) and the test (ranks 2, 4, …: `held_out_texts`), so both halves hold strong and weaker examples
and the scorer never judges a text the explainer saw.

Silent: the index keeps a latent's activations only around its own top contexts, so it cannot say where a latent
is 0. `measure_pool` runs both models and the crosscoder once over a sample of the index's windows and keeps, for
one crop per window (as wide as a top context, at a random place), every latent's peak activation there; a latent's
silent texts are the crops where that peak is 0 (`SilentPool.silent_texts`). Activations are measured on the whole
window, as the index measures its top contexts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from crossdiff_core.activations.paired import ModelPair, run_paired
from crossdiff_core.alignment import align_batch
from crossdiff_core.analysis.blocks import crosscoder_device
from crossdiff_core.analysis.contexts import Context, crop_span
from crossdiff_core.analysis.index import FeatureIndex
from crossdiff_core.crosscoder import CrossCoder, check_models
from crossdiff_core.errors import Cancelled
from crossdiff_core.models import cancellable


def explainer_contexts(index: FeatureIndex, latent: int) -> list[Context]:
    """Return the top contexts of a latent that its explainer sees: ranks 1, 3, 5, … (strongest first)."""
    return index.contexts(latent)[0::2]


def held_out_texts(index: FeatureIndex, latent: int) -> list[str]:
    """Return the texts of the top contexts kept from the explainer (ranks 2, 4, …): where the latent fires."""
    return [context.text.strip() for context in index.contexts(latent)[1::2]]


@dataclass
class SilentPool:
    """One crop of each of a sample of index windows, with every latent's peak activation on it."""

    windows: list[int]
    """The index window of each crop."""
    texts: list[str]
    peak_CF: np.ndarray
    """float32 `[crops, latents]`: each latent's largest activation over the crop's paired positions."""

    def silent_texts(self, latent: int, n: int, seed: int) -> list[str]:
        """Return up to `n` crops where `latent` never fires, picked at random (the same for the same seed)."""
        silent = np.flatnonzero(self.peak_CF[:, latent] <= 0)
        picked = np.random.default_rng([seed, latent]).permutation(silent)[:n]
        return [self.texts[int(c)] for c in sorted(picked)]


@torch.no_grad()
def measure_pool(
    index: FeatureIndex,
    crosscoder: CrossCoder,
    pair: ModelPair,
    n_windows: int,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> SilentPool:
    """Return the `SilentPool` of at least `n_windows` index windows (all of them at most), one crop each.

    The windows are whole batches of the index, picked at random and read exactly as the index read them (same
    batch, window length and outlier rule, so the same paired positions); `should_stop()` is asked before each batch
    and each transformer block, and `Cancelled` is raised once it returns True.
    """
    model_a, model_b = pair
    check_models(crosscoder, model_a, model_b)
    config, windows = index.meta["config"], index.windows()
    size, width = config["batch_windows"], config["context_before"] + 1 + config["context_after"]
    rng = np.random.default_rng(seed)
    n_batches = -(-len(windows) // size)
    batches = sorted(int(b) for b in rng.permutation(n_batches)[: -(-n_windows // size)])
    pool = SilentPool([], [], np.zeros((0, crosscoder.dict_size), np.float32))
    peaks = [torch.zeros(0, crosscoder.dict_size)]
    device = crosscoder_device(crosscoder)
    with cancellable(pair, should_stop):
        for batch in batches:
            if should_stop is not None and should_stop():
                raise Cancelled
            chosen = range(batch * size, min((batch + 1) * size, len(windows)))
            aligned = align_batch(
                model_a.tokenizer,
                model_b.tokenizer,
                [windows[w]["text"] for w in chosen],
                max_tokens=config["ctx_len"],
                max_tokens_b=2 * config["ctx_len"],
            )
            for w, run in zip(chosen, run_paired(model_a, model_b, aligned, config["outlier_factor"])):
                pairs = windows[w]["pairs"]
                lo, hi = crop_span(pairs, int(rng.integers(0, max(len(pairs) - width, 0) + 1)), width)
                kept = np.isin(run.char_end, [end for _, _, end in pairs])  # the positions the index kept
                inside = torch.as_tensor(kept & (run.char_end > lo) & (run.char_end <= hi))
                text = windows[w]["text"][lo:hi].strip()
                if not text or not inside.any():
                    continue
                f_PF = crosscoder.encode(run.x_a_PD[inside].to(device), run.x_b_PD[inside].to(device))
                peaks.append(f_PF.float().amax(0, keepdim=True).cpu())
                pool.windows.append(w)
                pool.texts.append(text)
    pool.peak_CF = torch.cat(peaks).numpy()
    return pool
