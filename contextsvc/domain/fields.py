"""The marshmallow field types of the contract's bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validate

from . import timeutil

INT64 = validate.Range(min=-(2**63), max=2**63 - 1)
MAX_TYPE_LENGTH = 256
MAX_SUB_ID = 2**31 - 1


class Timestamp(fields.Field):
    """ISO 8601 in, normalized ``YYYY-MM-DDTHH:MM:SS.sssZ`` string out."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError("Not a valid timestamp; send an ISO 8601 string.")
        try:
            return timeutil.normalize(value)
        except ValueError as exc:
            raise ValidationError(str(exc) + ".") from None


class IntOrString(fields.Field):
    """An application-defined type or id: a JSON integer or a string."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("Must be an integer or a string.")
        if isinstance(value, int):
            INT64(value)
        elif len(value) > MAX_TYPE_LENGTH:
            raise ValidationError(f"Longer than maximum length {MAX_TYPE_LENGTH}.")
        return value


class StrictBoolean(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value


def Integer(**kwargs: Any) -> fields.Integer:  # noqa: N802 - reads like a field class
    return fields.Integer(strict=True, validate=kwargs.pop("validate", INT64), **kwargs)


def Id(**kwargs: Any) -> fields.Integer:  # noqa: N802
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_SUB_ID), **kwargs)


def String(max_length: int, min_length: int = 0, **kwargs: Any) -> fields.String:  # noqa: N802
    return fields.String(validate=validate.Length(min=min_length, max=max_length), **kwargs)
