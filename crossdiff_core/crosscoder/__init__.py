"""Crosscoders over two models: the config, the model, and the sparse training kernels."""

from crossdiff_core.crosscoder.config import CrossCoderConfig
from crossdiff_core.crosscoder.model import CrossCoder, check_models

__all__ = ["CrossCoder", "CrossCoderConfig", "check_models"]
