"""The OpenAPI document and Swagger UI, served by the app itself: the UI's assets
come from the installed swagger-ui-bundle package, never from a CDN."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, send_from_directory, url_for
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


@bp.get("/openapi.json")
def openapi_json():
    document = current_app.extensions.get("contextsvc.openapi")
    if document is None:
        document = current_app.extensions["contextsvc.openapi"] = openapi.build(current_app)
    return jsonify(document)


@bp.get("/docs")
def docs_page():
    def asset(name: str) -> str:
        return url_for("docs.docs_asset", filename=name)

    html = PAGE.format(css=asset("swagger-ui.css"), icon=asset("favicon-32x32.png"),
                       bundle=asset("swagger-ui-bundle.js"),
                       preset=asset("swagger-ui-standalone-preset.js"),
                       spec=url_for("docs.openapi_json"))
    return current_app.response_class(html, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str):
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
