"""The floor of a poll on this box: a minimal WSGI app that answers a fixed 200 after the same
token check as ``GET /api/v1/jobs/{id}`` (the signature, checked once per token by the same
CheckedTokens, then the user's token version from the same per-process cache, read from the
same database when stale), served by gunicorn with the
API's settings (bench/api_load.py starts it). What it costs is what any poll costs before it
does anything: the HTTP server, the WSGI call, the token.

    gunicorn 'bench.floor_app:create_app()' --config python:gunicorn_conf --worker-class gthread
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from api.auth import CheckedTokens, TokenVersions
from config import Settings
from models import User
from models.db import make_engine, make_session_factory

BODY = b'{"status":"running"}'
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def create_app() -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    settings = Settings.from_env()
    factory = make_session_factory(make_engine(settings.database_url, pool_size=4))
    versions = TokenVersions(settings.poll.token_version_cache_s)
    tokens = CheckedTokens(settings.secret_key)

    def token_version(user_id: uuid.UUID) -> int | None:
        with factory() as session:
            return session.scalar(select(User.token_version).where(User.id == user_id))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"ok"}']
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        claims = tokens.claims(token.strip()) if scheme == "Bearer" else None
        if claims is not None:
            user_id = uuid.UUID(claims["sub"])
            if versions.version(user_id, lambda: token_version(user_id)) == claims["ver"]:
                start_response("200 OK", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(BODY)))])
                return [BODY]
        start_response("401 Unauthorized", [("Content-Length", "0")])
        return [b""]

    return app
