"""How a feature index is built (`IndexConfig`), without torch: the CLI's parser reads these defaults."""

from __future__ import annotations

from dataclasses import dataclass

from crossdiff_core.activations.config import OUTLIER_FACTOR
from crossdiff_core.errors import CrossDiffError


@dataclass
class IndexConfig:
    """What the feature index is built from and how much it keeps."""

    corpus: str = "builtin:demo"
    """Corpus spec the windows come from (see `crossdiff_core.corpus.sources`)."""
    n_windows: int = 256
    """Windows to run both models over."""
    skip_windows: int = 0
    """Windows skipped first (e.g. those a harvest used, so the index sees held-out text)."""
    ctx_len: int = 128
    """Window length in model A's tokens (model B may use up to twice as many)."""
    batch_windows: int = 8
    """Windows per forward pass."""
    top_contexts: int = 10
    """Top contexts kept per latent (one per window: its peak)."""
    context_before: int = 24
    """Paired positions kept before a context's peak for highlighting."""
    context_after: int = 8
    """Paired positions kept after a context's peak."""
    top_tokens: int = 10
    """Promoted and suppressed tokens kept per latent and model."""
    ridge_alpha: float = 0.1
    """Ridge penalty of the transfer regression, relative to the mean activation variance."""
    test_every: int = 4
    """Every `test_every`-th window is held out to measure transfer R²."""
    outlier_factor: float = OUTLIER_FACTOR
    """Drop pairs whose activation norm exceeds this multiple of the batch median (as the harvest does)."""

    def validate(self) -> None:
        """Raise `CrossDiffError` saying what to change when a field is out of range; returns None."""
        positive = ("n_windows", "ctx_len", "batch_windows", "top_contexts", "top_tokens", "test_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CrossDiffError(f"index setting {name}={value!r} must be a positive integer")
        for name in ("skip_windows", "context_before", "context_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CrossDiffError(f"index setting {name}={value!r} must be a non-negative integer")
        if self.test_every < 2:
            raise CrossDiffError("test_every must be at least 2 so that some windows train the transfer regression")
        if not self.ridge_alpha > 0 or not self.outlier_factor > 0:
            raise CrossDiffError("ridge_alpha and outlier_factor must be positive")


@dataclass
class ExplainConfig:
    """How latents are explained by a chat model and how each explanation is scored (`explain`, `detection`)."""

    top: int = 10
    """Exclusive latents per model explained, best ranked first."""
    max_new_tokens: int = 40
    """Tokens the explainer may write."""
    pool_windows: int = 32
    """Index windows whose crops (one each) test explanations on text where their latent is silent."""
    negatives: int = 10
    """Silent crops shown to the scorer per latent, next to its held-out activating contexts."""
    min_positives: int = 2
    """Held-out activating contexts a latent needs for its explanation to be scored (fewer: NaN)."""
    seed: int = 0
    """Seed of the pool's windows and crops and of each latent's pick of silent crops."""
    chance_stderrs: float = 2.0
    """An explainer's explanations beat chance when their mean score exceeds that of the same explanations moved to
    other latents (the shuffled baseline) by more than this many standard errors of the paired difference."""

    def validate(self) -> None:
        """Raise `CrossDiffError` saying what to change when a field is out of range; returns None."""
        if not self.chance_stderrs >= 0:
            raise CrossDiffError(f"explain setting chance_stderrs={self.chance_stderrs!r} must be 0 or more")
        for name in ("top", "max_new_tokens", "pool_windows", "negatives", "min_positives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CrossDiffError(f"explain setting {name}={value!r} must be a positive integer")
