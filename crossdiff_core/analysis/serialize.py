"""Turn result dataclasses into JSON-ready dicts (what `to_dict()` of every analysis result returns)."""

from __future__ import annotations

import math
from dataclasses import fields
from functools import cache


def json_ready(result) -> dict:
    """Return a dataclass as a dict of plain JSON values: nested dataclasses and tuples become dicts and lists,
    NaN and infinities become None (strict JSON has no NaN).

    One walk over the result, building new containers only: `dataclasses.asdict` deep-copies every leaf first,
    which cost a prompt diff about 15% of the two models' forward passes.
    """
    return _clean(result)


@cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(type(value), "__dataclass_fields__"):
        return {name: _clean(getattr(value, name)) for name in _field_names(type(value))}
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
