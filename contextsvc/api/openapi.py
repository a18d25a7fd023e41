"""The OpenAPI 3 document, built from the operations declared on the views
(:mod:`.operations`) and the marshmallow schemas that validate the requests
(apispec's MarshmallowPlugin).

apispec rather than flask-smorest: flask-smorest would take over argument parsing
and error rendering (webargs), while bodies here are open (attached data) and every
error has the contract's own shape; apispec documents the schemas without changing
how requests are handled.

Integers a client sends are documented within JavaScript's exact range
(±(2^53 - 1)) and every field has an example: Swagger UI fills "Try it out" from
them, and an int64 bound such as 9223372036854775807 is rounded by JavaScript into
a value the server refuses. The server itself accepts the whole int64 range where
the contract says so, and responses are documented with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields
from marshmallow.validate import OneOf

from .. import __version__
from ..domain import events, model
from ..domain.fields import MAX_SUB_ID, MAX_TYPE_LENGTH, IntOrString, StrictBoolean, Timestamp
from .auth import PUBLIC
from .errors import Error
from .operations import ANY_OBJECT, ANY_VALUE, EXPORT, Operation
from .query import CommaList, Flag

PREFIX = "/genesys/1/cs"
TIMESTAMP_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                     r"(Z|[+-][0-9]{2}:[0-9]{2})?$")
FLAG_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"
JS_SAFE = 2**53 - 1

DESCRIPTION = """\
Context Services: services (customer commitments), their states and tasks, with
attached data, for contact centers. Every path is also served without the
`/genesys/1/cs` prefix. Any top-level key of a start or end body that is not a field
is *attached data*: any JSON value, kept under its key. Errors are JSON:
`{"message", "exception", "errors"?}`.

When the server has API keys (`[api_keys]`), each operation needs one, sent as
`Authorization: Bearer <key>` ("Authorize" on this page), whose role allows it:
`read` (every GET), `write` (read, and every change), `admin` (write, and
`/maintenance/`). No key or an unknown one: 401; a role that does not allow the
operation: 403. Without keys, nothing needs one."""

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "An API key from `contextsvc keys new` (only when the "
                              "server has `[api_keys]`)"},
}


def _custom_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """OpenAPI properties of this project's own marshmallow fields."""
    if isinstance(field, IntOrString):
        return {"oneOf": [{"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                          {"type": "string", "maxLength": MAX_TYPE_LENGTH}]}
    if isinstance(field, Timestamp):
        return {"type": "string", "pattern": TIMESTAMP_PATTERN,
                "example": field.metadata.get("example", "2009-05-07T12:05:20.157Z")}
    if isinstance(field, StrictBoolean):
        return {"type": "boolean"}
    if isinstance(field, Flag):
        return {"type": "string", "pattern": FLAG_PATTERN}
    if isinstance(field, CommaList):
        return {"type": "string"}
    return {}


def _browser_safe(schema: Any) -> None:
    """Narrow integer bounds to what JavaScript represents exactly, in place. Only
    for what a client sends: a response may hold any int64 the server accepted."""
    if isinstance(schema, dict):
        if "minimum" in schema and schema["minimum"] < -JS_SAFE:
            schema["minimum"] = -JS_SAFE
        if "maximum" in schema and schema["maximum"] > JS_SAFE:
            schema["maximum"] = JS_SAFE
        for value in schema.values():
            _browser_safe(value)
    elif isinstance(schema, list):
        for value in schema:
            _browser_safe(value)


def _param(name: str, schema: dict[str, Any], description: str, example: Any
           ) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description, "example": example}


PATH_PARAMS = {
    "sid": _param("sid", {"type": "integer", "minimum": 1, "maximum": model.MAX_SERVICE_ID},
                  "service id", 1),
    "stid": _param("stid", {"type": "integer", "minimum": 1, "maximum": MAX_SUB_ID},
                   "state id", 1),
    "tid": _param("tid", {"type": "integer", "minimum": 1, "maximum": MAX_SUB_ID},
                  "task id", 1),
    "customer_id": _param("customer_id", {"type": "string", "minLength": 1},
                          "customer id (at most 256 characters when associating)", "ABC1234"),
    "contact_key": _param("contact_key", {"type": "string", "minLength": 1},
                          "contact key of anonymous services", "408-832-7799"),
    "key": _param("key", {"type": "string", "minLength": 1},
                  "attached-data key (not a field or reserved name)", "coupon"),
}

_ERRORS = {
    400: "Invalid body, query parameter or header, or a tenant that is not configured "
         "(InvalidTenantException)",
    401: "No API key, or one the server does not know (when it has keys)",
    403: "The API key's role does not allow this operation, or it is limited to other tenants",
    404: "No such route, service, state or task",
    409: "Already completed",
    412: "If-Match: the service has changed since (PreconditionFailed); nothing changed",
    413: "Body larger than the configured limit",
    415: "Body with a non-JSON content type",
    422: "This Idempotency-Key was used with another method, path or body "
         "(IdempotencyKeyMismatch)",
    503: "The store is busy or cannot write; retry after Retry-After seconds",
}
_RUNNING = "the first request with this Idempotency-Key is still running (Retry-After: 1)"


def _header(name: str, description: str, schema: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    # no example: "Try it out" would send it with every operation
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


IDEMPOTENCY_KEY = _header(
    "Idempotency-Key", "a key of the client's choosing (a UUID): a retry with the same "
    "key within 24 h gets the first answer again, with Idempotent-Replayed: true, and "
    "changes nothing (API.md 10.1)",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7e]+$"})
CONTACT_CENTER_ID = _header(
    "ContactCenterId", "the tenant (contact center), by name or number, when the service has "
    "several (API.md 8.2); absent: the default one. Ignored by a single-tenant service")
GROUP_ID = _header("GroupId", "a business unit: accepted, at most 256 characters, and ignored",
                   {"type": "string", "maxLength": 256})
IF_MATCH = _header("If-Match", "the service's ETag as last read: the write happens only if "
                   "nobody wrote to the service since (else 412)")
IF_NONE_MATCH = _header("If-None-Match", "an ETag of the service: 304 when it is unchanged")
ETAG = {"ETag": {"schema": {"type": "string"},
                 "description": "the service's version: changes on every write to it, its "
                                "states or its tasks"}}
REPLAYED = {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]},
                                    "description": "this answer was recorded under the "
                                                   "request's Idempotency-Key"}}

_ATTACHED_EXAMPLE = {"coupon_name": "DISCOUNTCODE15"}
# bodies whose example is given whole (the one Swagger UI would build from the
# fields' examples would name states that a new service does not have)
EXAMPLES = {"CompositeStart": events.COMPOSITE_EXAMPLE}


class ServiceCreated(Schema):
    service_id = fields.Integer(strict=True, required=True, metadata={"example": 1})


class StateCreated(Schema):
    state_id = fields.Integer(strict=True, required=True, metadata={"example": 1})


class TaskCreated(Schema):
    task_id = fields.Integer(strict=True, required=True, metadata={"example": 1})


class Health(Schema):
    status = fields.String(required=True, validate=OneOf(["ok", "unavailable"]),
                           metadata={"example": "ok"})
    version = fields.String(metadata={"example": __version__,
                                      "description": "contextsvc's version (when ok)"})
    engine = fields.String(metadata={"example": "file",
                                     "description": "the storage engine (when ok)"})
    message = fields.String(metadata={"description": "why the store cannot be read "
                                                     "(when unavailable)"})


class Purged(Schema):
    purged = fields.Integer(strict=True, required=True,
                            metadata={"example": 0, "description": "services removed"})


class CompositeService(Schema):
    service_id = fields.Integer(strict=True, required=True, metadata={"example": 1})
    service_created = fields.Boolean(required=True)
    state_id = fields.Integer(strict=True, metadata={"example": 1})
    state_created = fields.Boolean()
    task_id = fields.Integer(strict=True, metadata={"example": 1})
    task_created = fields.Boolean()


class CompositeStarted(Schema):
    services = fields.List(fields.Nested(CompositeService), required=True)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation(op: Operation, plugin: MarshmallowPlugin) -> dict[str, Any]:
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", op.rule)
    parameters = [PATH_PARAMS[name] for name in sorted(names)]
    if op.query is not None:
        for param in plugin.converter.schema2parameters(op.query, location="query"):
            example = param["schema"].pop("example", None)
            if example is not None:
                param["example"] = example
            _browser_safe(param["schema"])
            parameters.append(param)
    document: dict[str, Any] = {
        "operationId": op.operation_id, "summary": op.summary, "tags": [op.blueprint],
        "parameters": parameters, "responses": {},
        "x-role": op.role,
        "security": [] if op.role == PUBLIC else [{"bearer": []}],
    }
    if op.body == ANY_VALUE:
        document["requestBody"] = {"required": True, "description": "the new value (any JSON)",
                                   "content": _json({}, _ATTACHED_EXAMPLE)}
    elif op.body == ANY_OBJECT:
        document["requestBody"] = {"required": True, "description": "an object to merge",
                                   "content": _json({"type": "object",
                                                     "additionalProperties": True},
                                                    _ATTACHED_EXAMPLE)}
    elif op.body is not None:
        document["requestBody"] = {"required": op.body_required,
                                   "content": _json(_ref(op.body.__name__),
                                                    EXAMPLES.get(op.body.__name__))}
    keyed = op.method == "POST"
    conditional = op.method != "GET" and "<id:sid>" in op.rule
    service = op.response == "Service" and not op.many
    if op.stored:
        parameters += [CONTACT_CENTER_ID, GROUP_ID]
    if keyed:
        parameters.append(IDEMPOTENCY_KEY)
    if conditional:
        parameters.append(IF_MATCH)
    if op.view == "get_service":
        parameters.append(IF_NONE_MATCH)
    responses = document["responses"]
    if op.responses:
        for code, description in sorted(op.responses.items()):
            responses[str(code)] = {"description": description,
                                    "content": _json(_ref(op.response))}
        return document
    location = {"Location": {"schema": {"type": "string"}, "description": "the new resource"}}
    if op.status == 201:
        responses["201"] = {"description": "Created", "content": _json(_ref(op.response)),
                            "headers": location}
    elif op.status == 204:
        responses["204"] = {"description": "Completed"}
    elif op.response is None:
        responses["200"] = {"description": "Done (empty body)"}
    elif op.response == EXPORT:
        item = {"oneOf": [{"type": "integer", "minimum": 1, "maximum": model.MAX_SERVICE_ID,
                           "description": "a service id (export_content false)"},
                          _ref("Service")]}
        responses["200"] = {"description": (
            "OK, in service id order: service ids, or whole services (export_content "
            "true), as a JSON array; with Accept: application/x-ndjson, one per line"),
            "content": {**_json({"type": "array", "items": item}),
                        "application/x-ndjson": {"schema": {"type": "string"}}}}
    elif op.many:
        responses["200"] = {"description": "OK, oldest first",
                            "content": _json({"type": "array", "items": _ref(op.response)})}
    else:
        responses["200"] = {"description": "OK", "content": _json(_ref(op.response))}
        if op.response == "CompositeStarted":
            responses["200"]["headers"] = dict(location)
            responses["200"]["headers"]["Location"] = {
                "schema": {"type": "string"},
                "description": "the first element's deepest resource"}
    success = responses[str(op.status)]
    if service:
        success["headers"] = {**success.get("headers", {}), **ETAG}
    if keyed:
        success["headers"] = {**success.get("headers", {}), **REPLAYED}
    if op.view == "get_service":
        responses["304"] = {"description": "Not modified (If-None-Match)", "headers": ETAG}
    codes = [400, 404, 503, *op.errors]
    if "requestBody" in document:
        codes += [413, 415]
    if keyed:
        codes += [409, 422]
    if conditional:
        codes += [412]
    if op.role != PUBLIC:
        codes += [401, 403]
    for code in sorted(set(codes)):
        text = _ERRORS[code]
        if code == 409 and keyed:
            text = f"{text}, or {_RUNNING}" if 409 in op.errors else f"Busy: {_RUNNING}"
        responses[str(code)] = {"description": text, "content": _json(_ref("Error"))}
    if "401" in responses:
        responses["401"]["headers"] = {"WWW-Authenticate": {
            "schema": {"type": "string", "example": "Bearer"},
            "description": "the scheme to use: Bearer"}}
    return document


def build(operations: Iterable[Operation]) -> dict[str, Any]:
    """The OpenAPI document of ``operations``, under the ``/genesys/1/cs`` prefix."""
    operations = list(operations)
    plugin = MarshmallowPlugin()
    spec = APISpec(title="contextsvc", version=__version__, openapi_version="3.0.3",
                   plugins=[plugin], info={"description": DESCRIPTION},
                   servers=[{"url": PREFIX}])
    plugin.converter.add_attribute_function(_custom_fields)
    bodies = {op.body for op in operations if isinstance(op.body, type)}
    # nested schemas before the ones that nest them, each under its own name
    nesting = (events.CompositeStart,)
    for schema in (events.TransitionFrom, events.TransitionTo,
                   *sorted(bodies - set(nesting), key=lambda s: s.__name__),
                   events.ServiceStart, events.StateStart, events.TaskStart,
                   events.CompositeElement, *(b for b in nesting if b in bodies)):
        if schema.__name__ not in spec.components.schemas:
            spec.components.schema(schema.__name__, schema=schema)
    spec.components.schema("Event", schema=events.Event)
    for name, schema in model.output_schemas().items():
        spec.components.schema(name, schema=schema)
    for schema in (ServiceCreated, StateCreated, TaskCreated, Purged, CompositeService,
                   CompositeStarted, Health, Error):
        spec.components.schema(schema.__name__, schema=schema)

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(_path(op.rule), {})[op.method.lower()] = _operation(op, plugin)
    document = spec.to_dict()
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    components = document["components"]["schemas"]
    for name in [*(s.__name__ for s in bodies), "TransitionFrom", "TransitionTo",
                 "ServiceStart", "StateStart", "TaskStart", "CompositeElement"]:
        # open bodies: attached data; a few are fields only
        components[name]["additionalProperties"] = name not in events.STRICT_BODIES
        _browser_safe(components[name])
    components["ServiceStart"]["description"] = (
        "customer_id or contact_key (or both) is required; every other key is attached "
        "data (any JSON value)")
    document["paths"] = dict(sorted(paths.items()))
    return document
