"""Maintenance of the whole store: purge (API.md 6.4) and the export stream (7.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Response, current_app, g, request

from ..domain import events, export, housekeeping, idempotency, inputs, timeutil
from . import query, streams
from .operations import EXPORT, ApiBlueprint

bp = ApiBlueprint("maintenance", __name__)
_MILLISECOND = timedelta(milliseconds=1)


@bp.operation("POST", "/maintenance/purge", "Remove the services started before a moment",
              role="admin", body=events.Purge, body_required=True, response="Purged")
def purge(body: dict[str, Any]) -> dict[str, int]:
    fields = inputs.purge(body)
    policy, _ = current_app.extensions["contextsvc.time"]
    store = g.store
    return idempotency.spanning(  # a purge spans many units of work: claimed first
        store.store, store.request, store.clock,
        lambda tick: {"purged": housekeeping.purge(store.store, fields["limit"],
                                                   fields["operation"], policy,
                                                   store.clock(), tick=tick)})


@bp.operation("GET", "/maintenance/services/stream",
              "Export the services with an event in a time range", role="admin",
              query=query.ExportQuery, response=EXPORT)
def export_services(query: dict[str, Any]) -> Response:
    """Streamed in id order, in batches: writes go on meanwhile, the worker's memory
    does not grow with the export, and each service is whole, as it was at one
    moment. ``Accept: application/x-ndjson`` gives one value per line."""
    # by default the range ends now, this very millisecond included
    time_to = query.get("time_to") or timeutil.format(g.store.clock() + _MILLISECOND)
    selector = export.Selector(query["time_from"], time_to, query["filter_events"],
                               query["filter_state"])
    ndjson = request.accept_mimetypes.best_match(
        ["application/json", streams.NDJSON]) == streams.NDJSON
    return streams.export(export.lines(g.store, selector, query["export_content"]), ndjson)
