"""One error shape everywhere: flask-smorest's ``{code, status, message, errors}``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def error_body(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = errors
    return body


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        if isinstance(exc, HTTPException):
            # flask-smorest formats HTTP errors raised through abort(); werkzeug's own
            # (404 routing, 405, 413) come here and get the same shape.
            code = exc.code or 500
            message = getattr(exc, "data", {}).get("message") or exc.description or ""
            response = jsonify(error_body(code, str(message)))
            response.status_code = code
            for key, value in exc.get_headers():
                if key.lower() != "content-type":
                    response.headers[key] = value
            return response
        # Never a stack trace in a response: it is in the log, keyed by the request.
        log.exception("unhandled error")
        response = jsonify(error_body(500, "an internal error occurred"))
        response.status_code = 500
        return response
