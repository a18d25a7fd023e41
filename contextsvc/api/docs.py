"""The OpenAPI document and Swagger UI, served by the app itself: the UI's assets
come from the installed swagger-ui-bundle package, never from a CDN. Registered
under both prefixes, like the API; ``/`` and ``/genesys/1/cs/`` lead to the page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, redirect, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from . import openapi

bp = Blueprint("docs", __name__)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>contextsvc API</title>
  <link rel="stylesheet" href="{css}">
  <link rel="icon" type="image/png" href="{icon}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script src="{preset}"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{spec}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout",
      validatorUrl: null
    }});
  </script>
</body>
</html>
"""


def document() -> dict:
    """The OpenAPI document of this app's API blueprints, built once."""
    built = current_app.extensions.get("contextsvc.openapi")
    if built is None:
        operations = [op for bp in current_app.extensions["contextsvc.api"]
                      for op in bp.operations]
        built = current_app.extensions["contextsvc.openapi"] = openapi.build(operations)
    return built


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return jsonify(document())


@bp.get("/")
def index() -> Response:
    return redirect(url_for(f"{_blueprint()}.docs_page"))


@bp.get("/docs")
def docs_page() -> Response:
    here = _blueprint()

    def asset(name: str) -> str:
        return url_for(f"{here}.docs_asset", filename=name)

    html = PAGE.format(css=asset("swagger-ui.css"), icon=asset("favicon-32x32.png"),
                       bundle=asset("swagger-ui-bundle.js"),
                       preset=asset("swagger-ui-standalone-preset.js"),
                       spec=url_for(f"{here}.openapi_json"))
    return Response(html, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


def _blueprint() -> str:
    from flask import request

    return request.blueprint or bp.name
