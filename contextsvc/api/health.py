"""The health check a load balancer polls (API.md 7.3): ``GET /health``.

It reads the store (every tenant's, with tenants), cheaply: it counts the
services, which makes this process catch up with what the other workers wrote and
check that the data file is still the one it opened (the file store refuses one
deleted or replaced under it). It
answers 200 ``{"status": "ok", "version", "engine"}`` when that works and 503
``{"status": "unavailable", "message"}`` when it does not, in both cases without
any customer data. It needs no key (role ``public``), and its 200 answers are
logged at debug level only (:mod:`.logs`): a load balancer asks every few seconds.
"""

from __future__ import annotations

from flask import Response, current_app, jsonify

from .. import __version__
from ..errors import ContextError
from .operations import ApiBlueprint

bp = ApiBlueprint("health", __name__, store=False)


@bp.operation("GET", "/health", "Whether this process can read its store", role="public",
              response="Health",
              responses={200: "The store can be read",
                         503: "The store cannot be read; the message says why"})
def health() -> dict[str, str] | Response:
    engine = None
    for tenant, store in current_app.extensions["contextsvc.stores"].all().items():
        try:
            store.count()
        except ContextError as exc:  # deleted or replaced file, busy past its timeout, damage
            whose = "" if tenant is None else f"the store of the tenant {tenant}: "
            response = jsonify({"status": "unavailable", "message": whose + exc.message})
            response.status_code = 503
            return response
        engine = store.engine_name
    return {"status": "ok", "version": __version__, "engine": engine}
