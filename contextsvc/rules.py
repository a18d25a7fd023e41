"""The rules of services, states and tasks, as functions on stored documents.

A stored service document::

    {"service_id", "customer_id"?, "contact_key"?, "service_type"?, "est_duration"?,
     "disposition"?, "disposition_desc"?, "started": {...}, "completed"?: {...},
     "duration"?, "data": {attached data}, "states": [...], "tasks": [...]}

States and tasks have the same shape with their own id and type fields. Rendering
turns a document into the API representation (attached data at the top level).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import schemas, timeutil
from .errors import Conflict, Invalid, NotFound

Doc = dict[str, Any]
LIFTED = ("est_duration", "disposition", "disposition_desc")

_COMMON = ("est_duration", "started", "completed", "disposition", "disposition_desc",
           "duration")
SERVICE_FIELDS = frozenset(("service_id", "customer_id", "contact_key", "service_type")
                           + _COMMON)
STATE_FIELDS = frozenset(("state_id", "state_type", "previous_state_id") + _COMMON)
TASK_FIELDS = frozenset(("task_id", "task_type", "state_id") + _COMMON)

# names an extension key may not take, per resource
_NOT_EXTENSIONS = {
    "service": schemas.RESERVED | SERVICE_FIELDS | set(schemas.SCHEMAS["ServiceStart"].fields),
    "state": schemas.RESERVED | STATE_FIELDS | set(schemas.SCHEMAS["StateStart"].fields),
    "task": schemas.RESERVED | TASK_FIELDS | set(schemas.SCHEMAS["TaskStart"].fields),
}


# ------------------------------------------------------------------ start / end
def _start(ids: Doc, loaded: Doc, attached: Doc, own: tuple[str, ...]) -> Doc:
    resource = dict(ids)
    for key in own + LIFTED:
        if key in loaded:
            resource[key] = loaded[key]
    resource["started"] = schemas.event_of(loaded)
    resource["data"] = dict(attached)
    return resource


def _complete(resource: Doc, loaded: Doc, attached: Doc, label: str) -> None:
    if "completed" in resource:
        raise Conflict(f"{label} is already completed")
    event = schemas.event_of(loaded)
    resource["completed"] = event
    for key in ("disposition", "disposition_desc"):
        if key in loaded:
            resource[key] = loaded[key]
    resource["duration"] = timeutil.millis_between(resource["started"]["timestamp"],
                                                   event["timestamp"])
    resource.setdefault("data", {}).update(attached)


def new_service(sid: int, loaded: Doc, attached: Doc) -> Doc:
    doc = _start({"service_id": sid}, loaded,
                 attached, ("customer_id", "contact_key", "service_type"))
    doc["states"], doc["tasks"] = [], []
    if loaded.get("auto_closed"):
        doc["completed"] = {"timestamp": doc["started"]["timestamp"]}
        doc["duration"] = 0
    return doc


def end_service(doc: Doc, loaded: Doc, attached: Doc) -> None:
    _complete(doc, loaded, attached, f"Service {doc['service_id']}")


def associate(doc: Doc, customer_id: str, loaded: Doc, attached: Doc) -> None:
    doc["customer_id"] = customer_id
    for key in ("service_type",) + LIFTED:
        if key in loaded:
            doc[key] = loaded[key]
    started = doc["started"]
    for key in schemas.EVENT_FIELDS:
        if key in loaded:
            started[key] = loaded[key]
    if "completed" in doc:
        doc["duration"] = timeutil.millis_between(started["timestamp"],
                                                  doc["completed"]["timestamp"])
    doc["data"].update(attached)


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


def start_state(doc: Doc, loaded: Doc, attached: Doc) -> Doc:
    if "previous_state_id" in loaded:
        find_state(doc, loaded["previous_state_id"])
    state = _start({"state_id": _next_id(doc["states"], "state_id")}, loaded, attached,
                   ("state_type", "previous_state_id"))
    doc["states"].append(state)
    return state


def end_state(doc: Doc, stid: int, loaded: Doc, attached: Doc) -> None:
    _complete(find_state(doc, stid), loaded, attached, f"State {stid}")


def transition(doc: Doc, shared: Doc, attached: Doc, source: Doc, source_data: Doc,
               target: Doc, target_data: Doc) -> Doc:
    """Complete ``source["state_id"]`` and start the target state, atomically."""
    stid = source["state_id"]
    old = find_state(doc, stid)
    event = dict(shared)
    event.setdefault("timestamp", timeutil.now())  # one instant for both events
    _complete(old, {**event, **source}, {**attached, **source_data}, f"State {stid}")
    return start_state(doc, {**event, **target, "previous_state_id": stid},
                       {**attached, **target_data})


def start_task(doc: Doc, loaded: Doc, attached: Doc) -> Doc:
    if "state_id" in loaded:
        find_state(doc, loaded["state_id"])
    task = _start({"task_id": _next_id(doc["tasks"], "task_id")}, loaded, attached,
                  ("task_type", "state_id"))
    doc["tasks"].append(task)
    return task


def end_task(doc: Doc, tid: int, loaded: Doc, attached: Doc) -> None:
    _complete(find_task(doc, tid), loaded, attached, f"Task {tid}")


def set_extension(resource: Doc, kind: str, key: str, value: Any, merge: bool) -> None:
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


# ------------------------------------------------------------------ queries
def is_active(resource: Doc) -> bool:
    return "completed" not in resource


def _status_ok(resource: Doc, status: str | None) -> bool:
    return status is None or (status == "active") == is_active(resource)


def _type_ok(resource: Doc, field: str, types: list[str] | None) -> bool:
    return not types or (field in resource and str(resource[field]) in types)


def service_matches(doc: Doc, args: Doc, status: str | None) -> bool:
    if not _status_ok(doc, status) or not _type_ok(doc, "service_type", args["service_types"]):
        return False
    started = doc["started"]["timestamp"]
    if args.get("started_from") and started < args["started_from"]:
        return False
    if args.get("started_to") and started >= args["started_to"]:
        return False
    if args.get("completed_from") or args.get("completed_to"):
        if is_active(doc):
            return False
        completed = doc["completed"]["timestamp"]
        if args.get("completed_from") and completed < args["completed_from"]:
            return False
        if args.get("completed_to") and completed >= args["completed_to"]:
            return False
    return True


def _ordered(items: list[Doc], key: str) -> list[Doc]:
    return sorted(items, key=lambda item: (item["started"]["timestamp"], item[key]))


def service_order(doc: Doc) -> tuple[str, int]:
    """Services are listed by start time, oldest first, ties by id."""
    return doc["started"]["timestamp"], doc["service_id"]


def order_services(docs: Iterable[Doc]) -> list[Doc]:
    return sorted(docs, key=service_order)


def select_states(doc: Doc, args: Doc, status: str | None) -> list[Doc]:
    return _ordered([s for s in doc["states"]
                     if _status_ok(s, status) and _type_ok(s, "state_type", args["state_types"])],
                    "state_id")


def select_tasks(doc: Doc, args: Doc, status: str | None) -> list[Doc]:
    state_id = args.get("state_id")
    return _ordered([t for t in doc["tasks"]
                     if _status_ok(t, status) and _type_ok(t, "task_type", args["task_types"])
                     and (state_id is None or t.get("state_id") == state_id)], "task_id")


# ------------------------------------------------------------------ rendering
def _render(resource: Doc, fields: frozenset[str], extensions: list[str] | None) -> Doc:
    # one pass over the stored document, in its order (the id comes first)
    out = {key: value for key, value in resource.items() if key in fields and value is not None}
    data = resource.get("data", {})
    if extensions is None:
        out.update(data)
    else:
        out.update((key, data[key]) for key in extensions if key in data)
    return out


def render_task(task: Doc, args: Doc, service_id: int | None = None) -> Doc:
    out = _render(task, TASK_FIELDS, args.get("extensions"))
    return {"service_id": service_id, **out} if service_id is not None else out


def _tasks(tasks: list[Doc], args: Doc) -> Doc:
    out = {}
    if args.get("active_tasks"):
        out["active_tasks"] = [render_task(t, args) for t in _ordered(tasks, "task_id")
                               if is_active(t)]
    if args.get("completed_tasks"):
        out["completed_tasks"] = [render_task(t, args) for t in _ordered(tasks, "task_id")
                                  if not is_active(t)]
    return out


def render_state(state: Doc, doc: Doc, args: Doc, top: bool = True) -> Doc:
    """A state; at the top level it names its service and may carry its tasks."""
    out = _render(state, STATE_FIELDS, args.get("extensions"))
    if not top:
        return out
    own = [t for t in doc["tasks"] if t.get("state_id") == state["state_id"]]
    return {"service_id": doc["service_id"], **out, **_tasks(own, args)}


def render_service(doc: Doc, args: Doc) -> Doc:
    out = _render(doc, SERVICE_FIELDS, args.get("extensions"))
    if args.get("active_states") or args.get("completed_states"):
        states = _ordered(doc["states"], "state_id")
        if args.get("active_states"):
            out["active_states"] = [render_state(s, doc, args, top=False) for s in states
                                    if is_active(s)]
        if args.get("completed_states"):
            out["completed_states"] = [render_state(s, doc, args, top=False) for s in states
                                       if not is_active(s)]
    if args.get("active_tasks") or args.get("completed_tasks"):
        out.update(_tasks(doc["tasks"], args))
    return out
