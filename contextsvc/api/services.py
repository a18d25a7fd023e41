"""Services: start, end, get, associate, delete, attached data, and queries."""

from __future__ import annotations

from typing import Any

from flask import Response, g

from ..domain import composite, events, inputs, queries, rules
from ..domain.model import render_service
from ..storage import Selection
from . import query, retries, streams
from .operations import ANY_OBJECT, ANY_VALUE, ApiBlueprint, EmptyResponse
from .request import location

bp = ApiBlueprint("services", __name__)


@bp.operation("POST", "/services/start", "Start a service", role="write", status=201,
              body=events.ServiceStart, body_required=True, response="ServiceCreated")
def start_service(body: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    store = g.store
    event, now = inputs.service_start(body), store.clock()
    return store.create_service(
        lambda sid: rules.new_service(sid, event, now),
        lambda doc, _: ({"service_id": doc["service_id"]},
                        location("get_service", sid=doc["service_id"])))


def _no_content(result: Any, doc: dict[str, Any]) -> tuple[None, None]:
    return None, None


def _service(query: dict[str, Any]) -> Any:
    """The answer of a write that returns the service, with its ETag."""
    return lambda _, doc: (render_service(doc, query), {"ETag": g.store.etag(doc)})


@bp.operation("POST", "/services/<id:sid>/end", "Complete a service", role="write",
              status=204, body=events.ServiceEnd, errors=(409,))
def end_service(sid: int, body: dict[str, Any]) -> None:
    event, now = inputs.service_end(body), g.store.clock()
    g.store.update_service(sid, lambda doc: rules.end_service(doc, event, now), _no_content)


@bp.operation("GET", "/services/<id:sid>", "Get a service", role="read",
              query=query.ServiceView, response="Service")
def get_service(sid: int, query: dict[str, Any]) -> Any:
    doc = g.store.get_service(sid)
    etag = g.store.etag(doc)
    if retries.not_modified(etag):
        response = EmptyResponse(status=304)
        response.headers["ETag"] = etag
        return response
    return render_service(doc, query), {"ETag": etag}


@bp.operation("DELETE", "/services/<id:sid>", "Delete a service with its states and tasks",
              role="write")
def delete_service(sid: int) -> None:
    g.store.delete_service(sid)


@bp.operation("POST", "/customers/<customer_id>/services/<id:sid>",
              "Associate a service with a customer", role="write", body=events.Associate,
              query=query.ServiceView, response="Service")
def associate(customer_id: str, sid: int, body: dict[str, Any],
              query: dict[str, Any]) -> dict[str, Any]:
    customer_id = inputs.customer_id(customer_id)
    event, now = inputs.associate(body), g.store.clock()
    return g.store.update_service(
        sid, lambda doc: rules.associate(doc, customer_id, event, now), _service(query))[0]


@bp.operation("PUT", "/services/<id:sid>", "Set when a service expires", role="write",
              body=events.ServiceExpiration, body_required=True, query=query.ServiceView,
              response="Service")
def set_expiration(sid: int, body: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
    fields, now = inputs.service_expiration(body), g.store.clock()
    return g.store.update_service(sid, lambda doc: rules.set_expiration(doc, fields, now),
                                  _service(query))[0]


@bp.operation("PUT", "/services/<id:sid>/extensions/<key>",
              "Replace one key of the attached data of a service", role="write",
              body=ANY_VALUE, query=query.ServiceView, response="Service",
              defaults={"merge": False})
@bp.operation("PUT", "/services/<id:sid>/extensions/<key>/merge",
              "Merge an object into the attached data of a service", role="write",
              body=ANY_OBJECT, query=query.ServiceView, response="Service",
              defaults={"merge": True}, suffix="_merge")
def service_extension(sid: int, key: str, merge: bool, body: Any,
                      query: dict[str, Any]) -> dict[str, Any]:
    return g.store.update_service(
        sid, lambda doc: rules.set_extension(doc, "service", key, body, merge),
        _service(query))[0]


@bp.operation("POST", "/services_composite/start",
              "Find or start services, with a state and a task in each", role="write",
              body=events.CompositeStart, body_required=True, query=query.CompositeQuery,
              response="CompositeStarted")
def composite_start(body: dict[str, Any], query: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, str]]:
    elements = inputs.composite(body)
    create_new = query["create_new_services"]

    def answer(results: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
        first = results[0]  # Location: the first element's deepest resource
        sid = first["service_id"]
        if "task_id" in first:
            where = location("get_task", "tasks", sid=sid, tid=first["task_id"])
        elif "state_id" in first:
            where = location("get_state", "states", sid=sid, stid=first["state_id"])
        else:
            where = location("get_service", sid=sid)
        return {"services": results}, where

    return g.store.find_or_create(
        [composite.wanted(element) for element in elements],
        lambda i, docs: composite.choose(elements[i], docs, create_new),
        lambda i, sid, now: composite.new_service(elements[i], sid, now),
        lambda i, doc, created: composite.apply(elements[i], doc, created),
        answer)


def _listing(selection: Selection, args: dict[str, Any], status: str | None
             ) -> list[dict[str, Any]] | Response:
    """The services of a selection that match, in order. A large answer is streamed,
    so that a worker's memory does not grow with it; a small one is read at once,
    which is faster."""
    if selection.bytes > streams.STREAM_ABOVE:
        return streams.services(selection, args, status)
    with selection:
        docs = list(selection)
    return [render_service(doc, args) for doc in queries.select_services(docs, args, status)]


@bp.operation("GET", "/customers/<customer_id>/services", "List the services of a customer",
              role="read", query=query.ServiceQuery, response="Service", many=True,
              defaults={"status": None})
@bp.operation("GET", "/customers/<customer_id>/services/active",
              "List the active services of a customer", role="read", query=query.ServiceQuery,
              response="Service", many=True, defaults={"status": "active"}, suffix="_active")
@bp.operation("GET", "/customers/<customer_id>/services/completed",
              "List the completed services of a customer", role="read",
              query=query.ServiceQuery, response="Service", many=True,
              defaults={"status": "completed"}, suffix="_completed")
def customer_services(customer_id: str, status: str | None,
                      query: dict[str, Any]) -> list[dict[str, Any]]:
    return _listing(g.store.customer_services(customer_id), query, status)


@bp.operation("GET", "/services/anonymous/<contact_key>",
              "List the anonymous services of a contact key", role="read",
              query=query.ServiceQuery, response="Service", many=True,
              defaults={"status": None})
@bp.operation("GET", "/services/anonymous/<contact_key>/active",
              "List the active anonymous services of a contact key", role="read",
              query=query.ServiceQuery, response="Service", many=True,
              defaults={"status": "active"}, suffix="_active")
@bp.operation("GET", "/services/anonymous/<contact_key>/completed",
              "List the completed anonymous services of a contact key", role="read",
              query=query.ServiceQuery, response="Service", many=True,
              defaults={"status": "completed"}, suffix="_completed")
def anonymous_services(contact_key: str, status: str | None,
                       query: dict[str, Any]) -> list[dict[str, Any]]:
    return _listing(g.store.anonymous_services(contact_key), query, status)
