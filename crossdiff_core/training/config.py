"""How to train a crosscoder (`TrainConfig`, its validation and the automatic dead-latent window) and
what `train` reports back (`TrainProgress`, `TrainResult`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crossdiff_core.errors import CrossCoderError

if TYPE_CHECKING:  # torch is not imported here: the CLI's parser reads the defaults below without it
    from crossdiff_core.crosscoder.model import CrossCoder

TRAIN_DTYPES = ("float32", "bfloat16", "float16", "float64")
"""The dtypes a crosscoder trains in, by their torch names (`getattr(torch, name)`)."""


@dataclass
class TrainConfig:
    """How to train: schedule, optimizer, dead-latent handling, checkpoints and hardware."""

    steps: int = 10_000
    """Number of optimizer steps."""

    batch_size: int = 1024
    """Tokens (paired activations) per step; BatchTopK selects k·batch_size latents per batch."""

    lr: float | None = None
    """Adam learning rate; None scales it with the dictionary size: 2e-4 / sqrt(dict_size / 16384)."""

    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""

    warmup_steps: int = 100
    """Steps over which the learning rate rises linearly from 0 to `lr`."""

    decay_start: float = 0.8
    """Fraction of `steps` after which the learning rate decays linearly to 0 at the last step."""

    auxk_coeff: float = 1 / 32
    """Weight of the auxk loss that revives dead latents, against a normalized reconstruction loss (BatchTopK)."""

    auxk_exclusive: bool = False
    """Let auxk revive dead exclusive latents too (DFC). Off, exclusive latents are filled by
    relocation only. On synthetic ground truth (benchmarks/synthetic) turning it on makes about a
    third of the exclusive latents copies of one side of a shared feature and costs shared recovery;
    on a short real run, where no latent becomes one-sided, it is what keeps the blocks alive."""

    k_aux: int | None = None
    """Dead latents the auxk loss uses per token; None = half the wider model's width."""

    dead_after_tokens: int | None = None
    """A latent is dead once it has not fired for this many tokens; dead latents feed the auxk loss and
    receive relocated latents. None (the default) = automatic, scaled with the run (`dead_after`):
    5% of the run's tokens (steps × batch_size / 20), at least 4 batches, at most 10M tokens. A fixed
    count meant for long runs (10M) never marks a latent dead in a run of a few hundred thousand
    tokens, so auxk and relocation would never act."""

    relocate_every: int = 100
    """Steps between moves of one-model shared latents into dead exclusive latents (DFC only)."""

    relocate_relative_norm: float = 0.9
    """A shared latent writes to one model only when ‖d_a‖/(‖d_a‖+‖d_b‖) is above this (A) or below 1 − this (B)."""

    threshold_decay: float = 0.99
    """EMA decay of the BatchTopK inference threshold (the smallest selected score per batch)."""

    seed: int = 0
    """Seeds the initialization and the data order; same seed and data ⇒ same crosscoder."""

    checkpoint_every: int = 1000
    """Steps between checkpoints (a checkpoint is also written at the end and when stopped)."""

    log_every: int = 10
    """Steps between logged metrics (and progress callbacks); the last step is always logged."""

    device: str | None = None
    """Torch device ("cpu", "cuda", "cuda:1"); None = CUDA when available, else CPU."""

    dtype: str = "float32"
    """Parameter and activation dtype: "float32", "bfloat16", "float16" or "float64"."""

    def dead_after(self) -> int:
        """Return the tokens without firing after which a latent is dead: `dead_after_tokens`, or when that is
        None, `auto_dead_after_tokens(steps, batch_size)`."""
        if self.dead_after_tokens is not None:
            return self.dead_after_tokens
        return auto_dead_after_tokens(self.steps, self.batch_size)

    def validate(self) -> None:
        """Raise `CrossCoderError` saying what to change if a field is out of range; return None."""
        positive = ("steps", "batch_size", "dead_after_tokens", "relocate_every", "checkpoint_every", "log_every")
        for name in positive:
            value = getattr(self, name)
            if name == "dead_after_tokens" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                more = " (or None for automatic)" if name == "dead_after_tokens" else ""
                raise CrossCoderError(f"{name}={value!r} must be a positive integer{more}")
        if self.lr is not None and not self.lr > 0:
            raise CrossCoderError(f"lr={self.lr!r} must be > 0 (or None for the size-scaled default)")
        if self.warmup_steps < 0 or not 0 <= self.decay_start <= 1:
            raise CrossCoderError(
                f"warmup_steps={self.warmup_steps} must be >= 0 and decay_start={self.decay_start} in [0, 1]"
            )
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise CrossCoderError(f"betas={self.betas!r} must be two numbers in [0, 1)")
        if self.auxk_coeff < 0 or (self.k_aux is not None and self.k_aux < 1):
            raise CrossCoderError(f"auxk_coeff={self.auxk_coeff} must be >= 0 and k_aux={self.k_aux} >= 1 (or None)")
        if not 0.5 < self.relocate_relative_norm < 1:
            raise CrossCoderError(f"relocate_relative_norm={self.relocate_relative_norm} must be in (0.5, 1)")
        if not 0 <= self.threshold_decay < 1:
            raise CrossCoderError(f"threshold_decay={self.threshold_decay} must be in [0, 1)")
        if self.dtype not in TRAIN_DTYPES:
            raise CrossCoderError(f"dtype={self.dtype!r} is not supported; use one of {', '.join(TRAIN_DTYPES)}")

    def to_dict(self) -> dict:
        """Return the config as a JSON-serializable dict."""
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Return the config stored in `data` (unknown keys are ignored, missing ones take defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)


MAX_DEAD_AFTER_TOKENS = 10_000_000
"""The automatic dead-latent window never exceeds this (the usual fixed value for long runs)."""

LEGACY_DEAD_AFTER_TOKENS = 10_000_000
"""What checkpoints written before the automatic rule store as `dead_after_tokens` (the old default)."""


def auto_dead_after_tokens(steps: int, batch_size: int) -> int:
    """Return the automatic dead-latent window: 5% of the run's tokens, at least 4 batches, at most 10M tokens.

    min(10_000_000, max(4 · batch_size, steps · batch_size // 20)): a latent that has not fired for a
    twentieth of the run is dead; a window of fewer than 4 batches would call latents dead that are
    merely rare.
    """
    return min(MAX_DEAD_AFTER_TOKENS, max(4 * batch_size, steps * batch_size // 20))


@dataclass
class TrainProgress:
    """What the progress callback receives at every logged step."""

    step: int
    """Optimizer steps done so far (1-based after the first step)."""

    total_steps: int
    """Steps the run will do in total."""

    tokens_seen: int
    """Tokens trained on so far (step × batch_size)."""

    metrics: dict[str, float]
    """Metrics of this step (see `train` for the keys)."""

    elapsed_s: float
    """Training time so far, including earlier runs this one resumed."""


@dataclass
class TrainResult:
    """The outcome of `train`."""

    crosscoder: CrossCoder
    """The trained (or, if stopped early, partly trained) crosscoder, in eval mode."""

    metrics: dict[str, float]
    """Metrics of the last logged step (empty if no step was logged)."""

    history: list[dict[str, float]]
    """Metrics of every logged step, including those of runs this one resumed."""

    out_dir: Path
    """Where the crosscoder, checkpoint and logs were written."""

    steps_done: int
    """Optimizer steps completed (equals `TrainConfig.steps` unless stopped early)."""

    resumed_from: int | None
    """The checkpoint step training continued from, or None for a fresh start."""
