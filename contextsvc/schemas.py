"""Marshmallow schemas for the events, the transition body and the query arguments.

Event bodies are open: the schemas validate the known fields strictly; every other
top-level key is attached data, kept as it was sent (``split``). marshmallow's
``unknown=INCLUDE`` is not used for that: it would keep unknown keys unvalidated,
would not reach nested schemas (marshmallow#1490) and drops them on dump (#1198).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from . import timeutil
from .errors import flatten, invalid

INT64 = validate.Range(min=-(2**63), max=2**63 - 1)
MAX_TYPE_LENGTH = 256

# Keys the server owns. ``state_id`` is the client's only on a task start (and is
# ignored on a task end); it is added back per schema below.
RESERVED = frozenset({
    "service_id", "task_id", "state_id", "started", "completed", "duration",
    "active_states", "completed_states", "active_tasks", "completed_tasks",
})

# The fields of an event that are kept in its ``started``/``completed`` object.
EVENT_FIELDS = ("timestamp", "session_id", "interaction_id", "application_type",
                "application_id", "resource_type", "resource_id", "media_type")

# Start-only keys that an end body may repeat; they are accepted and ignored.
START_ONLY = frozenset({"customer_id", "contact_key", "service_type", "state_type",
                        "previous_state_id", "task_type", "est_duration", "auto_closed"})


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


def Id() -> fields.Integer:  # noqa: N802
    return fields.Integer(strict=True, validate=validate.Range(min=1, max=2**31 - 1))


def String(max_length: int, min_length: int = 0) -> fields.String:  # noqa: N802
    return fields.String(validate=validate.Length(min=min_length, max=max_length))


class SharedEvent(Schema):
    timestamp = Timestamp()
    session_id = String(32)
    interaction_id = String(50)
    application_type = IntOrString()
    application_id = Integer()
    resource_type = IntOrString()
    resource_id = Integer()
    media_type = IntOrString()


class EndEvent(SharedEvent):
    disposition = IntOrString()
    disposition_desc = String(64)


class StartEvent(EndEvent):
    est_duration = Integer(validate=validate.Range(min=0, max=2**63 - 1))


class ServiceStart(StartEvent):
    customer_id = String(256, 1)
    contact_key = String(256, 1)
    service_type = IntOrString()
    auto_closed = StrictBoolean()

    @validates_schema
    def _identified(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "customer_id" not in data and "contact_key" not in data:
            raise ValidationError("customer_id or contact_key is required.", "customer_id")


class Associate(StartEvent):
    service_type = IntOrString()


class StateStart(StartEvent):
    state_type = IntOrString()
    previous_state_id = Id()


class TaskStart(StartEvent):
    task_type = IntOrString()
    state_id = Id()


class TransitionFrom(Schema):
    state_id = Id()
    disposition = IntOrString()
    disposition_desc = String(64)


class TransitionTo(Schema):
    state_type = IntOrString()
    est_duration = Integer(validate=validate.Range(min=0, max=2**63 - 1))


SCHEMAS = {cls.__name__: cls() for cls in (
    SharedEvent, EndEvent, StartEvent, ServiceStart, Associate, StateStart, TaskStart,
    TransitionFrom, TransitionTo)}


def split(body: Mapping[str, Any], schema: Schema, *, allow: Iterable[str] = (),
          ignore: Iterable[str] = (), prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a body into (validated known fields, attached data).

    ``allow`` lifts keys out of ``RESERVED`` for this body; ``ignore`` names keys
    that are accepted and dropped. A known field sent as ``null`` counts as absent.
    """
    allow, ignore = set(allow), set(ignore)
    known_names = set(schema.fields)
    errors: dict[str, list[str]] = {}
    known: dict[str, Any] = {}
    attached: dict[str, Any] = {}
    for key, value in body.items():
        if key in known_names and (key not in RESERVED or key in allow):
            if value is not None:
                known[key] = value
        elif key in ignore:
            continue
        elif key in RESERVED:
            errors[prefix + key] = ["Reserved: this key is set by the server."]
        else:
            attached[key] = value
    try:
        loaded = schema.load(known)
    except ValidationError as exc:
        errors.update(flatten(exc.messages, prefix.rstrip(".")))
        loaded = {}
    if errors:
        raise invalid(errors, "body")
    return loaded, attached


def event_of(loaded: Mapping[str, Any]) -> dict[str, Any]:
    """The ``started``/``completed`` object of an event: its timestamp (now when
    absent) and the shared fields that were given."""
    event = {key: loaded[key] for key in EVENT_FIELDS if key in loaded}
    event.setdefault("timestamp", timeutil.now())
    return {"timestamp": event.pop("timestamp"), **event}


# ---------------------------------------------------------------- query arguments

class Flag(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        text = str(value).lower()
        if text not in ("true", "false"):
            raise ValidationError("Must be true or false.")
        return text == "true"


class QueryArgs(Schema):
    started_from = Timestamp()
    started_to = Timestamp()
    completed_from = Timestamp()
    completed_to = Timestamp()
    active_states = Flag(load_default=False)
    completed_states = Flag(load_default=False)
    active_tasks = Flag(load_default=False)
    completed_tasks = Flag(load_default=False)
    state_id = fields.Integer(validate=validate.Range(min=-(2**63), max=2**63 - 1))


LIST_ARGS = ("service_types", "state_types", "task_types", "extensions")
_QUERY = QueryArgs()


_NO_ARGS = {**_QUERY.load({}), **dict.fromkeys(LIST_ARGS)}


def query_args(args: Any) -> dict[str, Any]:
    """Parse a werkzeug MultiDict of query arguments; unknown ones are ignored."""
    if not args:
        return dict(_NO_ARGS)
    single = {key: args.get(key) for key in _QUERY.fields if key in args}
    try:
        parsed = _QUERY.load(single)
    except ValidationError as exc:
        raise invalid(flatten(exc.messages), "query parameter") from None
    for key in LIST_ARGS:
        values = [part.strip() for raw in args.getlist(key) for part in raw.split(",")]
        values = [v for v in values if v]
        parsed[key] = values or None  # an empty value filters nothing
    return parsed


# ---------------------------------------------------------------- representations
# What the server returns, for the OpenAPI document. Rendering itself is done by
# :mod:`contextsvc.rules`; tests check that responses conform to these.

class _Open(Schema):
    class Meta:
        unknown = "include"  # documents attached data: additionalProperties


class Event(SharedEvent):
    """A ``started`` or ``completed`` object: the event's timestamp and shared fields."""

    class Meta:
        unknown = "include"

    timestamp = Timestamp(required=True)


class _Resource(_Open):
    est_duration = Integer()
    started = fields.Nested(Event, required=True)
    completed = fields.Nested(Event)
    disposition = IntOrString()
    disposition_desc = String(64)
    duration = fields.Integer(strict=True, validate=validate.Range(min=0),
                              metadata={"description": "milliseconds, completed only"})


class Task(_Resource):
    service_id = fields.Integer(strict=True, metadata={"description": "top-level tasks only"})
    task_id = Id()
    task_type = IntOrString()
    state_id = Id()


class State(_Resource):
    service_id = fields.Integer(strict=True, metadata={"description": "top-level states only"})
    state_id = Id()
    state_type = IntOrString()
    previous_state_id = Id()
    active_tasks = fields.List(fields.Nested(Task))
    completed_tasks = fields.List(fields.Nested(Task))


class Service(_Resource):
    service_id = fields.Integer(strict=True, required=True)
    customer_id = String(256, 1)
    contact_key = String(256, 1)
    service_type = IntOrString()
    active_states = fields.List(fields.Nested(State))
    completed_states = fields.List(fields.Nested(State))
    active_tasks = fields.List(fields.Nested(Task))
    completed_tasks = fields.List(fields.Nested(Task))


class Transition(SharedEvent):
    from_ = fields.Nested(TransitionFrom, data_key="from", required=True)
    to = fields.Nested(TransitionTo, required=True)


class ServiceCreated(Schema):
    service_id = fields.Integer(strict=True, required=True)


class StateCreated(Schema):
    state_id = Id()


class TaskCreated(Schema):
    task_id = Id()


class Error(Schema):
    message = fields.String(required=True)
    exception = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
