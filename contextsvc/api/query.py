"""The query arguments of each operation, as marshmallow schemas: the same schema
parses a request's arguments and documents them in the OpenAPI document.

Unknown arguments are ignored. A :class:`Flag` that is absent is ``False``; a
:class:`CommaList` that is absent or empty is ``None`` (it filters nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields, missing, validate
from werkzeug.datastructures import MultiDict

from ..domain import export
from ..domain.fields import Timestamp
from ..domain.inputs import flatten, invalid


class Flag(fields.Field):
    """``true``/``false`` in any case."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        text = str(value).lower()
        if text not in ("true", "false"):
            raise ValidationError("Must be true or false.")
        return text == "true"


class CommaList(fields.Field):
    """Comma-separated values; the argument may also repeat (``a=1,3&a=45``)."""


def _stamp(description: str) -> Timestamp:
    return Timestamp(metadata={"description": description,
                               "example": "2009-05-07T12:05:20.157Z"})


def _flag(name: str) -> Flag:
    return Flag(metadata={"description": f"include {name.replace('_', ' ')} (true/false)",
                          "example": "true"})


def _list(description: str, example: str) -> CommaList:
    return CommaList(metadata={"description": description, "example": example})


class TaskView(Schema):
    extensions = _list("comma-separated attached-data keys to return (default: all)",
                       "coupon")


class TaskList(TaskView):
    state_id = fields.Integer(validate=validate.Range(min=-(2**63), max=2**63 - 1), metadata={
        "description": "tasks of this state only (no such state: [])", "example": 1})
    task_types = _list("comma-separated task types (the parameter may repeat)", "collect")


class StateView(TaskView):
    active_tasks = _flag("active_tasks")
    completed_tasks = _flag("completed_tasks")


class StateList(StateView):
    state_types = _list("comma-separated state types (the parameter may repeat)", "8")


class ServiceView(StateView):
    active_states = _flag("active_states")
    completed_states = _flag("completed_states")


class ServiceQuery(ServiceView):
    started_from = _stamp("started on or after")
    started_to = _stamp("started strictly before")
    completed_from = _stamp("completed on or after")
    completed_to = _stamp("completed strictly before")
    service_types = _list("comma-separated service types (the parameter may repeat)", "100")


class ExportQuery(Schema):
    """``GET /maintenance/services/stream`` (API.md 7.1)."""

    time_from = Timestamp(required=True, metadata={
        "description": "services with an event (filter_events) on or after this moment",
        "example": "2009-05-07T00:00:00.000Z"})
    time_to = _stamp("...and strictly before this moment (default: up to now, included)")
    filter_events = fields.String(
        load_default="any", validate=validate.OneOf(export.EVENTS), metadata={
            "description": "any: a start or a completion in the range; started; completed",
            "example": "any"})
    filter_state = fields.String(
        load_default="any", validate=validate.OneOf(export.STATES), metadata={
            "description": "only services active, or completed (inactive), now",
            "example": "any"})
    export_content = Flag(metadata={
        "description": "true: whole services, with every state, task and attached data; "
                       "false (default): service ids", "example": "true"})


class Parser:
    """Parses query arguments with one schema, made once per operation."""

    def __init__(self, schema: type[Schema]):
        self.schema = schema()
        declared = self.schema.fields
        self.lists = tuple(k for k, f in declared.items() if isinstance(f, CommaList))
        self.single = tuple(k for k in declared if k not in self.lists)
        self.empty = {**{k: False for k, f in declared.items() if isinstance(f, Flag)},
                      **dict.fromkeys(self.lists)}
        # without arguments the answer is known, unless some are required or defaulted
        self.shortcut = not any(f.required or f.load_default is not missing
                                for f in declared.values())

    def __call__(self, args: MultiDict[str, str]) -> dict[str, Any]:
        if not args and self.shortcut:
            return dict(self.empty)
        single = {key: args.get(key) for key in self.single if key in args}
        try:
            parsed = {**self.empty, **self.schema.load(single)}
        except ValidationError as exc:
            raise invalid(flatten(exc.messages), "query parameter") from None
        for key in self.lists:
            values = [part.strip() for raw in args.getlist(key) for part in raw.split(",")]
            parsed[key] = [v for v in values if v] or None  # an empty value filters nothing
        return parsed


class CompositeQuery(Schema):
    create_new_services = Flag(metadata={
        "description": "always start new services (true/false; default false)",
        "example": "false"})
