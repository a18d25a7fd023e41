"""Bodies in, :class:`Input` out: a body (a plain JSON object) validated and split
into its known fields and its attached data. The rules take :class:`Input` values,
so a request handler, a sweeper or an importer feeds them alike.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from marshmallow import Schema, ValidationError, missing

from ..errors import Invalid
from .events import MAX_COMPOSITE, SCHEMAS, START_ONLY
from .model import RESERVED


class Input(NamedTuple):
    """An event as the rules take it: validated fields (timestamps normalized, nulls
    dropped) and attached data (any JSON, by key)."""

    fields: dict[str, Any]
    data: dict[str, Any]


def flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow nests errors by field; the contract wants ``{"a.b": [..]}``."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                out.update(flatten(value, name))
            else:
                out[name] = [str(m) for m in (value if isinstance(value, list) else [value])]
    elif messages:
        items = messages if isinstance(messages, list) else [messages]
        out[prefix or "_schema"] = [str(m) for m in items]
    return out


def invalid(errors: dict[str, list[str]], what: str = "request") -> Invalid:
    first = next(iter(errors.items()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Invalid(f"Invalid {what}: {first[0]}: {first[1][0]}{more}", errors)


@functools.lru_cache(maxsize=256)
def _narrowed(schema: Schema, present: frozenset[str]) -> Schema:
    """``schema`` limited to the fields a body holds, and those it requires or fills
    in: the same result and errors for that body. marshmallow visits every field of
    a schema at each load, present or not, and a body holds few of them (a service
    start 5 of 18): the load then costs half as much. Clients send a handful of
    shapes; the cache keeps the most recent."""
    needed = {name for name, field in schema.fields.items()
              if field.required or field.load_default is not missing}
    return type(schema)(only=tuple(name for name in schema.fields
                                   if name in present or name in needed))


def split(body: Mapping[str, Any], schema: Schema, *, allow: Iterable[str] = (),
          ignore: Iterable[str] = (), prefix: str = "") -> Input:
    """Split a body into (validated known fields, attached data).

    ``allow`` lifts keys out of ``RESERVED`` for this body; ``ignore`` names keys
    that are accepted and dropped. A known field sent as ``null`` counts as absent.
    """
    allow, ignore = set(allow), set(ignore)
    known_names = schema.fields
    errors: dict[str, list[str]] = {}
    known: dict[str, Any] = {}
    attached: dict[str, Any] = {}
    for key, value in body.items():
        if key in known_names and (key not in RESERVED or key in allow):
            if value is not None:
                known[key] = value
        elif key in ignore:
            continue
        elif key in RESERVED:
            errors[prefix + key] = ["Reserved: this key is set by the server."]
        else:
            attached[key] = value
    try:
        loaded = _narrowed(schema, frozenset(known)).load(known)
    except ValidationError as exc:
        errors.update(flatten(exc.messages, prefix.rstrip(".")))
        loaded = {}
    if errors:
        raise invalid(errors, "body")
    return Input(loaded, attached)


# One function per body of the contract.
_END_IGNORES = START_ONLY
_TASK_END_IGNORES = START_ONLY | {"state_id"}


_EXPIRATION = ("ttl", "expiration_time")


def service_start(body: Mapping[str, Any]) -> Input:
    return split(body, SCHEMAS["ServiceStart"], allow=_EXPIRATION + ("auto_complete_after",))


def service_end(body: Mapping[str, Any]) -> Input:
    """A service end: like :func:`end`, and it may set the service's expiration."""
    return split(body, SCHEMAS["ServiceEnd"], allow=_EXPIRATION, ignore=_END_IGNORES)


def strict(body: Mapping[str, Any], schema: str) -> dict[str, Any]:
    """A body that is all fields (no attached data): any other key is a 400."""
    try:
        return SCHEMAS[schema].load(body)
    except ValidationError as exc:
        raise invalid(flatten(exc.messages), "body") from None


def service_expiration(body: Mapping[str, Any]) -> dict[str, Any]:
    return strict(body, "ServiceExpiration")


def purge(body: Mapping[str, Any]) -> dict[str, Any]:
    return strict(body, "Purge")


def end(body: Mapping[str, Any]) -> Input:
    """A service or state end: the start body may be sent again (start-only keys are
    accepted and ignored)."""
    return split(body, SCHEMAS["EndEvent"], ignore=_END_IGNORES)


def task_end(body: Mapping[str, Any]) -> Input:
    return split(body, SCHEMAS["EndEvent"], ignore=_TASK_END_IGNORES)


def associate(body: Mapping[str, Any]) -> Input:
    """The customer comes from the path: the body's ``customer_id`` and
    ``contact_key`` are ignored."""
    return split(body, SCHEMAS["Associate"], allow=_EXPIRATION,
                 ignore=("customer_id", "contact_key"))


def customer_id(value: str) -> str:
    """A customer id from a path, checked as the body field is (1 to 256 characters)."""
    try:
        return SCHEMAS["ServiceStart"].fields["customer_id"].deserialize(value)
    except ValidationError as exc:
        raise invalid({"customer_id": exc.messages}, "path") from None


def state_start(body: Mapping[str, Any]) -> Input:
    return split(body, SCHEMAS["StateStart"])


def task_start(body: Mapping[str, Any]) -> Input:
    return split(body, SCHEMAS["TaskStart"], allow=("state_id",))


def _part(body: Mapping[str, Any], name: str, schema: str, allow: tuple[str, ...]) -> Input:
    part = body.get(name)
    if not isinstance(part, dict):
        raise Invalid(f"{name} must be a JSON object", {name: ["Missing or not an object."]})
    return split(part, SCHEMAS[schema], allow=allow, prefix=f"{name}.")


def transition(body: Mapping[str, Any]) -> tuple[Input, Input]:
    """The two events of a transition: completing ``from`` and starting ``to``.

    The top-level fields and attached data go to both; the keys inside ``from`` and
    ``to`` to their own event only.
    """
    source = _part(body, "from", "TransitionFrom", allow=("state_id",))
    target = _part(body, "to", "TransitionTo", allow=())
    shared = split({k: v for k, v in body.items() if k not in ("from", "to")},
                   SCHEMAS["SharedEvent"])
    return (Input({**shared.fields, **source.fields}, {**shared.data, **source.data}),
            Input({**shared.fields, **target.fields}, {**shared.data, **target.data}))


class Element(NamedTuple):
    """One element of a composite start."""

    service: Input
    state: Input | None
    task: Input | None
    associate_state_task: bool


_ELEMENT_KEYS = ("service", "state", "task", "associate_state_task")


def composite(body: Mapping[str, Any]) -> list[Element]:
    """The elements of a composite start (API.md 10.3), each part validated as the
    body of its own start; errors name the element (``services.1.service.customer_id``)."""
    extra = [key for key in body if key != "services"]
    if extra:
        raise invalid({key: ["Unknown field."] for key in extra}, "body")
    items = body.get("services")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_COMPOSITE:
        raise invalid({"services": [f"Required: a list of 1 to {MAX_COMPOSITE} elements."]},
                      "body")
    elements = []
    for i, item in enumerate(items):
        at = f"services.{i}"
        if not isinstance(item, dict):
            raise invalid({at: ["Not an object."]}, "body")
        unknown = [key for key in item if key not in _ELEMENT_KEYS]
        if unknown:
            raise invalid({f"{at}.{key}": ["Unknown field."] for key in unknown}, "body")
        parts: dict[str, Input | None] = {}
        for name, schema, allow in (("service", "ServiceStart",
                                     _EXPIRATION + ("auto_complete_after",)),
                                    ("state", "StateStart", ()),
                                    ("task", "TaskStart", ("state_id",))):
            part = item.get(name)
            if part is None and name != "service":
                parts[name] = None
            elif not isinstance(part, dict):
                raise invalid({f"{at}.{name}": ["Missing or not an object." if name == "service"
                                                else "Not an object."]}, "body")
            else:
                parts[name] = split(part, SCHEMAS[schema], allow=allow, prefix=f"{at}.{name}.")
        tied = item.get("associate_state_task")
        if tied is not None and not isinstance(tied, bool):
            raise invalid({f"{at}.associate_state_task": ["Must be true or false."]}, "body")
        if tied and (parts["state"] is None or parts["task"] is None):
            raise invalid({f"{at}.associate_state_task": ["Needs a state and a task."]}, "body")
        if tied and "state_id" in parts["task"].fields:  # type: ignore[union-attr]
            raise invalid({f"{at}.task.state_id": [
                "The task belongs to the element's state (associate_state_task)."]}, "body")
        elements.append(Element(parts["service"], parts["state"], parts["task"],  # type: ignore[arg-type]
                                bool(tied)))
    return elements
