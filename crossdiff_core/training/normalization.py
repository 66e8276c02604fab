"""Fitting a crosscoder to its activations before training: normalization scales, pair metadata, decoder biases.

Normalization scales each model so that its variance around its mean, summed over dimensions, is
d_m (the mean itself goes to the decoder bias, which starts there). Scaling by the raw second
moment instead lets a residual stream with a large constant component (Gemma-3: about 17 times its
variance) count for little in the loss, and tilts every latent's decoder norms toward the other model.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from crossdiff_core.activations.batches import BatchSource
from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.crosscoder.model import CrossCoder
from crossdiff_core.distributed import Dist
from crossdiff_core.errors import CrossCoderError
from crossdiff_core.training.config import TrainConfig

PAIR_INFO_KEYS = ("model_a", "model_b", "revision_a", "revision_b", "layer_a", "layer_b", "tokenizer_a", "tokenizer_b")


def mean_sample(
    source: BatchSource, train_config: TrainConfig, group: Dist | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each model's mean activation `(μ_a [d_a], μ_b [d_b])` over one training-size batch (fixed seed).

    With a data-parallel `group`, `source` yields this rank's part and the mean is the global batch's.
    """
    x_a_BD, x_b_BD = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
    means = x_a_BD.double().mean(0), x_b_BD.double().mean(0)
    if group is not None:
        device = group.collective_device()
        means = tuple(group.mean(m.to(device)).cpu() for m in means)
    return means


def fit_to_source(
    config: CrossCoderConfig, source: BatchSource, means: tuple[torch.Tensor, torch.Tensor] | None = None
) -> CrossCoderConfig:
    """Return a copy of `config` with normalization scales and pair metadata filled from `source` where None.

    scale_m = sqrt(d_m / (E‖x_m‖² − ‖μ_m‖²)): normalized activations vary around their mean with a
    summed variance of d_m. `means` are the per-model mean activations (`mean_sample`); without them
    the mean is taken as 0 (scale by the raw second moment).
    """
    if (config.d_a, config.d_b) != (source.d_a, source.d_b):
        raise CrossCoderError(
            f"the crosscoder expects widths d_a={config.d_a}, d_b={config.d_b} but the activations have "
            f"{source.d_a} and {source.d_b}; set d_a/d_b from the activation store"
        )
    updates: dict = {}
    if config.scale_a is None or config.scale_b is None:
        sq_norms_of_means = (0.0, 0.0) if means is None else tuple(float(m.pow(2).sum()) for m in means)
        for side, d, mean_sq, sq_norm_of_mean in zip("ab", (config.d_a, config.d_b), source.mean_sq_norms(),
                                                     sq_norms_of_means, strict=True):  # fmt: skip
            scale = fitted_scale(f"model {side.upper()}", d, mean_sq, sq_norm_of_mean)
            if getattr(config, f"scale_{side}") is None:
                updates[f"scale_{side}"] = scale
    info = source.pair_info()
    for key in PAIR_INFO_KEYS:
        if getattr(config, key) is None and info.get(key) is not None:
            updates[key] = info[key]
    return dataclasses.replace(config, **updates)


def fitted_scale(name: str, d: int, mean_sq: float, sq_norm_of_mean: float) -> float:
    """Return sqrt(d / (E‖x‖² − ‖μ‖²)): the scale that gives activations a summed variance of d around their mean.

    Raises `CrossCoderError` (naming the model `name`) when the activations are zero, not finite or all alike.
    """
    if not (mean_sq > 0 and math.isfinite(mean_sq)):
        raise CrossCoderError(
            f"{name}'s activations have mean squared norm {mean_sq}; they are all zero "
            "or contain NaN/inf: rebuild the activation store"
        )
    variance = mean_sq - sq_norm_of_mean
    if not variance > 1e-6 * mean_sq:
        raise CrossCoderError(
            f"{name}'s activations hardly vary around their mean (variance {variance:.3g}, "
            f"mean squared norm {mean_sq:.3g}): every token looks the same; check the read layer and corpus"
        )
    return math.sqrt(d / variance)


@torch.no_grad()
def _init_decoder_bias(
    model: CrossCoder, source: BatchSource, train_config: TrainConfig, device, dtype, group: Dist | None = None
) -> None:
    """Set each model's decoder bias to the mean of one (normalized) batch (the global batch, with a `group`).

    Residual streams carry a large mean component (for Gemma-3 about 19 times the variance around
    it); starting the biases there spares the first hundreds of steps from learning it.
    """
    x_a_BD, x_b_BD = next(source.iter_batches(train_config.batch_size, train_config.seed + 1))
    x_a_BD, x_b_BD = model.normalize(x_a_BD.to(device, dtype), x_b_BD.to(device, dtype))
    mean_a_D, mean_b_D = x_a_BD.mean(0), x_b_BD.mean(0)
    if group is not None:
        mean_a_D, mean_b_D = group.mean(mean_a_D), group.mean(mean_b_D)
    model.b_dec_a.copy_(mean_a_D)
    model.b_dec_b.copy_(mean_b_D)
