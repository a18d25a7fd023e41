"""The OpenAPI 3 document, generated from the marshmallow schemas that validate the
requests (apispec's MarshmallowPlugin), with paths read from the app's URL map so
that no route can be left out of it.

apispec rather than flask-smorest: flask-smorest would take over argument parsing
and error rendering (webargs), while bodies here are open (attached data) and every
error has the contract's own shape; apispec documents the schemas without changing
how requests are handled.
"""

from __future__ import annotations

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from . import __version__, schemas

PREFIX = "/genesys/1/cs"
TIMESTAMP_PATTERN = (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                     r"(Z|[+-][0-9]{2}:[0-9]{2})?$")
FLAG_PATTERN = "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$"
MAX_SERVICE_ID = 2**53 - 1
MAX_SUB_ID = 2**31 - 1

DESCRIPTION = """\
Context Services: services (customer commitments), their states and tasks, with
attached data, for contact centers. Every path is also served without the
`/genesys/1/cs` prefix. Any top-level key of a start or end body that is not a field
is *attached data*: any JSON value, kept under its key. Errors are JSON:
`{"message", "exception", "errors"?}`."""


def _custom_fields(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:
    """OpenAPI properties of this project's own marshmallow fields."""
    if isinstance(field, schemas.IntOrString):
        return {"oneOf": [{"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
                          {"type": "string", "maxLength": schemas.MAX_TYPE_LENGTH}]}
    if isinstance(field, schemas.Timestamp):
        return {"type": "string", "pattern": TIMESTAMP_PATTERN,
                "example": "2009-05-07T12:05:20.157Z"}
    if isinstance(field, schemas.StrictBoolean):
        return {"type": "boolean"}
    if isinstance(field, schemas.Flag):
        return {"type": "string", "pattern": FLAG_PATTERN}
    return {}


# Request bodies: the event schemas, open to attached data. Nested schemas come
# before the ones that nest them, so that each is registered under its own name.
BODIES = ("ServiceStart", "EndEvent", "Associate", "StateStart", "TaskStart",
          "TransitionFrom", "TransitionTo", "Transition")
RESPONSES = ("Event", "Task", "State", "Service", "ServiceCreated", "StateCreated",
             "TaskCreated", "Error")


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


PATH_PARAMS = {
    "sid": _param("sid", "path", {"type": "integer", "minimum": 1, "maximum": MAX_SERVICE_ID},
                  "service id"),
    "stid": _param("stid", "path", {"type": "integer", "minimum": 1, "maximum": MAX_SUB_ID},
                   "state id"),
    "tid": _param("tid", "path", {"type": "integer", "minimum": 1, "maximum": MAX_SUB_ID},
                  "task id"),
    "customer_id": _param("customer_id", "path", {"type": "string", "minLength": 1},
                          "customer id (at most 256 characters when associating)"),
    "contact_key": _param("contact_key", "path", {"type": "string", "minLength": 1},
                          "contact key of anonymous services"),
    "key": _param("key", "path", {"type": "string", "minLength": 1},
                  "attached-data key (not a field or reserved name)"),
}

_FLAG = {"type": "string", "pattern": FLAG_PATTERN}
_STAMP = {"type": "string", "pattern": TIMESTAMP_PATTERN}
_LIST = {"type": "string"}
QUERY = {
    "started_from": _param("started_from", "query", _STAMP, "started on or after"),
    "started_to": _param("started_to", "query", _STAMP, "started strictly before"),
    "completed_from": _param("completed_from", "query", _STAMP, "completed on or after"),
    "completed_to": _param("completed_to", "query", _STAMP, "completed strictly before"),
    "service_types": _param("service_types", "query", _LIST,
                            "comma-separated service types (the parameter may repeat)"),
    "state_types": _param("state_types", "query", _LIST, "comma-separated state types"),
    "task_types": _param("task_types", "query", _LIST, "comma-separated task types"),
    "state_id": _param("state_id", "query", {"type": "integer"},
                       "tasks of this state only (no such state: [])"),
    "extensions": _param("extensions", "query", _LIST,
                         "comma-separated attached-data keys to return (default: all)"),
    **{flag: _param(flag, "query", _FLAG, f"include {flag.replace('_', ' ')} (true/false)")
       for flag in ("active_states", "completed_states", "active_tasks", "completed_tasks")},
}
SERVICE_FLAGS = ("active_states", "completed_states", "active_tasks", "completed_tasks",
                 "extensions")
SERVICE_QUERY = ("started_from", "started_to", "completed_from", "completed_to",
                 "service_types") + SERVICE_FLAGS

# endpoint -> what the URL map cannot tell
OPERATIONS: dict[str, dict[str, Any]] = {
    "services.start_service": {"summary": "Start a service", "body": "ServiceStart",
                               "required": True, "created": "ServiceCreated"},
    "services.end_service": {"summary": "Complete a service", "body": "EndEvent",
                             "conflict": True},
    "services.get_service": {"summary": "Get a service", "query": SERVICE_FLAGS,
                             "ok": "Service"},
    "services.delete_service": {"summary": "Delete a service with its states and tasks",
                                "empty": True},
    "services.associate": {"summary": "Associate a service with a customer",
                           "body": "Associate", "query": SERVICE_FLAGS, "ok": "Service"},
    "services.service_extension": {"summary": "attached data of a service", "ok": "Service",
                                   "query": SERVICE_FLAGS, "extension": True},
    "services.customer_services": {"summary": "services of a customer",
                                   "query": SERVICE_QUERY, "list": "Service"},
    "services.anonymous_services": {"summary": "anonymous services of a contact key",
                                    "query": SERVICE_QUERY, "list": "Service"},
    "states.start_state": {"summary": "Start a state", "body": "StateStart",
                           "created": "StateCreated"},
    "states.end_state": {"summary": "Complete a state", "body": "EndEvent", "conflict": True},
    "states.transition": {"summary": "Complete a state and start the next one",
                          "body": "Transition", "required": True, "created": "StateCreated",
                          "conflict": True},
    "states.list_states": {"summary": "states of a service",
                           "query": ("state_types", "active_tasks", "completed_tasks",
                                     "extensions"), "list": "State"},
    "states.get_state": {"summary": "Get a state",
                         "query": ("active_tasks", "completed_tasks", "extensions"),
                         "ok": "State"},
    "states.state_extension": {"summary": "attached data of a state", "ok": "State",
                               "query": ("active_tasks", "completed_tasks", "extensions"),
                               "extension": True},
    "tasks.start_task": {"summary": "Start a task", "body": "TaskStart",
                         "created": "TaskCreated"},
    "tasks.end_task": {"summary": "Complete a task", "body": "EndEvent", "conflict": True},
    "tasks.list_tasks": {"summary": "tasks of a service",
                         "query": ("state_id", "task_types", "extensions"), "list": "Task"},
    "tasks.get_task": {"summary": "Get a task", "query": ("extensions",), "ok": "Task"},
    "tasks.task_extension": {"summary": "attached data of a task", "ok": "Task",
                             "query": ("extensions",), "extension": True},
}

_ERRORS = {
    400: "Invalid body or query parameter",
    404: "No such route, service, state or task",
    409: "Already completed",
    413: "Body larger than the configured limit",
    415: "Body with a non-JSON content type",
    503: "The store is busy or cannot write; retry after Retry-After seconds",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _operation(endpoint: str, rule: Any, method: str) -> dict[str, Any]:
    spec = OPERATIONS[endpoint]
    status = rule.defaults.get("status") if rule.defaults else None
    merge = bool(rule.defaults and rule.defaults.get("merge"))
    summary = spec["summary"]
    if "list" in spec:
        summary = f"List the {status + ' ' if status else ''}{summary}"
    if spec.get("extension"):
        summary = ("Merge an object into the " if merge else "Replace one key of the ") + summary
    name = endpoint.split(".")[1] + (f"_{status}" if status else "") + ("_merge" if merge else "")
    op: dict[str, Any] = {
        "operationId": name, "summary": summary, "tags": [endpoint.split(".")[0]],
        "parameters": [PATH_PARAMS[arg] for arg in sorted(rule.arguments)
                       if arg in PATH_PARAMS] + [QUERY[q] for q in spec.get("query", ())],
        "responses": {},
    }
    responses = op["responses"]
    if "body" in spec:
        op["requestBody"] = {"required": spec.get("required", False),
                             "content": _json(_ref(spec["body"]))}
    if spec.get("extension"):
        op["requestBody"] = {"required": True, "content": _json(
            {"type": "object", "additionalProperties": True} if merge else {}),
            "description": "the new value (any JSON)" if not merge else "an object to merge"}
    if "created" in spec:
        responses["201"] = {"description": "Created", "content": _json(_ref(spec["created"])),
                            "headers": {"Location": {"schema": {"type": "string"},
                                                     "description": "the new resource"}}}
    elif "ok" in spec:
        responses["200"] = {"description": "OK", "content": _json(_ref(spec["ok"]))}
    elif "list" in spec:
        responses["200"] = {"description": "OK, oldest first",
                            "content": _json({"type": "array", "items": _ref(spec["list"])})}
    elif spec.get("empty"):
        responses["200"] = {"description": "Deleted (empty body)"}
    else:
        responses["204"] = {"description": "Completed"}
    codes = [400, 404, 503]
    if "requestBody" in op:
        codes += [413, 415]
    if spec.get("conflict"):
        codes.append(409)
    for code in sorted(codes):
        responses[str(code)] = {"description": _ERRORS[code], "content": _json(_ref("Error"))}
    return op


def build(app: Any) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes under the ``/genesys/1/cs`` prefix."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title="contextsvc", version=__version__, openapi_version="3.0.3",
                   plugins=[plugin], info={"description": DESCRIPTION},
                   servers=[{"url": PREFIX}])
    plugin.converter.add_attribute_function(_custom_fields)
    for name in BODIES + RESPONSES:
        spec.components.schema(name, schema=getattr(schemas, name))
    components = spec.to_dict()["components"]["schemas"]
    for name in BODIES:  # open bodies: every other key is attached data
        components[name]["additionalProperties"] = True
    components["ServiceStart"]["anyOf"] = [{"required": ["customer_id"]},
                                           {"required": ["contact_key"]}]
    components["TransitionFrom"]["required"] = ["state_id"]

    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in OPERATIONS or not rule.rule.startswith(PREFIX + "/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(PREFIX):])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(rule.endpoint, rule, method)
    document = spec.to_dict()
    document["components"]["schemas"] = components
    document["paths"] = dict(sorted(paths.items()))
    return document
