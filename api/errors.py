"""One error shape everywhere: flask-smorest's ``{code, status, message, errors}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from apispec import APISpec, BasePlugin
from flask import Flask, Response, current_app, jsonify
from flask_smorest import Api
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from models.db import database_unavailable

log = logging.getLogger(__name__)

# How soon a client should try again when the database is away: a crash-restart takes seconds.
DATABASE_RETRY_AFTER_S = 5


def error_body(code: int, message: str, errors: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        body["errors"] = _string_keys(errors)
    return body


def _string_keys(errors: Any) -> Any:
    """Error dicts keyed by what the client sent, which is not always a string (a multipart
    part without a name is keyed None): JSON (sorted) needs string keys."""
    if isinstance(errors, Mapping):
        return {str(key): _string_keys(value) for key, value in errors.items()}
    return errors


def _field_problems(detail: Mapping[Any, Any], prefix: str = "") -> list[str]:
    """``name: first message`` for each field of a marshmallow error dict, nested ones dotted
    (``settings.creativity: Must be greater than or equal to 0 and less than or equal to 2.``)."""
    problems: list[str] = []
    for name, messages in detail.items():
        path = f"{prefix}{name}"
        if isinstance(messages, Mapping):
            problems.extend(_field_problems(messages, f"{path}."))
        elif isinstance(messages, list) and messages:
            problems.append(f"{path}: {messages[0]}")
        else:
            problems.append(str(path))
    return problems


def _summary(errors: Any) -> str:
    """What a webargs error dict ``{location: {field: [...]} | [...]}`` is about, in a line that
    names each field and what is wrong with it (the limit it broke, say)."""
    if not isinstance(errors, Mapping):
        return ""
    parts: list[str] = []
    for detail in errors.values():
        if isinstance(detail, Mapping):
            parts.extend(_field_problems(detail))
        elif isinstance(detail, list):
            parts.extend(str(item) for item in detail)
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
    if not message and code == 413:
        limit_mb = (current_app.config.get("MAX_CONTENT_LENGTH") or 0) // (1024 * 1024)
        message = f"the request body is larger than the {limit_mb} MB limit"
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
        if database_unavailable(exc):
            return database_unavailable_response(exc)
        # Never a stack trace in a response: it is in the log, keyed by the request.
        log.exception("unhandled error")
        response = jsonify(error_body(500, "an internal error occurred"))
        response.status_code = 500
        return response


def database_unavailable_response(exc: Exception) -> Response:
    """503 for a request that needed the database while it was away (down, restarting, full,
    read-only): not a bug, and the client is told when to come back. ``errors.database``
    names the reason for programs; ``code`` stays the HTTP status, as in every error."""
    log.warning("database unavailable", extra={"error": type(exc).__name__})
    response = jsonify(error_body(
        503, f"the database is unavailable; retry in {DATABASE_RETRY_AFTER_S} seconds",
        {"database": ["database_unavailable"]}))
    response.status_code = 503
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


class ErrorSchema(Schema):
    """The one error shape, as the OpenAPI document describes it."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status phrase"})
    message = fields.String(required=True, metadata={"description": "What went wrong"})
    errors = fields.Dict(metadata={"description": "Per location and field: what is wrong"})


class DatabaseUnavailableDocs(BasePlugin):
    """Every operation that needs the database documents the 503 it answers while the
    database is away, with its ``Retry-After``."""

    NO_DATABASE = ("/health", "/ready", "/media/")

    def init_spec(self, spec: APISpec) -> None:
        spec.components.response("DATABASE_UNAVAILABLE", {
            "description": "The database is unavailable (down, restarting, full or read-only): "
                           "errors.database is [\"database_unavailable\"]; try again after "
                           "Retry-After seconds",
            "headers": {"Retry-After": {"description": "Seconds to wait before retrying",
                                        "schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": ErrorSchema}},
        })

    def operation_helper(self, path: str | None = None,
                         operations: dict[str, Any] | None = None, **_: Any) -> None:
        if path is None or operations is None or path.startswith(self.NO_DATABASE):
            return
        for operation in operations.values():
            operation.setdefault("responses", {}).setdefault("503", "DATABASE_UNAVAILABLE")


class DocumentedApi(Api):
    """flask-smorest's Api with our error shape, and no catch-all ``default`` response: every
    view documents the codes it answers with, so the document is one a client (and the fuzz
    tests) can hold the API to."""

    ERROR_SCHEMA = ErrorSchema
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, app: Flask) -> None:
        super().__init__(app, spec_kwargs={"extra_plugins": [DatabaseUnavailableDocs()]})

    def _register_pagination_header(self) -> None:
        # flask-smorest describes X-Pagination with a bare object schema, which in OpenAPI means
        # "total,6,page,1"; the header carries JSON, which OpenAPI spells with ``content``.
        fields_ = ("total", "total_pages", "first_page", "last_page", "page",
                   "previous_page", "next_page")
        self.spec.components.header("PAGINATION", {
            "description": "Pagination metadata (JSON)",
            "content": {"application/json": {"schema": {
                "type": "object",
                "properties": {name: {"type": "integer"} for name in fields_},
            }}},
        }, lazy=True)


def error_responses(*codes: int) -> dict[str, str]:
    """OpenAPI responses for the error codes a view can answer with, by reference to the one
    error shape: ``@blp.doc(responses=error_responses(401, 404))``."""
    return {str(code): HTTPStatus(code).name for code in codes}
