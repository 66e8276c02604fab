"""Crosscoders over two models: the config, the model, and the sparse training kernels.

`CrossCoderConfig` (torch-free) is imported here at once; `CrossCoder` and `check_models` on first use, so that
reading the config's defaults (the CLI's parser) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crossdiff_core.crosscoder.config import CrossCoderConfig

if TYPE_CHECKING:
    from crossdiff_core.crosscoder.model import CrossCoder, check_models

_LAZY = {"CrossCoder": "crossdiff_core.crosscoder.model", "check_models": "crossdiff_core.crosscoder.model"}
"""Public names imported on first use, and the module that defines each."""

__all__ = ["CrossCoder", "CrossCoderConfig", "check_models"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
