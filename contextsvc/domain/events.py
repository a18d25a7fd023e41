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
from .housekeeping import PURGES

PURGE_OPERATIONS = tuple(PURGES)
# bodies that hold fields only: any other key is refused, not attached data
STRICT_BODIES = ("ServiceExpiration", "Purge", "CompositeStart", "CompositeElement")
MAX_COMPOSITE = 100  # elements of one composite start (one unit of work)

# The fields of an event that are kept in its ``started``/``completed`` object.
EVENT_FIELDS = ("timestamp", "session_id", "interaction_id", "application_type",
                "application_id", "resource_type", "resource_id", "media_type")

# Start-only keys that an end body may repeat; they are accepted and ignored.
START_ONLY = frozenset({"customer_id", "contact_key", "service_type", "state_type",
                        "previous_state_id", "task_type", "est_duration", "auto_closed",
                        "auto_complete_after"})

_DURATION = validate.Range(min=0, max=2**63 - 1)
# seconds a client may give for a service's expiration or idle period (about 68 years)
_PERIOD = 2**31 - 1
# the lifecycle fields (API.md 6): field names, never attached data
LIFECYCLE_FIELDS = frozenset({"ttl", "expiration_time", "auto_complete_after",
                              "auto_complete_at"})


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


class Expiration(Schema):
    """A service's own expiration (API.md 6.1): ``ttl`` seconds from now (it wins),
    or a moment; later updates do not move it."""

    ttl = Integer(validate=validate.Range(min=1, max=_PERIOD), **_ex(86400))
    expiration_time = Timestamp(**_ex("2099-12-31T23:59:59.000Z"))


class ServiceExpiration(Expiration):
    """The body of ``PUT /services/{sid}``: ``ttl`` or ``expiration_time``, nothing else."""

    @validates_schema
    def _one(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "ttl" not in data and "expiration_time" not in data:
            raise ValidationError("ttl or expiration_time is required.", "ttl")


class ServiceStart(StartEvent, Expiration):
    """A service start: ``customer_id`` or ``contact_key`` (or both) is required;
    every other key is attached data."""

    customer_id = String(256, 1, **_ex("ABC1234"))
    contact_key = String(256, 1, **_ex("408-832-7799"))
    service_type = IntOrString(**_ex(100))
    auto_closed = StrictBoolean(**_ex(False))
    auto_complete_after = Integer(validate=validate.Range(min=0, max=_PERIOD),
                                  metadata={"example": 3600, "description":
                                            "seconds without a write after which the "
                                            "service completes by itself; 0: never"})

    @validates_schema
    def _identified(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "customer_id" not in data and "contact_key" not in data:
            raise ValidationError("customer_id or contact_key is required.", "customer_id")


class ServiceEnd(EndEvent, Expiration):
    """A service end; it may set the service's expiration."""


class Associate(StartEvent, Expiration):
    service_type = IntOrString(**_ex(100))


class Purge(Schema):
    """``POST /maintenance/purge`` (API.md 6.4)."""

    limit = Timestamp(required=True, metadata={
        "example": "2009-05-07T12:05:20.157Z",
        "description": "services started before this moment are purged"})
    operation = fields.String(required=True, validate=validate.OneOf(PURGE_OPERATIONS),
                              metadata={"example": "purge.service.completed"})


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


class CompositeElement(Schema):
    """One element of a composite start (API.md 10.3): the service to find or start,
    and optionally a state and a task in it. Documentation; each part is validated
    as the body of its own start (:func:`contextsvc.domain.inputs.composite`)."""

    service = fields.Nested(ServiceStart, required=True)
    state = fields.Nested(StateStart)
    task = fields.Nested(TaskStart)
    associate_state_task = StrictBoolean(metadata={
        "example": True, "description": "the task belongs to the element's state"})


class CompositeStart(Schema):
    """``POST /services_composite/start``: find or start, per element."""

    services = fields.List(fields.Nested(CompositeElement), required=True,
                           validate=validate.Length(min=1, max=MAX_COMPOSITE))


COMPOSITE_EXAMPLE = {"services": [{
    "service": {"customer_id": "ABC1234", "contact_key": "408-832-7799",
                "service_type": "new-wireless-account", "interaction_id": "IVR-0001"},
    "state": {"state_type": "agent-queue", "queue": "wireless-sales"},
    "task": {"task_type": "callback"},
    "associate_state_task": True}]}


class Event(SharedEvent):
    """A ``started`` or ``completed`` object: the event's timestamp and shared fields."""

    class Meta:
        unknown = "include"

    timestamp = Timestamp(required=True)


# one instance each, made once: loading is on the request path
SCHEMAS = {cls.__name__: cls() for cls in (
    SharedEvent, EndEvent, StartEvent, ServiceStart, ServiceEnd, Associate, StateStart,
    TaskStart, TransitionFrom, TransitionTo, ServiceExpiration, Purge)}
