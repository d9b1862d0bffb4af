"""Swagger UI's scripts and styles for ``/api/docs``, served by the API itself from the files the
flask-swagger-ui package ships, so the page works with no CDN (offline, or behind a strict CSP).

flask-swagger-ui rather than swagger-ui-bundle: the latter ships Swagger UI 4, which cannot
render an OpenAPI 3.1 document (ours); only its files are used, not its blueprint."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from flask import Blueprint, Response, send_from_directory
from flask.views import MethodView

# What flask-smorest's page template prefixes to swagger-ui.css, swagger-ui-bundle.js...
SWAGGER_UI_URL = "/api/docs/assets/"
ASSETS_MAX_AGE_S = 86400

blp = Blueprint("docs_assets", __name__)


def swagger_ui_dir() -> Path:
    return Path(str(files("flask_swagger_ui") / "dist"))


class SwaggerUiAsset(MethodView):
    rate_limit_group = "files"  # a page load fetches several at once

    def get(self, filename: str) -> Response:
        """One of Swagger UI's files (404 for anything else)."""
        return send_from_directory(swagger_ui_dir(), filename, max_age=ASSETS_MAX_AGE_S)


blp.add_url_rule(f"{SWAGGER_UI_URL}<path:filename>",
                 view_func=SwaggerUiAsset.as_view("swagger_ui_asset"))
