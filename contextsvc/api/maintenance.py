"""Maintenance of the whole store (API.md 6.4): purge."""

from __future__ import annotations

from typing import Any

from flask import current_app, g

from ..domain import events, housekeeping, idempotency, inputs
from .operations import ApiBlueprint

bp = ApiBlueprint("maintenance", __name__)


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
