"""Tasks of a service, optionally tied to one of its states."""

from __future__ import annotations

from typing import Any

from flask import g

from ..domain import events, inputs, queries, rules
from ..domain.model import render_task
from . import query
from .operations import ANY_OBJECT, ANY_VALUE, ApiBlueprint
from .request import location

bp = ApiBlueprint("tasks", __name__)


@bp.operation("POST", "/services/<id:sid>/tasks/start", "Start a task", role="write",
              status=201, body=events.TaskStart, response="TaskCreated")
def start_task(sid: int, body: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    event = inputs.task_start(body)

    def created(task: dict[str, Any], doc: dict[str, Any]
                ) -> tuple[dict[str, int], dict[str, str]]:
        return {"task_id": task["task_id"]}, location("get_task", sid=sid, tid=task["task_id"])

    return g.store.update_service(sid, lambda doc: rules.start_task(doc, event), created)[0]


@bp.operation("POST", "/services/<id:sid>/tasks/<id:tid>/end", "Complete a task",
              role="write", status=204, body=events.EndEvent, errors=(409,))
def end_task(sid: int, tid: int, body: dict[str, Any]) -> None:
    event = inputs.task_end(body)
    g.store.update_service(sid, lambda doc: rules.end_task(doc, tid, event),
                           lambda result, doc: (None, None))


@bp.operation("GET", "/services/<id:sid>/tasks", "List the tasks of a service", role="read",
              query=query.TaskList, response="Task", many=True, defaults={"status": None})
@bp.operation("GET", "/services/<id:sid>/tasks/active", "List the active tasks of a service",
              role="read", query=query.TaskList, response="Task", many=True,
              defaults={"status": "active"}, suffix="_active")
@bp.operation("GET", "/services/<id:sid>/tasks/completed",
              "List the completed tasks of a service", role="read", query=query.TaskList,
              response="Task", many=True, defaults={"status": "completed"},
              suffix="_completed")
def list_tasks(sid: int, status: str | None, query: dict[str, Any]) -> list[dict[str, Any]]:
    doc = g.store.get_service(sid)
    return [render_task(t, query, sid) for t in queries.select_tasks(doc, query, status)]


@bp.operation("GET", "/services/<id:sid>/tasks/<id:tid>", "Get a task", role="read",
              query=query.TaskView, response="Task")
def get_task(sid: int, tid: int, query: dict[str, Any]) -> dict[str, Any]:
    return render_task(rules.find_task(g.store.get_service(sid), tid), query, sid)


@bp.operation("PUT", "/services/<id:sid>/tasks/<id:tid>/extensions/<key>",
              "Replace one key of the attached data of a task", role="write",
              body=ANY_VALUE, query=query.TaskView, response="Task",
              defaults={"merge": False})
@bp.operation("PUT", "/services/<id:sid>/tasks/<id:tid>/extensions/<key>/merge",
              "Merge an object into the attached data of a task", role="write",
              body=ANY_OBJECT, query=query.TaskView, response="Task",
              defaults={"merge": True}, suffix="_merge")
def task_extension(sid: int, tid: int, key: str, merge: bool, body: Any,
                   query: dict[str, Any]) -> dict[str, Any]:
    task, _ = g.store.update_service(
        sid, lambda doc: rules.set_task_extension(doc, tid, key, body, merge))
    return render_task(task, query, sid)
