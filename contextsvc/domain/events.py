"""What a client may send: the event bodies, as marshmallow schemas.

Event bodies are open: the schemas validate the known fields strictly; every other
top-level key is attached data (see :func:`contextsvc.domain.inputs.split`).
marshmallow's ``unknown=INCLUDE`` is not used for that: it would keep unknown keys
unvalidated, would not reach nested schemas (marshmallow#1490) and drops them on
dump (#1198).

The ``example`` metadata is what the interactive docs prefill: values a browser
can send unchanged (JavaScript rounds integers past 2^53).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from .fields import Id, Integer, IntOrString, StrictBoolean, String, Timestamp

# The fields of an event that are kept in its ``started``/``completed`` object.
EVENT_FIELDS = ("timestamp", "session_id", "interaction_id", "application_type",
                "application_id", "resource_type", "resource_id", "media_type")

# Start-only keys that an end body may repeat; they are accepted and ignored.
START_ONLY = frozenset({"customer_id", "contact_key", "service_type", "state_type",
                        "previous_state_id", "task_type", "est_duration", "auto_closed"})

_DURATION = validate.Range(min=0, max=2**63 - 1)


def _ex(value: Any) -> dict[str, Any]:
    return {"metadata": {"example": value}}


class SharedEvent(Schema):
    timestamp = Timestamp(**_ex("2009-05-07T12:05:20.157Z"))
    session_id = String(32, **_ex("11000ABC-80236C1A-1010"))
    interaction_id = String(50, **_ex("123ABC908ABFFD8080"))
    application_type = IntOrString(**_ex(400))
    application_id = Integer(**_ex(40))
    resource_type = IntOrString(**_ex(2))
    resource_id = Integer(**_ex(5005))
    media_type = IntOrString(**_ex("voice"))


class EndEvent(SharedEvent):
    disposition = IntOrString(**_ex(10))
    disposition_desc = String(64, **_ex("booked"))


class StartEvent(EndEvent):
    est_duration = Integer(validate=_DURATION, **_ex(600))


class ServiceStart(StartEvent):
    """A service start: ``customer_id`` or ``contact_key`` (or both) is required;
    every other key is attached data."""

    customer_id = String(256, 1, **_ex("ABC1234"))
    contact_key = String(256, 1, **_ex("408-832-7799"))
    service_type = IntOrString(**_ex(100))
    auto_closed = StrictBoolean(**_ex(False))

    @validates_schema
    def _identified(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "customer_id" not in data and "contact_key" not in data:
            raise ValidationError("customer_id or contact_key is required.", "customer_id")


class Associate(StartEvent):
    service_type = IntOrString(**_ex(100))


class StateStart(StartEvent):
    state_type = IntOrString(**_ex(8))
    previous_state_id = Id(**_ex(1))


class TaskStart(StartEvent):
    task_type = IntOrString(**_ex("collect"))
    state_id = Id(**_ex(1))


class TransitionFrom(Schema):
    state_id = Id(required=True, **_ex(1))
    disposition = IntOrString(**_ex(1))
    disposition_desc = String(64, **_ex("SUCCESS"))


class TransitionTo(Schema):
    state_type = IntOrString(**_ex(9))
    est_duration = Integer(validate=_DURATION, **_ex(500))


class Transition(SharedEvent):
    """Documentation of the whole transition body; its parts are validated one by
    one (:func:`contextsvc.domain.inputs.transition`)."""

    from_ = fields.Nested(TransitionFrom, data_key="from", required=True)
    to = fields.Nested(TransitionTo, required=True)


class Event(SharedEvent):
    """A ``started`` or ``completed`` object: the event's timestamp and shared fields."""

    class Meta:
        unknown = "include"

    timestamp = Timestamp(required=True)


# one instance each, made once: loading is on the request path
SCHEMAS = {cls.__name__: cls() for cls in (
    SharedEvent, EndEvent, StartEvent, ServiceStart, Associate, StateStart, TaskStart,
    TransitionFrom, TransitionTo)}
