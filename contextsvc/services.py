"""Services: start, end, get, associate, delete, attached data, and queries."""

from __future__ import annotations

from flask import Blueprint
from marshmallow import ValidationError

from . import rules, schemas
from .errors import invalid
from .web import SID, args, body_object, body_value, created, empty, ok, service_list, store

bp = Blueprint("services", __name__)
S = schemas.SCHEMAS


@bp.post("/services/start")
def start_service():
    loaded, attached = schemas.split(body_object(required=True), S["ServiceStart"])
    doc = store().create_service(lambda sid: rules.new_service(sid, loaded, attached))
    return created("get_service", {"service_id": doc["service_id"]}, sid=doc["service_id"])


@bp.post(f"/services/{SID}/end")
def end_service(sid: int):
    loaded, attached = schemas.split(body_object(), S["EndEvent"], ignore=schemas.START_ONLY)
    store().update_service(sid, lambda doc: rules.end_service(doc, loaded, attached))
    return empty()


@bp.get(f"/services/{SID}")
def get_service(sid: int):
    query = args()
    return ok(rules.render_service(store().get_service(sid), query))


@bp.delete(f"/services/{SID}")
def delete_service(sid: int):
    store().delete_service(sid)
    return empty(200)


@bp.post(f"/customers/<customer_id>/services/{SID}")
def associate(customer_id: str, sid: int):
    try:  # the path's customer id is checked as the body field is (1 to 256 characters)
        S["ServiceStart"].fields["customer_id"].deserialize(customer_id)
    except ValidationError as exc:
        raise invalid({"customer_id": exc.messages}, "path") from None
    loaded, attached = schemas.split(body_object(), S["Associate"],
                                     ignore=("customer_id", "contact_key"))
    _, doc = store().update_service(
        sid, lambda doc: rules.associate(doc, customer_id, loaded, attached))
    return ok(rules.render_service(doc, args()))


@bp.put(f"/services/{SID}/extensions/<key>", defaults={"merge": False})
@bp.put(f"/services/{SID}/extensions/<key>/merge", defaults={"merge": True})
def service_extension(sid: int, key: str, merge: bool):
    value = body_value()
    _, doc = store().update_service(
        sid, lambda doc: rules.set_extension(doc, "service", key, value, merge))
    return ok(rules.render_service(doc, args()))




@bp.get("/customers/<customer_id>/services", defaults={"status": None})
@bp.get("/customers/<customer_id>/services/active", defaults={"status": "active"})
@bp.get("/customers/<customer_id>/services/completed", defaults={"status": "completed"})
def customer_services(customer_id: str, status: str | None):
    query = args()  # before the selection is opened: a bad argument leaks nothing
    return service_list(store().customer_services(customer_id), query, status)


@bp.get("/services/anonymous/<contact_key>", defaults={"status": None})
@bp.get("/services/anonymous/<contact_key>/active", defaults={"status": "active"})
@bp.get("/services/anonymous/<contact_key>/completed", defaults={"status": "completed"})
def anonymous_services(contact_key: str, status: str | None):
    query = args()
    return service_list(store().anonymous_services(contact_key), query, status)
