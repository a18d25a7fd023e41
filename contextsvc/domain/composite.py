"""Find-or-create (API.md 10.3): the reference product's composite start, the IVR's
resume in one call. What is reused is decided here, in one place:

* a service: an **active** service with the same ``customer_id`` (or, for an
  element without one, an anonymous service with the same ``contact_key``) and the
  same ``service_type``, the most recently started (then the highest id);
* in it, a state: an active state of the same ``state_type``, most recent first;
* a task: an active task of the same ``task_type`` that belongs to the same state
  (the element's state with ``associate_state_task``, the ``state_id`` of its body,
  or none), most recent first.

Types compare as text (``100`` and ``"100"`` are one type), as the queries'
``service_types`` do; an absent type matches only an absent type. A reused
resource is left as it is: the body's fields and attached data are used only to
start what is not found. The store runs the whole request as one unit of work
(:meth:`contextsvc.storage.base.ServiceStore.find_or_create`), so that two callers
racing on one customer find or create one service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import rules
from .inputs import Element, Input
from .model import is_active

Doc = dict[str, Any]


def _same(a: Any, b: Any) -> bool:
    return (a is None) == (b is None) and (a is None or str(a) == str(b))


def _latest(items: list[Doc], id_field: str) -> Doc | None:
    if not items:
        return None
    return max(items, key=lambda item: (item["started"]["timestamp"], item[id_field]))


def wanted(element: Element) -> tuple[str | None, str | None]:
    """Where the store looks: the customer's services, or the anonymous services of
    the contact key."""
    fields = element.service.fields
    customer = fields.get("customer_id")
    return customer, None if customer is not None else fields.get("contact_key")


def choose(element: Element, candidates: list[Doc], create_new: bool) -> Doc | None:
    """The service to reuse among ``candidates`` (settled at this moment), or None
    to start one."""
    if create_new:
        return None
    kind = element.service.fields.get("service_type")
    return _latest([doc for doc in candidates
                    if is_active(doc) and _same(doc.get("service_type"), kind)], "service_id")


def new_service(element: Element, sid: int, now: datetime) -> Doc:
    return rules.new_service(sid, element.service, now)


def apply(element: Element, doc: Doc, created: bool) -> Doc:
    """Find or start the element's state and task in ``doc``; the element's answer."""
    out: Doc = {"service_id": doc["service_id"], "service_created": created}
    state = None
    if element.state is not None:
        kind = element.state.fields.get("state_type")
        state = _latest([s for s in doc["states"]
                         if is_active(s) and _same(s.get("state_type"), kind)], "state_id")
        out["state_created"] = state is None
        if state is None:
            state = rules.start_state(doc, element.state)
        out["state_id"] = state["state_id"]
    if element.task is not None:
        task_event = element.task
        if element.associate_state_task and state is not None:
            task_event = Input({**task_event.fields, "state_id": state["state_id"]},
                               task_event.data)
        owner = task_event.fields.get("state_id")
        if owner is not None:
            rules.find_state(doc, owner)  # 404 when the body names no state of it
        kind = task_event.fields.get("task_type")
        task = _latest([t for t in doc["tasks"]
                        if is_active(t) and _same(t.get("task_type"), kind)
                        and t.get("state_id") == owner], "task_id")
        out["task_created"] = task is None
        if task is None:
            task = rules.start_task(doc, task_event)
        out["task_id"] = task["task_id"]
    return {key: out[key] for key in ("service_id", "service_created", "state_id",
                                      "state_created", "task_id", "task_created") if key in out}

