"""Liveness, readiness, and the local media files."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, send_file
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from api.errors import error_responses
from api.state import db, state
from models.db import accepts_writes

blp = Blueprint("health", __name__, description="Health and readiness")

READINESS = {"description": "ready (200) or unavailable (503), with each check's outcome and "
                            "the dependencies that are down",
             "content": {"application/json": {"schema": {
                 "type": "object", "required": ["status", "checks", "down", "provider", "media"],
                 "properties": {"status": {"type": "string", "enum": ["ready", "unavailable"]},
                                "checks": {"type": "object"},
                                "down": {"type": "array", "items": {"type": "string"}},
                                "provider": {"type": "string"},
                                "media": {"type": "string"}}}}}}


@blp.route("/health")
class Health(MethodView):
    rate_limit_group = "unlimited"

    @blp.doc(responses={"200": {"description": "The process answers", "content": {
        "application/json": {"schema": {"type": "object", "required": ["status"],
                                        "properties": {"status": {"type": "string"}}}}}}})
    def get(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    rate_limit_group = "unlimited"

    @blp.doc(responses={"200": READINESS, "503": READINESS})
    def get(self) -> Response:
        """Readiness: database and broker reachable (``down`` names those that are not); which
        AI provider is active."""
        checks: dict[str, Any] = {"database": _check_database(), "broker": _check_broker()}
        down = [name for name, value in checks.items() if value != "ok"]
        ok = not down
        body = jsonify({
            "status": "ready" if ok else "unavailable",
            "checks": checks,
            "down": down,
            "provider": state().provider_mode,
            "media": "cloudinary" if state().settings.cloudinary_url else "local",
        })
        body.status_code = 200 if ok else 503
        return body


def _check_database() -> str:
    try:
        writable = accepts_writes(db())
    except Exception as exc:  # reported, not raised: this is a health probe
        return f"error: {type(exc).__name__}"
    return "ok" if writable else "error: read-only"


def _check_broker() -> str:
    from workers.app import celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # reported, not raised: this is a health probe
        return f"error: {type(exc).__name__}"
    return "ok"


@blp.route("/media/<path:path>")
class MediaFile(MethodView):
    rate_limit_group = "files"

    @blp.doc(responses={
        "200": {"description": "The file", "content": {"*/*": {"schema": {
            "type": "string", "format": "binary"}}}},
        "206": {"description": "Part of the file (Range)"},
        "304": {"description": "Unchanged (If-None-Match / If-Modified-Since)"},
        "416": {"description": "The Range asked for is not in the file"},
        **error_responses(404, 429)})
    def get(self, path: str) -> Response:
        """A locally stored file (generated illustrations, uploaded audio and photos)."""
        resolve = getattr(state().storage, "resolve", None)
        file = resolve(path) if resolve else None
        if file is None:
            abort(404, message="file not found")
        assert file is not None
        response = send_file(file, max_age=86400, conditional=True)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
