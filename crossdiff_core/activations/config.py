"""How to read paired activations: `HarvestConfig` and the outlier rule's factor, without torch (the CLI's parser
reads these defaults)."""

from __future__ import annotations

from dataclasses import dataclass

OUTLIER_FACTOR = 10.0
"""Drop a pair when either model's activation norm exceeds this multiple of the batch median (attention sinks).

The default of `HarvestConfig.outlier_factor` and `IndexConfig.outlier_factor`."""


@dataclass
class HarvestConfig:
    """How to harvest paired activations."""

    n_tokens: int = 20_000
    """Number of paired tokens (rows) to store."""
    ctx_len: int = 128
    """Window length in model A's tokens; model B reads the same text (up to twice as many of its tokens)."""
    batch_windows: int = 64
    """Windows read per step; they are sorted by length and regrouped into forward passes."""
    max_batch_tokens: int = 8192
    """Most tokens (padding included) in one forward pass; fewer for smaller memory, more for a large GPU."""
    dtype: str = "fp16"
    """Storage dtype of activations: fp16, bf16 or fp32."""
    shard_tokens: int = 32_768
    """Rows per shard file."""
    outlier_factor: float = OUTLIER_FACTOR
    """Drop a pair when either model's activation norm exceeds this multiple of the batch median (attention sinks)."""
