"""Turn result dataclasses into JSON-ready dicts (what `to_dict()` of every analysis result returns)."""

from __future__ import annotations

import math
from dataclasses import asdict


def json_ready(result) -> dict:
    """Return a dataclass as a dict of plain JSON values: nested dataclasses and tuples become dicts and lists,
    NaN and infinities become None (strict JSON has no NaN)."""
    return _clean(asdict(result))


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
