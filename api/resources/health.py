"""Liveness, readiness, and the local media files."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, send_file
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import text

from api.state import db, state

blp = Blueprint("health", __name__, description="Health and readiness")


@blp.route("/health")
class Health(MethodView):
    def get(self) -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    def get(self) -> Response:
        """Readiness: database and broker reachable; which AI provider is active."""
        checks: dict[str, Any] = {"database": _check_database(), "broker": _check_broker()}
        ok = all(value == "ok" for value in checks.values())
        body = jsonify({
            "status": "ready" if ok else "unavailable",
            "checks": checks,
            "provider": state().provider_mode,
            "media": "cloudinary" if state().settings.cloudinary_url else "local",
        })
        body.status_code = 200 if ok else 503
        return body


def _check_database() -> str:
    try:
        db().execute(text("SELECT 1"))
    except Exception as exc:  # reported, not raised: this is a health probe
        return f"error: {type(exc).__name__}"
    return "ok"


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
