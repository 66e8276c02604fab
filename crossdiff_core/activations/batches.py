"""Sources of paired activation batches for training.

A `BatchSource` yields `(x_a_BD, x_b_BD)` pairs of raw (un-normalized) activations, fp32 tensors
of shape `[batch, d_a]` and `[batch, d_b]`. The stream is deterministic given `(batch_size, seed)`
and can start at any batch index, so a resumed training run sees exactly the data it would have
seen had it never stopped. The on-disk store (`crossdiff_core.activations.store.PairedActivationStore`) and
the in-memory `TensorBatchSource` below both implement it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from crossdiff_core.errors import StoreError


class BatchSource(Protocol):
    """What training needs from a source of paired activations."""

    d_a: int
    d_b: int

    def mean_sq_norms(self) -> tuple[float, float]:
        """Return the mean squared L2 norm of model A's and model B's activations."""

    def pair_info(self) -> dict:
        """Return what the activations were read from (model ids, layers, tokenizer fingerprints)."""

    def iter_batches(
        self, batch_size: int, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield an endless, deterministic stream of `(x_a_BD, x_b_BD)` fp32 batches from `start_batch` on."""


class TensorBatchSource:
    """A `BatchSource` over two in-memory tensors with the same number of rows."""

    def __init__(self, x_a_ND: torch.Tensor, x_b_ND: torch.Tensor, pair_info: dict | None = None):
        if x_a_ND.shape[0] != x_b_ND.shape[0]:
            raise StoreError(
                f"x_a has {x_a_ND.shape[0]} rows but x_b has {x_b_ND.shape[0]}: give both models' activations at the "
                "same paired positions (equal row counts)"
            )
        if x_a_ND.shape[0] == 0:
            raise StoreError("no paired activations: the source is empty; give at least one row of each model")
        self.x_a_ND = x_a_ND.float()
        self.x_b_ND = x_b_ND.float()
        self.d_a = x_a_ND.shape[1]
        self.d_b = x_b_ND.shape[1]
        self._pair_info = dict(pair_info or {})

    def __len__(self) -> int:
        return self.x_a_ND.shape[0]

    def mean_sq_norms(self) -> tuple[float, float]:
        """Return the mean squared L2 norm of each model's rows."""
        return (
            float(self.x_a_ND.pow(2).sum(-1).mean()),
            float(self.x_b_ND.pow(2).sum(-1).mean()),
        )

    def pair_info(self) -> dict:
        """Return the pair metadata given at construction."""
        return dict(self._pair_info)

    def iter_batches(self, batch_size: int, seed: int, start_batch: int = 0):
        """Yield shuffled batches forever; each epoch uses a permutation seeded by `(seed, epoch)`."""
        n = len(self)
        batches_per_epoch = max(1, n // batch_size)
        epoch, index = divmod(start_batch, batches_per_epoch)
        while True:
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            for i in range(index, batches_per_epoch):
                rows = perm[i * batch_size : (i + 1) * batch_size]
                yield self.x_a_ND[rows], self.x_b_ND[rows]
            epoch, index = epoch + 1, 0
