"""Browsers (API.md 8.3): CORS for the origins of ``[http] cors_origins``, and for
no other. Done by flask-cors, configured to the contract:

* only listed origins get CORS headers, and a request without ``Origin`` gets none
  (``always_send=False``; its default sends the list of origins to anyone,
  corydolphin/flask-cors#338);
* a preflight is answered by Flask's automatic OPTIONS (204, see
  :class:`contextsvc.api.App`), which never reaches a view and so needs no key:
  browsers send no ``Authorization`` on a preflight;
* it allows the API's methods and the headers clients send, and exposes
  ``Location`` and ``ETag`` to scripts;
* error answers (401 included, so that a page can tell a missing key) carry the
  headers too;
* every answer says ``Vary: Origin``: whether it has CORS headers depends on the
  ``Origin`` of the request, and a cache must not hand one origin's answer to
  another (flask-cors adds it only with several origins, corydolphin/flask-cors#293).
"""

from __future__ import annotations

import re

from flask import Flask, Response
from flask_cors import CORS

METHODS = ("GET", "POST", "PUT", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "ContactCenterId", "GroupId",
                 "Idempotency-Key", "If-Match")
EXPOSE_HEADERS = ("Location", "ETag")
# Every request with an API key is preflighted; browsers may reuse a preflight this
# many seconds (Chromium keeps it at most 2 hours, Firefox 1 day).
MAX_AGE = 600


def init_app(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    # Exact, case-insensitive matches: flask-cors takes a string for a regular
    # expression when it holds characters such as [ ] (an IPv6 origin does).
    exact = [re.compile(re.escape(origin) + r"\Z", re.IGNORECASE) for origin in origins]
    CORS(app, origins=exact, methods=list(METHODS), allow_headers=list(ALLOW_HEADERS),
         expose_headers=list(EXPOSE_HEADERS), max_age=MAX_AGE, always_send=False,
         vary_header=False, supports_credentials=False, send_wildcard=False,
         allow_private_network=False, intercept_exceptions=True)

    @app.after_request
    def _vary(response: Response) -> Response:
        response.vary.add("Origin")
        return response
