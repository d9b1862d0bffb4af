"""Liveness, readiness, and the local media files."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, send_file
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from agents.errors import AgentError
from agents.film import ffmpeg_info
from agents.gemini import check_routes
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
                                "media": {"type": "string"},
                                "ffmpeg": {"type": "string", "description":
                                           "the ffmpeg films are rendered with: its source "
                                           "(system, imageio-ffmpeg, FFMPEG_BINARY) and "
                                           "version, or why there is none"},
                                "models": {"type": "object", "additionalProperties": {
                                    "type": "object", "required": ["model", "state"],
                                    "properties": {
                                        "model": {"type": "string"},
                                        "fallbacks": {"type": "array",
                                                      "items": {"type": "string"}},
                                        "state": {"type": "string", "enum": [
                                            "ok", "fallback", "unavailable", "unknown",
                                            "offline"]},
                                        "answering": {"type": ["string", "null"]},
                                        "found": {"type": "object"}}}}}}}}}
# A readiness probe never waits long on Google: each model is asked at most this often, with
# this timeout; between checks the answer comes from memory (also fed by the agents' calls).
MODEL_CHECK_TIMEOUT_MS = 3000


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
        """Readiness: database and broker reachable (``down`` names those that are not), and
        a working model for each agent (503 when every model of an agent was found retired);
        which AI provider is active."""
        checks: dict[str, Any] = {"database": _check_database(), "broker": _check_broker()}
        down = [name for name, value in checks.items() if value != "ok"]
        models = _model_states()
        down += [f"model:{agent}" for agent, m in models.items() if m["state"] == "unavailable"]
        ok = not down
        body = jsonify({
            "status": "ready" if ok else "unavailable",
            "checks": checks,
            "down": down,
            "provider": state().provider_mode,
            "media": "cloudinary" if state().settings.cloudinary_url else "local",
            "models": models,
            "ffmpeg": _ffmpeg(),
        })
        body.status_code = 200 if ok else 503
        return body


def _model_states() -> dict[str, dict[str, Any]]:
    """Each agent's model, fallbacks and which of them answers, from checks at most
    ``GEMINI_MODEL_RECHECK_SECONDS`` old."""
    agents = state().settings.agents
    if not agents.has_api_key:
        return {route.agent: {"model": route.model, "fallbacks": list(route.fallbacks),
                              "state": "offline", "answering": None, "found": {}}
                for route in agents.routes}
    statuses = check_routes(agents, max_age_s=agents.model_recheck_s,
                            timeout_ms=MODEL_CHECK_TIMEOUT_MS)
    return {
        status.route.agent: {
            "model": status.route.model,
            "fallbacks": list(status.route.fallbacks),
            "state": status.state,
            "answering": status.answering,
            "found": {model: None if check is None else check.found
                      for model, check in zip(status.route.chain, status.checks, strict=True)},
        }
        for status in statuses
    }


def _ffmpeg() -> str:
    """Which ffmpeg renders films (reported, not required: renders run on the render queue's
    workers, which need it)."""
    try:
        info = ffmpeg_info(state().settings.film.render.ffmpeg_binary)
    except AgentError as exc:
        return f"unavailable: {exc.message}"
    return f"{info.source} {info.version}"


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
