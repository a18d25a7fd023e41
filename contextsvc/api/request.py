"""Reading a request: ids in paths, the JSON body, and the query arguments each
operation declares (:mod:`.query`)."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from ..errors import Invalid
from . import jsonbody


class IdConverter(BaseConverter):
    """A resource id in a path (``<id:sid>``): ASCII digits without leading zeros.

    werkzeug's ``int`` converter matches any Unicode digit (``/services/%EF%BC%91``,
    a fullwidth 1, is service 1) and zero padding (``/services/01``); API.md 2.1
    says such an id does not match the route. ``0`` does match, like an id past
    the largest: it names no resource, and the store answers 404 for every method
    the route serves (a method it does not serve stays a 405). There is no upper
    bound for the same reason: with one, werkzeug answers 405 instead of 404 when
    an out-of-range id meets a method the route does not serve.
    """

    regex = r"0|[1-9][0-9]*"
    part_isolating = True

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(int(value))


def _limits() -> dict[str, int]:
    return current_app.config["CONTEXTSVC"]["limits"]


def _raw_body(cache: bool = False) -> bytes:
    try:
        return request.get_data(cache=cache)
    except HTTPException:
        raise  # 413 and the like, rendered by the error handler
    except Exception as exc:  # broken chunking, a client that went away mid-body...
        raise Invalid("The request body could not be read",
                      {"_body": [f"unreadable body: {type(exc).__name__}"]}) from None


def body_object(required: bool = False) -> dict[str, Any]:
    """The body as a JSON object; ``{}`` when absent and not required."""
    return jsonbody.parse_object(_raw_body(), request.mimetype, _limits(), required=required)


def body_value() -> Any:
    """The body as any JSON value; required."""
    value = jsonbody.parse(_raw_body(), request.mimetype, _limits())
    if value is jsonbody.ABSENT:
        raise Invalid("A JSON value body is required", {"_body": ["body is required"]})
    return value


# an argument of a route's rule (``<id:sid>``, ``<customer_id>``); group 1: its name
RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def location(view: str, blueprint: str | None = None, **ids: int) -> dict[str, str]:
    """The ``Location`` header of a created resource, under the prefix the request
    came in by (each blueprint is registered once per prefix, the unprefixed one
    named ``<name>_root``). ``blueprint`` names another blueprint than the request's.

    The same path as ``url_for`` builds, from the route's rule turned into a format
    string once: every write that creates something answers with one, and
    ``url_for`` costs as much as a tenth of a start-service. The values are ids
    (ints), which need no quoting."""
    sent = request._get_current_object()  # type: ignore[attr-defined]
    name = sent.blueprint or ""
    if blueprint is not None:
        name = blueprint + ("_root" if name.endswith("_root") else "")
    endpoint = f"{name}.{view}"
    paths: dict[str, str] = current_app.extensions.setdefault("contextsvc.locations", {})
    path = paths.get(endpoint)
    if path is None:
        rule = next(current_app.url_map.iter_rules(endpoint))
        path = paths[endpoint] = RULE_ARGUMENT.sub(r"{\1}", rule.rule)
    return {"Location": sent.script_root
            + path.format_map({key: int(value) for key, value in ids.items()})}


def raw_body() -> bytes:
    """The body's bytes, kept for the body's parsing afterwards."""
    return _raw_body(cache=True)
