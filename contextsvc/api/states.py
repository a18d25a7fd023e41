"""States of a service: start, end, transition, queries, attached data."""

from __future__ import annotations

from typing import Any

from flask import g

from ..domain import events, inputs, queries, rules
from ..domain.model import render_state
from . import query
from .operations import ANY_OBJECT, ANY_VALUE, ApiBlueprint
from .request import location

bp = ApiBlueprint("states", __name__)


@bp.operation("POST", "/services/<id:sid>/states/start", "Start a state", role="write",
              status=201, body=events.StateStart, response="StateCreated")
def start_state(sid: int, body: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    event = inputs.state_start(body)
    return g.store.update_service(sid, lambda doc: rules.start_state(doc, event), _created)[0]


def _created(state: dict[str, Any], doc: dict[str, Any]
             ) -> tuple[dict[str, int], dict[str, str]]:
    stid = state["state_id"]
    return {"state_id": stid}, location("get_state", sid=doc["service_id"], stid=stid)


@bp.operation("POST", "/services/<id:sid>/states/<id:stid>/end", "Complete a state",
              role="write", status=204, body=events.EndEvent, errors=(409,))
def end_state(sid: int, stid: int, body: dict[str, Any]) -> None:
    event = inputs.end(body)
    g.store.update_service(sid, lambda doc: rules.end_state(doc, stid, event),
                           lambda result, doc: (None, None))


@bp.operation("POST", "/services/<id:sid>/states/transition",
              "Complete a state and start the next one", role="write", status=201,
              body=events.Transition, body_required=True, response="StateCreated",
              errors=(409,))
def transition(sid: int, body: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    source, target = inputs.transition(body)
    return g.store.update_service(sid, lambda doc: rules.transition(doc, source, target),
                                  _created)[0]


@bp.operation("GET", "/services/<id:sid>/states", "List the states of a service",
              role="read", query=query.StateList, response="State", many=True,
              defaults={"status": None})
@bp.operation("GET", "/services/<id:sid>/states/active",
              "List the active states of a service", role="read", query=query.StateList,
              response="State", many=True, defaults={"status": "active"}, suffix="_active")
@bp.operation("GET", "/services/<id:sid>/states/completed",
              "List the completed states of a service", role="read", query=query.StateList,
              response="State", many=True, defaults={"status": "completed"},
              suffix="_completed")
def list_states(sid: int, status: str | None, query: dict[str, Any]) -> list[dict[str, Any]]:
    doc = g.store.get_service(sid)
    return [render_state(s, doc, query) for s in queries.select_states(doc, query, status)]


@bp.operation("GET", "/services/<id:sid>/states/<id:stid>", "Get a state", role="read",
              query=query.StateView, response="State")
def get_state(sid: int, stid: int, query: dict[str, Any]) -> dict[str, Any]:
    doc = g.store.get_service(sid)
    return render_state(rules.find_state(doc, stid), doc, query)


@bp.operation("PUT", "/services/<id:sid>/states/<id:stid>/extensions/<key>",
              "Replace one key of the attached data of a state", role="write",
              body=ANY_VALUE, query=query.StateView, response="State",
              defaults={"merge": False})
@bp.operation("PUT", "/services/<id:sid>/states/<id:stid>/extensions/<key>/merge",
              "Merge an object into the attached data of a state", role="write",
              body=ANY_OBJECT, query=query.StateView, response="State",
              defaults={"merge": True}, suffix="_merge")
def state_extension(sid: int, stid: int, key: str, merge: bool, body: Any,
                    query: dict[str, Any]) -> dict[str, Any]:
    state, doc = g.store.update_service(
        sid, lambda doc: rules.set_state_extension(doc, stid, key, body, merge))
    return render_state(state, doc, query)
