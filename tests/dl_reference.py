"""A faithful reimplementation of dictionary_learning / dfc_learning crosscoder inference, for the import tests.

Written from superkaiba/dfc_learning (`dictionary_learning/dictionary.py`, commit 8e8c0b3): `NormalizableMixin`
(`__init__`, `normalize_activations`, `denormalize_activations`), `CrossCoderEncoder.forward`,
`CrossCoderDecoder.forward`, `CrossCoder.get_code_normalization` (CROSSCODER), `BatchTopKCrossCoder.encode`
(`use_threshold=True`) and `CrossCoder.decode`, keeping their operations, their order and their dtype.
`dfc_state_dict` builds a state dict with the names, shapes and dtypes their `state_dict()` writes
(`DedicatedFeatureBatchTopKCrossCoder` adds `_partition_config`, a plain dict, to it).
"""

from __future__ import annotations

import torch as th
from torch.nn.functional import relu


def normalizer_buffers(
    activation_mean: th.Tensor | None,
    activation_std: th.Tensor | None,
    activation_shape: tuple[int, int],
    keep_relative_variance: bool = True,
    target_rms: float | None = 1.0,
) -> dict[str, th.Tensor]:
    """Return the buffers `NormalizableMixin.__init__` registers: target_rms, activation_mean/std, global scale."""
    if target_rms is None:
        target_rms = 1.0
    buffers = {"target_rms": th.tensor(target_rms)}
    if activation_mean is not None and activation_std is not None:
        buffers["activation_mean"], buffers["activation_std"] = activation_mean, activation_std
    else:
        buffers["activation_mean"] = th.nan * th.ones(activation_shape)
        buffers["activation_std"] = th.nan * th.ones(activation_shape)
    has_normalizer = not th.isnan(buffers["activation_mean"]).any() and not th.isnan(buffers["activation_std"]).any()
    if keep_relative_variance and has_normalizer:
        total_var = (buffers["activation_std"] ** 2).sum(dim=-1)
        buffers["activation_global_scale"] = buffers["target_rms"] / th.sqrt(total_var + 1e-8)
    else:
        buffers["activation_global_scale"] = th.ones(activation_shape[:-1])
    return buffers


def dfc_state_dict(
    encoder_weight: th.Tensor,
    encoder_bias: th.Tensor,
    decoder_weight: th.Tensor,
    decoder_bias: th.Tensor,
    *,
    activation_mean: th.Tensor | None = None,
    activation_std: th.Tensor | None = None,
    keep_relative_variance: bool = True,
    target_rms: float | None = 1.0,
    k: int | None = None,
    threshold: float | None = None,
    partition: dict | None = None,
) -> dict:
    """Return `state_dict()` of a (DedicatedFeature)(BatchTopK)CrossCoder with these weights and normalizer.

    `k`/`threshold` given: a BatchTopK crosscoder (k int32, threshold float32 buffers). `partition`: the
    `_partition_config` a DFC adds ({'dict_size', 'model_a_exclusive_pct', 'model_b_exclusive_pct'}).
    """
    num_layers, activation_dim, _ = encoder_weight.shape
    sd = normalizer_buffers(
        activation_mean, activation_std, (num_layers, activation_dim), keep_relative_variance, target_rms
    )
    sd |= {
        "encoder.weight": encoder_weight,
        "encoder.bias": encoder_bias,
        "decoder.weight": decoder_weight,
        "decoder.bias": decoder_bias,
        "code_normalization_id": th.tensor(1),  # CodeNormalization.CROSSCODER
    }
    if k is not None:
        sd["k"] = th.tensor(k, dtype=th.int)
        sd["threshold"] = th.tensor(-1.0 if threshold is None else threshold, dtype=th.float32)
    if partition is not None:
        sd["_partition_config"] = dict(partition)
    return sd


class ReferenceCrossCoder:
    """Inference of their crosscoder from a state dict, operation for operation (no autograd, no training)."""

    def __init__(self, state_dict: dict, keep_relative_variance: bool = True):
        self.sd = {key: value for key, value in state_dict.items() if isinstance(value, th.Tensor)}
        self.keep_relative_variance = keep_relative_variance

    def __getattr__(self, name: str) -> th.Tensor:
        sd = self.__dict__["sd"]
        if name in sd:
            return sd[name]
        raise AttributeError(name)

    # NormalizableMixin
    @property
    def has_activation_normalizer(self) -> bool:
        return not th.isnan(self.activation_mean).any() and not th.isnan(self.activation_std).any()

    def normalize_activations(self, x: th.Tensor) -> th.Tensor:
        if self.has_activation_normalizer:
            x = x.clone()
            assert x.shape[1:-1] == self.activation_global_scale.shape, "Normalization shape mismatch"
            x = x - self.activation_mean
            if self.keep_relative_variance:
                return x * self.activation_global_scale.unsqueeze(0).unsqueeze(-1)
            return x / (self.activation_std + 1e-8)
        return x

    def denormalize_activations(self, x: th.Tensor) -> th.Tensor:
        if self.has_activation_normalizer:
            assert x.shape[1:-1] == self.activation_global_scale.shape, "Normalization shape mismatch"
            if self.keep_relative_variance:
                x = x / (self.activation_global_scale.unsqueeze(0).unsqueeze(-1) + 1e-8)
            else:
                x = x * (self.activation_std + 1e-8)
            return x + self.activation_mean
        return x

    # CrossCoderEncoder.forward, CrossCoder.get_code_normalization (CROSSCODER)
    def encoder(self, x: th.Tensor) -> th.Tensor:
        f = th.einsum("bld, ldf -> blf", x, self.sd["encoder.weight"])
        return relu(f.sum(dim=1) + self.sd["encoder.bias"])

    def get_code_normalization(self) -> th.Tensor:
        return self.sd["decoder.weight"].norm(dim=2).sum(dim=0, keepdim=True)

    # BatchTopKCrossCoder.encode (use_threshold=True) / CrossCoder.encode
    def encode(self, x: th.Tensor) -> th.Tensor:
        x = self.normalize_activations(x)
        post_relu_f = self.encoder(x)
        if "threshold" not in self.sd:
            return post_relu_f
        post_relu_f_scaled = post_relu_f * self.get_code_normalization()
        return post_relu_f * (post_relu_f_scaled > self.threshold)

    # CrossCoderDecoder.forward + CrossCoder.decode
    def decode(self, f: th.Tensor) -> th.Tensor:
        x = th.einsum("bf, lfd -> bld", f, self.sd["decoder.weight"])
        x += self.sd["decoder.bias"]
        return self.denormalize_activations(x)
