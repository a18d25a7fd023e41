"""States of a service: start, end, transition, queries, attached data."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from . import rules, schemas
from .errors import Invalid
from .web import SID, STID, args, body_object, body_value, created, empty, ok, store

bp = Blueprint("states", __name__)
S = schemas.SCHEMAS


@bp.post(f"/services/{SID}/states/start")
def start_state(sid: int):
    loaded, attached = schemas.split(body_object(), S["StateStart"])
    state, _ = store().update_service(sid, lambda doc: rules.start_state(doc, loaded, attached))
    return created("get_state", {"state_id": state["state_id"]}, sid=sid, stid=state["state_id"])


@bp.post(f"/services/{SID}/states/{STID}/end")
def end_state(sid: int, stid: int):
    loaded, attached = schemas.split(body_object(), S["EndEvent"], ignore=schemas.START_ONLY)
    store().update_service(sid, lambda doc: rules.end_state(doc, stid, loaded, attached))
    return empty()


def _part(body: dict[str, Any], name: str, schema: str, required_id: bool
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    part = body.get(name)
    if not isinstance(part, dict):
        raise Invalid(f"{name} must be a JSON object", {name: ["Missing or not an object."]})
    allow = ("state_id",) if required_id else ()
    loaded, attached = schemas.split(part, S[schema], allow=allow, prefix=f"{name}.")
    if required_id and "state_id" not in loaded:
        raise Invalid(f"{name}.state_id is required", {f"{name}.state_id": ["Missing."]})
    return loaded, attached


@bp.post(f"/services/{SID}/states/transition")
def transition(sid: int):
    body = body_object(required=True)
    source, source_data = _part(body, "from", "TransitionFrom", required_id=True)
    target, target_data = _part(body, "to", "TransitionTo", required_id=False)
    rest = {k: v for k, v in body.items() if k not in ("from", "to")}
    shared, attached = schemas.split(rest, S["SharedEvent"])
    state, _ = store().update_service(sid, lambda doc: rules.transition(
        doc, shared, attached, source, source_data, target, target_data))
    return created("get_state", {"state_id": state["state_id"]}, sid=sid, stid=state["state_id"])


@bp.get(f"/services/{SID}/states", defaults={"status": None})
@bp.get(f"/services/{SID}/states/active", defaults={"status": "active"})
@bp.get(f"/services/{SID}/states/completed", defaults={"status": "completed"})
def list_states(sid: int, status: str | None):
    query = args()
    doc = store().get_service(sid)
    return ok([rules.render_state(s, doc, query) for s in rules.select_states(doc, query, status)])


@bp.get(f"/services/{SID}/states/{STID}")
def get_state(sid: int, stid: int):
    query = args()
    doc = store().get_service(sid)
    return ok(rules.render_state(rules.find_state(doc, stid), doc, query))


@bp.put(f"/services/{SID}/states/{STID}/extensions/<key>", defaults={"merge": False})
@bp.put(f"/services/{SID}/states/{STID}/extensions/<key>/merge", defaults={"merge": True})
def state_extension(sid: int, stid: int, key: str, merge: bool):
    value = body_value()
    state, doc = store().update_service(sid, lambda doc: _set(doc, stid, key, value, merge))
    return ok(rules.render_state(state, doc, args()))


def _set(doc: dict[str, Any], stid: int, key: str, value: Any, merge: bool) -> dict[str, Any]:
    state = rules.find_state(doc, stid)
    rules.set_extension(state, "state", key, value, merge)
    return state
