"""Tasks of a service, optionally tied to one of its states."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from . import rules, schemas
from .web import SID, TID, args, body_object, body_value, created, empty, ok, store

bp = Blueprint("tasks", __name__)
S = schemas.SCHEMAS


@bp.post(f"/services/{SID}/tasks/start")
def start_task(sid: int):
    loaded, attached = schemas.split(body_object(), S["TaskStart"], allow=("state_id",))
    task, _ = store().update_service(sid, lambda doc: rules.start_task(doc, loaded, attached))
    return created("get_task", {"task_id": task["task_id"]}, sid=sid, tid=task["task_id"])


@bp.post(f"/services/{SID}/tasks/{TID}/end")
def end_task(sid: int, tid: int):
    loaded, attached = schemas.split(body_object(), S["EndEvent"],
                                     ignore=schemas.START_ONLY | {"state_id"})
    store().update_service(sid, lambda doc: rules.end_task(doc, tid, loaded, attached))
    return empty()


@bp.get(f"/services/{SID}/tasks", defaults={"status": None})
@bp.get(f"/services/{SID}/tasks/active", defaults={"status": "active"})
@bp.get(f"/services/{SID}/tasks/completed", defaults={"status": "completed"})
def list_tasks(sid: int, status: str | None):
    query = args()
    doc = store().get_service(sid)
    return ok([rules.render_task(t, query, sid) for t in rules.select_tasks(doc, query, status)])


@bp.get(f"/services/{SID}/tasks/{TID}")
def get_task(sid: int, tid: int):
    query = args()
    return ok(rules.render_task(rules.find_task(store().get_service(sid), tid), query, sid))


@bp.put(f"/services/{SID}/tasks/{TID}/extensions/<key>", defaults={"merge": False})
@bp.put(f"/services/{SID}/tasks/{TID}/extensions/<key>/merge", defaults={"merge": True})
def task_extension(sid: int, tid: int, key: str, merge: bool):
    value = body_value()
    task, _ = store().update_service(sid, lambda doc: _set(doc, tid, key, value, merge))
    return ok(rules.render_task(task, args(), sid))


def _set(doc: dict[str, Any], tid: int, key: str, value: Any, merge: bool) -> dict[str, Any]:
    task = rules.find_task(doc, tid)
    rules.set_extension(task, "task", key, value, merge)
    return task
