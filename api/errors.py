"""One error shape everywhere: flask-smorest's ``{code, status, message, errors}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_body(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def _summary(errors: Any) -> str:
    """What a webargs error dict ``{location: {field: [...]} | [...]}`` is about, in a line."""
    if not isinstance(errors, Mapping):
        return ""
    fields: list[str] = []
    notes: list[str] = []
    for detail in errors.values():
        if isinstance(detail, Mapping):
            fields.extend(str(name) for name in detail)
        elif isinstance(detail, list):
            notes.extend(str(item) for item in detail)
    parts = ([f"check {', '.join(fields)}"] if fields else []) + notes
    return "; ".join(parts)


def http_error_response(exc: HTTPException) -> Response:
    """Every HTTP error, raised by abort(), webargs or werkzeug itself, in the one shape.

    flask-smorest's own handler leaves ``message`` out of validation errors and of werkzeug's
    errors (404 routing, 405, 413); the frontend's ApiClient reads ``message``, so it is always set.
    """
    code = exc.code or 500
    data = getattr(exc, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    message = data.get("message")
    if not message and errors:
        summary = _summary(errors)
        message = "invalid request" + (f": {summary}" if summary else "")
    if not message:
        message = exc.description or HTTPStatus(code).phrase
    response = jsonify(error_body(code, str(message), errors))
    response.status_code = code
    for key, value in exc.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    for key, value in (data.get("headers") or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Call after ``Api(app)``: this replaces flask-smorest's HTTPException handler."""
    app.register_error_handler(HTTPException, http_error_response)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        # Never a stack trace in a response: it is in the log, keyed by the request.
        log.exception("unhandled error")
        response = jsonify(error_body(500, "an internal error occurred"))
        response.status_code = 500
        return response
