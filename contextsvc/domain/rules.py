"""The lifecycle rules of services, states and tasks: plain functions that change a
stored service document (see :mod:`.model`) in place. They raise the domain errors
of :mod:`contextsvc.errors`; nothing here knows about requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Conflict, Invalid, NotFound
from . import lifecycle, timeutil
from .events import EVENT_FIELDS, SCHEMAS
from .inputs import Input
from .model import KINDS, LIFTED, RESERVED, Doc

# names an extension key may not take, per kind: the server's keys, the kind's
# fields, and the fields of its start body
_NOT_EXTENSIONS = {
    name: RESERVED | kind.fields | set(SCHEMAS[start].fields)
    for name, kind, start in (("service", KINDS["service"], "ServiceStart"),
                              ("state", KINDS["state"], "StateStart"),
                              ("task", KINDS["task"], "TaskStart"))
}


def event_of(fields: dict[str, Any]) -> Doc:
    """The ``started``/``completed`` object of an event: its timestamp (now when
    absent) and the shared fields that were given."""
    event = {key: fields[key] for key in EVENT_FIELDS if key in fields}
    event.setdefault("timestamp", timeutil.now())
    return {"timestamp": event.pop("timestamp"), **event}


# ------------------------------------------------------------------ start / end
def _start(ids: Doc, event: Input, own: tuple[str, ...]) -> Doc:
    resource = dict(ids)
    for key in own + LIFTED:
        if key in event.fields:
            resource[key] = event.fields[key]
    resource["started"] = event_of(event.fields)
    resource["data"] = dict(event.data)
    return resource


def _complete(resource: Doc, event: Input, label: str) -> None:
    if "completed" in resource:
        raise Conflict(f"{label} is already completed")
    completed = event_of(event.fields)
    resource["completed"] = completed
    for key in ("disposition", "disposition_desc"):
        if key in event.fields:
            resource[key] = event.fields[key]
    resource["duration"] = timeutil.millis_between(resource["started"]["timestamp"],
                                                   completed["timestamp"])
    resource.setdefault("data", {}).update(event.data)


def new_service(sid: int, event: Input, now: datetime | None = None) -> Doc:
    """A new service; ``now`` is the moment a ``ttl`` counts from."""
    doc = _start({"service_id": sid}, event, ("customer_id", "contact_key", "service_type"))
    doc["states"], doc["tasks"] = [], []
    if event.fields.get("auto_closed"):
        doc["completed"] = {"timestamp": doc["started"]["timestamp"]}
        doc["duration"] = 0
    lifecycle.set_expiration(doc, event.fields, now or lifecycle.utc_now())
    lifecycle.set_auto_complete(doc, event.fields)
    return doc


def end_service(doc: Doc, event: Input, now: datetime | None = None) -> None:
    _complete(doc, event, f"Service {doc['service_id']}")
    lifecycle.set_expiration(doc, event.fields, now or lifecycle.utc_now())


def set_expiration(doc: Doc, fields: dict[str, Any], now: datetime | None = None) -> None:
    """``PUT /services/{sid}``: the service's own expiration, from now on."""
    lifecycle.set_expiration(doc, fields, now or lifecycle.utc_now())


def associate(doc: Doc, customer_id: str, event: Input, now: datetime | None = None) -> None:
    """Set the service's customer (it stops being anonymous) and update its start
    event, type, lifted fields and attached data from ``event``."""
    doc["customer_id"] = customer_id
    for key in ("service_type",) + LIFTED:
        if key in event.fields:
            doc[key] = event.fields[key]
    started = doc["started"]
    for key in EVENT_FIELDS:
        if key in event.fields:
            started[key] = event.fields[key]
    if "completed" in doc:
        doc["duration"] = timeutil.millis_between(started["timestamp"],
                                                  doc["completed"]["timestamp"])
    doc["data"].update(event.data)
    lifecycle.set_expiration(doc, event.fields, now or lifecycle.utc_now())


def find_state(doc: Doc, stid: int) -> Doc:
    for state in doc["states"]:
        if state["state_id"] == stid:
            return state
    raise NotFound(f"There is no state {stid} in service {doc['service_id']}")


def find_task(doc: Doc, tid: int) -> Doc:
    for task in doc["tasks"]:
        if task["task_id"] == tid:
            return task
    raise NotFound(f"There is no task {tid} in service {doc['service_id']}")


def _next_id(items: list[Doc], key: str) -> int:
    return max((item[key] for item in items), default=0) + 1


def start_state(doc: Doc, event: Input) -> Doc:
    if "previous_state_id" in event.fields:
        find_state(doc, event.fields["previous_state_id"])
    state = _start({"state_id": _next_id(doc["states"], "state_id")}, event,
                   ("state_type", "previous_state_id"))
    doc["states"].append(state)
    return state


def end_state(doc: Doc, stid: int, event: Input) -> None:
    _complete(find_state(doc, stid), event, f"State {stid}")


def transition(doc: Doc, source: Input, target: Input) -> Doc:
    """Complete state ``source.fields["state_id"]`` and start the target state after
    it, at one instant; returns the new state. Nothing changes when either fails."""
    stid = source.fields["state_id"]
    old = find_state(doc, stid)
    stamp = source.fields.get("timestamp") or timeutil.now()  # one instant for both events
    _complete(old, Input({**source.fields, "timestamp": stamp}, source.data), f"State {stid}")
    return start_state(doc, Input({**target.fields, "timestamp": stamp,
                                   "previous_state_id": stid}, target.data))


def start_task(doc: Doc, event: Input) -> Doc:
    if "state_id" in event.fields:
        find_state(doc, event.fields["state_id"])
    task = _start({"task_id": _next_id(doc["tasks"], "task_id")}, event,
                  ("task_type", "state_id"))
    doc["tasks"].append(task)
    return task


def end_task(doc: Doc, tid: int, event: Input) -> None:
    _complete(find_task(doc, tid), event, f"Task {tid}")


# ------------------------------------------------------------------ attached data
def set_extension(resource: Doc, kind: str, key: str, value: Any, merge: bool) -> None:
    """Replace attached-data ``key`` of ``resource`` with ``value``, or merge the
    object ``value`` into it."""
    if key in _NOT_EXTENSIONS[kind]:
        raise Invalid(f"{key} is a field of the {kind}, not attached data",
                      {"key": [f"{key} is a field or reserved name"]})
    data = resource.setdefault("data", {})
    if not merge:
        data[key] = value
        return
    if not isinstance(value, dict):
        raise Invalid("A merge body must be a JSON object", {"_body": ["not a JSON object"]})
    current = data.get(key)
    if current is None and key not in data:
        data[key] = dict(value)
    elif isinstance(current, dict):
        current.update(value)
    else:
        raise Invalid(f"The value of {key} is not an object and cannot be merged into",
                      {"key": [f"{key} does not hold an object"]})


def set_state_extension(doc: Doc, stid: int, key: str, value: Any, merge: bool) -> Doc:
    state = find_state(doc, stid)
    set_extension(state, "state", key, value, merge)
    return state


def set_task_extension(doc: Doc, tid: int, key: str, value: Any, merge: bool) -> Doc:
    task = find_task(doc, tid)
    set_extension(task, "task", key, value, merge)
    return task
