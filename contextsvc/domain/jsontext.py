"""Strict JSON numbers, for every JSON the service reads (request bodies, import
lines): ``NaN``, ``Infinity`` and numbers too large for a double are refused, as
they are not JSON (RFC 8259) and would not survive being written back."""

from __future__ import annotations

import math
from typing import Any


def finite_float(text: str) -> float:
    """``parse_float`` of :mod:`json`: a number that is not finite is an error."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is not finite")
    return value


def no_constant(name: str) -> Any:
    """``parse_constant`` of :mod:`json`: ``NaN`` and ``Infinity`` are errors."""
    raise ValueError(f"{name} is not a JSON number")
