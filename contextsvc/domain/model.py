"""One description per kind of resource (service, state, task), and everything
derived from it: the fields rendered from a stored document, the keys the server
owns, and the marshmallow schemas that document the output.

A stored service document::

    {"service_id", "customer_id"?, "contact_key"?, "service_type"?, "est_duration"?,
     "disposition"?, "disposition_desc"?, "started": {...}, "completed"?: {...},
     "duration"?, "data": {attached data}, "states": [...], "tasks": [...]}

States and tasks have the same shape with their own id and type fields. Rendering
turns a document into the API representation: its fields in stored order (the id
first), then its attached data at the top level. The field sets are computed here
once, at import; rendering is one dict comprehension per resource, which is much
cheaper than a marshmallow ``dump``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, validate

from .events import LIFECYCLE_FIELDS, Event
from .fields import Id, Integer, IntOrString, String, Timestamp

Doc = dict[str, Any]

MAX_SERVICE_ID = 2**53 - 1  # JavaScript reads every id exactly

# Fields every kind has. The server sets the first three; a client never sends them.
SERVER_OWNED = ("started", "completed", "duration")
COMMON: dict[str, fields.Field] = {
    "est_duration": Integer(validate=validate.Range(min=0, max=2**63 - 1)),
    "started": fields.Nested(Event, required=True),
    "completed": fields.Nested(Event),
    "disposition": IntOrString(),
    "disposition_desc": String(64),
    "duration": fields.Integer(strict=True, validate=validate.Range(min=0),
                               metadata={"description": "milliseconds, completed only"}),
}
# Fields copied from a start (and, for the last two, an end) event onto the resource.
LIFTED = ("est_duration", "disposition", "disposition_desc")


@dataclass(frozen=True)
class Kind:
    """A kind of resource, as the API shows it.

    ``own``: its fields besides :data:`COMMON` (the id first); ``top``: fields added
    only when it is returned on its own (its service's id); ``nested``: arrays of
    other kinds that query flags add, by kind name.
    """

    name: str
    id_field: str
    own: dict[str, fields.Field]
    top: dict[str, fields.Field] = field(default_factory=dict)
    nested: dict[str, str] = field(default_factory=dict)

    @property
    def fields(self) -> frozenset[str]:
        """The fields rendered from a stored document."""
        return frozenset(self.own) | frozenset(COMMON)


def _service_id(description: str | None = None) -> fields.Integer:
    meta = {"description": description} if description else {}
    return fields.Integer(strict=True, required=description is None,
                          validate=validate.Range(min=1, max=MAX_SERVICE_ID), metadata=meta)


TASK = Kind("Task", "task_id",
            own={"task_id": Id(), "task_type": IntOrString(), "state_id": Id()},
            top={"service_id": _service_id("top-level tasks only")})
STATE = Kind("State", "state_id",
             own={"state_id": Id(), "state_type": IntOrString(), "previous_state_id": Id()},
             top={"service_id": _service_id("top-level states only")},
             nested={"active_tasks": "Task", "completed_tasks": "Task"})
SERVICE = Kind("Service", "service_id",
               own={"service_id": _service_id(), "customer_id": String(256, 1),
                    "contact_key": String(256, 1), "service_type": IntOrString(),
                    "expiration_time": Timestamp(metadata={
                        "description": "when the service will stop existing (API.md 6.1)"}),
                    "auto_complete_at": Timestamp(metadata={
                        "description": "while active: when it completes by itself if "
                                       "nobody writes to it before (API.md 6.2)"})},
               nested={"active_states": "State", "completed_states": "State",
                       "active_tasks": "Task", "completed_tasks": "Task"})
KINDS = {"service": SERVICE, "state": STATE, "task": TASK}

SERVICE_FIELDS = SERVICE.fields
STATE_FIELDS = STATE.fields
TASK_FIELDS = TASK.fields

# Keys the server owns, and the lifecycle's field names (API.md 6.1): a client may
# not send them as attached data. ``state_id`` is
# the client's only on a task start (and is ignored on a task end).
RESERVED = frozenset(
    {kind.id_field for kind in KINDS.values()} | set(SERVER_OWNED)
    | {name for kind in KINDS.values() for name in kind.nested}
    | LIFECYCLE_FIELDS)


# ------------------------------------------------------------------ rendering
def _render(resource: Doc, fields_: frozenset[str], extensions: list[str] | None) -> Doc:
    # one pass over the stored document, in its order (the id comes first)
    out = {key: value for key, value in resource.items() if key in fields_ and value is not None}
    data = resource.get("data")
    if data:
        if extensions is None:
            out.update(data)
        else:
            out.update((key, data[key]) for key in extensions if key in data)
    return out


def is_active(resource: Doc) -> bool:
    return "completed" not in resource


def ordered(items: Iterable[Doc], key: str) -> list[Doc]:
    """Oldest first, ties by id."""
    return sorted(items, key=lambda item: (item["started"]["timestamp"], item[key]))


def _split(items: list[Doc], key: str) -> tuple[list[Doc], list[Doc]]:
    """(active, completed), each in :func:`ordered` order."""
    active: list[Doc] = []
    completed: list[Doc] = []
    for item in ordered(items, key):
        (active if is_active(item) else completed).append(item)
    return active, completed


def render_task(task: Doc, args: Doc, service_id: int | None = None) -> Doc:
    out = _render(task, TASK_FIELDS, args.get("extensions"))
    return {"service_id": service_id, **out} if service_id is not None else out


def _tasks(tasks: list[Doc], args: Doc) -> Doc:
    out = {}
    want_active, want_completed = args.get("active_tasks"), args.get("completed_tasks")
    if want_active or want_completed:
        extensions = args.get("extensions")
        active, completed = _split(tasks, "task_id")
        if want_active:
            out["active_tasks"] = [_render(t, TASK_FIELDS, extensions) for t in active]
        if want_completed:
            out["completed_tasks"] = [_render(t, TASK_FIELDS, extensions) for t in completed]
    return out


def render_state(state: Doc, doc: Doc, args: Doc, top: bool = True) -> Doc:
    """A state; at the top level it names its service and may carry its tasks."""
    out = _render(state, STATE_FIELDS, args.get("extensions"))
    if not top:
        return out
    own = [t for t in doc["tasks"] if t.get("state_id") == state["state_id"]]
    return {"service_id": doc["service_id"], **out, **_tasks(own, args)}


def render_service(doc: Doc, args: Doc) -> Doc:
    extensions = args.get("extensions")
    out = _render(doc, SERVICE_FIELDS, extensions)
    want_active, want_completed = args.get("active_states"), args.get("completed_states")
    if want_active or want_completed:  # states within a service: without their tasks
        active, completed = _split(doc["states"], "state_id")
        if want_active:
            out["active_states"] = [_render(s, STATE_FIELDS, extensions) for s in active]
        if want_completed:
            out["completed_states"] = [_render(s, STATE_FIELDS, extensions) for s in completed]
    out.update(_tasks(doc["tasks"], args))
    return out


# ------------------------------------------------------------------ documentation
def output_schemas() -> dict[str, type[Schema]]:
    """The documented output of each kind, nested kinds first. Open schemas
    (``unknown = include``): attached data sits beside the fields."""
    made: dict[str, type[Schema]] = {}
    for kind in (TASK, STATE, SERVICE):
        declared: dict[str, fields.Field] = {}
        for name, fld in {**kind.top, **kind.own, **COMMON}.items():
            declared[name] = _copy(fld)
        for name, nested in kind.nested.items():
            declared[name] = fields.List(fields.Nested(made[nested]))

        class Meta:
            unknown = "include"  # documents attached data: additionalProperties

        made[kind.name] = type(kind.name, (Schema,), {"Meta": Meta, **declared})
    return made


def _copy(fld: fields.Field) -> fields.Field:
    """A field instance may belong to one schema only."""
    import copy

    return copy.deepcopy(fld)
