"""Which resources a query selects, in which order. ``args`` is a plain dict of
parsed query arguments; an argument that is absent or ``None`` filters nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .model import Doc, is_active, ordered


def _status_ok(resource: Doc, status: str | None) -> bool:
    return status is None or (status == "active") == is_active(resource)


def _type_ok(resource: Doc, field: str, types: list[str] | None) -> bool:
    return not types or (field in resource and str(resource[field]) in types)


def service_matches(doc: Doc, args: dict[str, Any], status: str | None) -> bool:
    if not _status_ok(doc, status) or not _type_ok(doc, "service_type",
                                                    args.get("service_types")):
        return False
    started = doc["started"]["timestamp"]
    if args.get("started_from") and started < args["started_from"]:
        return False
    if args.get("started_to") and started >= args["started_to"]:
        return False
    if args.get("completed_from") or args.get("completed_to"):
        if is_active(doc):
            return False
        completed = doc["completed"]["timestamp"]
        if args.get("completed_from") and completed < args["completed_from"]:
            return False
        if args.get("completed_to") and completed >= args["completed_to"]:
            return False
    return True


def service_order(doc: Doc) -> tuple[str, int]:
    """Services are listed by start time, oldest first, ties by id."""
    return doc["started"]["timestamp"], doc["service_id"]


def select_services(docs: Iterable[Doc], args: dict[str, Any], status: str | None
                    ) -> list[Doc]:
    return sorted((doc for doc in docs if service_matches(doc, args, status)),
                  key=service_order)


def select_states(doc: Doc, args: dict[str, Any], status: str | None) -> list[Doc]:
    types = args.get("state_types")
    return ordered([s for s in doc["states"]
                    if _status_ok(s, status) and _type_ok(s, "state_type", types)], "state_id")


def select_tasks(doc: Doc, args: dict[str, Any], status: str | None) -> list[Doc]:
    state_id = args.get("state_id")
    types = args.get("task_types")
    return ordered([t for t in doc["tasks"]
                    if _status_ok(t, status) and _type_ok(t, "task_type", types)
                    and (state_id is None or t.get("state_id") == state_id)], "task_id")
