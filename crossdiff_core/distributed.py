"""Data-parallel training with `torchrun` and PyTorch DDP (nccl on GPUs, gloo on CPU).

    torchrun --nproc_per_node 4 -m crossdiff_core train --store S --out O --batch-size 4096 ...

Every rank holds the whole crosscoder and reads its own shards of the activation store (shard i
goes to rank i mod world); `--batch-size` is the global batch, split evenly. DDP averages the
gradients. What a single process would compute over the whole batch, the ranks compute together:

- BatchTopK keeps the k·B best (token, latent) pairs of the *global* batch: each rank sends its own
  k·B best scores, the k·B-th largest of all of them is the cutoff, and each rank keeps its pairs
  at or above it (`global_cutoff`);
- the auxk loss divides by the residual variance of the global batch;
- which latents fired, the inference threshold, the normalization statistics and the decoder-bias
  initialization are reduced over ranks.

So a run on W ranks equals a single-process run on the concatenation of the W ranks' batches
(`ConcatenatedSource`), up to float summation order; `tests/test_distributed.py` checks it with two
gloo processes. Rank 0 writes checkpoints, logs and the finished crosscoder; every rank resumes
from the same checkpoint folder (a shared filesystem on several machines).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from crossdiff_core.errors import CrossDiffError


@dataclass(frozen=True)
class Dist:
    """The process group of a data-parallel run, with the collectives training uses."""

    rank: int
    world: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and shows progress."""
        return self.rank == 0

    def device(self) -> torch.device:
        """Return this rank's device: its local GPU when CUDA is there, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise sum of `tensor` over ranks (a new tensor)."""
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise mean of `tensor` over ranks."""
        return self.sum(tensor) / self.world

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise maximum of `tensor` over ranks."""
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the element-wise minimum of `tensor` over ranks."""
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
        return out

    def any(self, flag: bool) -> bool:
        """Return whether `flag` is True on any rank."""
        return bool(self.max(torch.tensor([int(flag)], device=self.collective_device()))[0])

    def gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Return the concatenation over ranks of equally shaped 1-D `tensor`s, in rank order."""
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    def barrier(self) -> None:
        """Wait for every rank."""
        dist.barrier()

    def collective_device(self) -> torch.device:
        """Return where tensors for collectives live: this rank's GPU under nccl, else the CPU (gloo)."""
        return self.device() if dist.get_backend() == "nccl" else torch.device("cpu")


def from_environment() -> Dist | None:
    """Join the process group `torchrun` describes in the environment and return it; None when not launched so.

    Uses nccl when CUDA is available, gloo otherwise. A group already initialized is reused.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_available():
        raise CrossDiffError(
            "this PyTorch build has no torch.distributed: run without torchrun, or install a full PyTorch"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def global_cutoff(scores_N: torch.Tensor, n_keep: int, group: Dist) -> torch.Tensor:
    """Return the `n_keep`-th largest score over all ranks, given each rank's own `n_keep` best (fewer allowed).

    The global top `n_keep` lies within the union of the ranks' top `n_keep`s, so its smallest
    member is found from those alone. Returns 0 when fewer than `n_keep` positive scores exist.
    """
    padded_N = scores_N.new_zeros(n_keep)
    padded_N[: scores_N.numel()] = scores_N[:n_keep]
    everything = group.gather_cat(padded_N)
    return torch.topk(everything, n_keep, sorted=False).values.min()


class ConcatenatedSource:
    """A `BatchSource` whose batches concatenate the batches of several sources, in order.

    `iter_batches(B)` yields, per step, source 0's batch of B/n, then source 1's, and so on: what a
    data-parallel run over those sources sees as its global batch. It is the single-process
    reference for a run on n ranks.
    """

    def __init__(self, sources: list):
        if not sources:
            raise ValueError("no sources to concatenate")
        self.sources = list(sources)
        self.d_a, self.d_b = sources[0].d_a, sources[0].d_b
        if any((s.d_a, s.d_b) != (self.d_a, self.d_b) for s in sources):
            raise ValueError("the sources have different activation widths")

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def mean_sq_norms(self) -> tuple[float, float]:
        """Return the row-weighted mean of the sources' mean squared norms."""
        total = len(self)
        norms = [s.mean_sq_norms() for s in self.sources]
        return tuple(sum(len(s) * n[i] for s, n in zip(self.sources, norms, strict=True)) / total for i in (0, 1))

    def pair_info(self) -> dict:
        """Return the first source's pair metadata."""
        return self.sources[0].pair_info()

    def iter_batches(
        self, batch_size: int, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the concatenated batches; `batch_size` must divide evenly among the sources."""
        per_source = split_batch(batch_size, len(self.sources))
        streams = [s.iter_batches(per_source, seed, start_batch) for s in self.sources]
        while True:
            parts = [next(stream) for stream in streams]
            yield torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])


class RankSource:
    """This rank's share of a data-parallel run: batches of B/world from its own source, statistics over all ranks."""

    def __init__(self, source, group: Dist):
        self.source, self.group = source, group
        self.d_a, self.d_b = source.d_a, source.d_b

    def mean_sq_norms(self) -> tuple[float, float]:
        """Return the mean squared norms over every rank's rows (as `ConcatenatedSource` would)."""
        n = len(self.source)
        msq_a, msq_b = self.source.mean_sq_norms()
        sums = self.group.sum(torch.tensor([n * msq_a, n * msq_b, float(n)], dtype=torch.float64,
                                           device=self.group.collective_device()))  # fmt: skip
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])

    def pair_info(self) -> dict:
        """Return the pair metadata of this rank's source."""
        return self.source.pair_info()

    def iter_batches(
        self, batch_size: int, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this rank's part (B/world rows) of each global batch of `batch_size`."""
        return self.source.iter_batches(split_batch(batch_size, self.group.world), seed, start_batch)


def split_batch(batch_size: int, world: int) -> int:
    """Return the per-rank batch size, or raise `CrossDiffError` when `batch_size` does not split evenly."""
    if batch_size % world:
        raise CrossDiffError(
            f"the batch of {batch_size} tokens does not split evenly over {world} processes: "
            f"use a --batch-size that is a multiple of {world}"
        )
    return batch_size // world
