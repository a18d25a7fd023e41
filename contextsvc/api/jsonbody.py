"""Reading request bodies as JSON, strictly.

``request.get_json()`` is not used: it renders its own 400/415 errors, accepts
``NaN``/``Infinity`` and overflowing literals such as ``1e999``, and lets deeply
nested input raise ``RecursionError``. Everything here raises :class:`Invalid`
(400), or werkzeug's 413 and 415, which the error handlers render in the
contract's shape.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from ..domain.jsontext import finite_float, no_constant
from ..errors import Invalid

ABSENT = object()

# json.loads with these arguments would build the same decoder at every call
_DECODER = json.JSONDecoder(parse_float=finite_float, parse_constant=no_constant)


def _is_json_type(mimetype: str) -> bool:
    mimetype = mimetype.lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json"))


def check_limits(value: Any, limits: dict[str, int]) -> None:
    """Walk a parsed value without recursion and enforce the configured limits."""
    max_depth = limits["max_depth"]
    max_keys = limits["max_keys"]
    max_key = limits["max_key_length"]
    max_str = limits["max_string_length"]
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise Invalid(f"JSON nesting deeper than {max_depth} levels",
                              {"_body": [f"nesting deeper than {max_depth}"]})
            if len(item) > max_keys:
                raise Invalid(f"an object has more than {max_keys} keys",
                              {"_body": [f"more than {max_keys} keys in one object"]})
            for key, sub in item.items():
                if len(key) > max_key:
                    raise Invalid(f"a key is longer than {max_key} characters",
                                  {"_body": [f"key longer than {max_key}: {key[:40]}…"]})
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise Invalid(f"JSON nesting deeper than {max_depth} levels",
                              {"_body": [f"nesting deeper than {max_depth}"]})
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str) and len(item) > max_str:
            raise Invalid(f"a string is longer than {max_str} characters",
                          {"_body": [f"string longer than {max_str}"]})


def parse(raw: bytes, mimetype: str, limits: dict[str, int]) -> Any:
    """Return the parsed body, or ``ABSENT`` for an empty one."""
    if len(raw) > limits["max_body_bytes"]:
        raise RequestEntityTooLarge(
            f"The body is larger than {limits['max_body_bytes']} bytes")
    if not raw.strip():
        return ABSENT
    if mimetype and not _is_json_type(mimetype):
        raise UnsupportedMediaType(
            f"Content-Type {mimetype} is not JSON; send application/json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("The body is not valid UTF-8",
                      {"_body": [f"invalid UTF-8 at byte {exc.start}"]}) from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except RecursionError:
        raise Invalid(f"JSON nesting deeper than {limits['max_depth']} levels",
                      {"_body": ["nesting too deep"]}) from None
    except ValueError as exc:  # JSONDecodeError, non-finite numbers, over-long integers
        raise Invalid(f"The body is not valid JSON: {exc}", {"_body": [str(exc)]}) from None
    check_limits(value, limits)
    return value


def parse_object(raw: bytes, mimetype: str, limits: dict[str, int], *,
                 required: bool) -> dict[str, Any]:
    value = parse(raw, mimetype, limits)
    if value is ABSENT:
        if required:
            raise Invalid("A JSON object body is required", {"_body": ["body is required"]})
        return {}
    if not isinstance(value, dict):
        raise Invalid("The body must be a JSON object", {"_body": ["not a JSON object"]})
    return value
