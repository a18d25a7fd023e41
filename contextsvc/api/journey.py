"""The journey page (API.md 9): a customer's services on a time axis, for people.

A page, not an API operation: a plain blueprint, registered under both prefixes like
the docs page. The page reads the public JSON API from the browser, under the same
prefix it was served from, so it shows exactly what an app would see; its script and
stylesheet are files of this package, served by the service itself, and its
Content-Security-Policy lets it load and call nothing but this origin.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template, request, url_for

from ..domain import model

bp = Blueprint("journey", __name__, static_folder="static/journey",
               static_url_path="/journey/assets", template_folder="templates")

# Nothing from another host: no script, style, font, image, frame or connection.
CSP = ("default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
       "object-src 'none'")


def fields() -> dict[str, list[str]]:
    """Every name the representation of each kind uses for a field (the rest of an
    object is attached data), from the one description of the model."""
    return {name: sorted(kind.fields | set(kind.top) | set(kind.nested))
            for name, kind in model.KINDS.items()}


@bp.get("/journey")
def page() -> Response:
    here = request.blueprint or bp.name
    root = here.endswith("_root")
    path = url_for(f"{here}.page")
    html = render_template(
        "journey.html",
        api=path.removesuffix("/journey"),
        docs=url_for("docs_root.docs_page" if root else "docs.docs_page"),
        asset=lambda name: url_for(f"{here}.static", filename=name),
        fields=fields(),
        # with tenants (API.md 8.2) the page asks which one, and sends it as ContactCenterId
        tenants=bool(current_app.extensions["contextsvc.stores"].tenants))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = CSP
    # the page's address may name a customer: keep it out of other sites' logs
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-cache"
    return response
