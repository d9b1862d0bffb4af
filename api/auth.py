"""Password hashing (argon2) and bearer access tokens (JWT, HS256)."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import g, request
from flask_smorest import abort
from sqlalchemy import select

from api.state import db, state
from models import User
from models.base import utcnow

_hasher = PasswordHasher()
ALGORITHM = "HS256"
ADMIN_ROLE = "admin"
# Verifying against this keeps "unknown email" as slow as "wrong password".
_DUMMY_HASH = _hasher.hash("not-a-real-password")

F = TypeVar("F", bound=Callable[..., Any])

# OpenAPI security requirement of every endpoint behind login_required.
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def issue_token(user: User) -> dict[str, Any]:
    settings = state().settings
    now = utcnow()
    claims = {
        "sub": str(user.id),
        "ver": user.token_version,
        "typ": "access",
        "iat": now,
        "exp": now + timedelta(seconds=settings.access_token_ttl_s),
    }
    token = jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM)
    return {"access_token": token, "token_type": "Bearer",
            "expires_in": settings.access_token_ttl_s}


def bearer_token() -> str | None:
    """The request's bearer token, if it sends one."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def verified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a genuine, unexpired access token (signature and expiry only, no database)."""
    return state().checked_tokens.claims(token)


def verify_token(token: str, secret_key: str) -> dict[str, Any] | None:
    """``verified_claims`` with the key given (no Flask app needed: bench/floor_app.py)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret_key, algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "ver"]},
        )
        uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return claims if claims.get("typ") == "access" else None


def request_claims() -> dict[str, Any] | None:
    """The claims of the request's bearer token if it is genuine; checked once per request."""
    if "token_claims" not in g:
        token = bearer_token()
        g.token_claims = verified_claims(token) if token else None
    return cast(dict[str, Any] | None, g.token_claims)


def token_subject() -> str | None:
    """The user id a genuine bearer token names (the rate limiter's key)."""
    claims = request_claims()
    return str(claims["sub"]) if claims else None


# Users (tokens) remembered by a TokenVersions (CheckedTokens) at most; past it it starts over.
TOKEN_VERSIONS_KEPT = 100_000
CHECKED_TOKENS_KEPT = 100_000


class CheckedTokens:
    """Tokens whose signature this process has checked, with their claims: a client polling
    with the same token pays the check (PyJWT, tens of microseconds) once; a kept token is
    still refused the moment it expires. Only genuine tokens are kept (we signed them all)."""

    def __init__(self, secret_key: str) -> None:
        self._secret_key = secret_key
        self._checked: dict[str, dict[str, Any]] = {}

    def claims(self, token: str) -> dict[str, Any] | None:
        claims = self._checked.get(token)
        if claims is None:
            claims = verify_token(token, self._secret_key)
            if claims is None:
                return None
            if len(self._checked) >= CHECKED_TOKENS_KEPT:
                self._checked.clear()
            self._checked[token] = claims
        elif claims["exp"] <= time.time():
            del self._checked[token]
            return None
        return claims


class TokenVersions:
    """Users' token versions as last read from the database, trusted for ``ttl_s`` seconds by
    this process, so a poll checks its token with no query. A password change bumps the
    version: this process forgets the user at once, other API processes within ``ttl_s``."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._known: dict[uuid.UUID, tuple[float, int | None]] = {}

    def version(self, user_id: uuid.UUID, read: Callable[[], int | None]) -> int | None:
        """The user's token version (None: no such user), read again once older than ttl_s."""
        now = time.monotonic()
        known = self._known.get(user_id)
        if known is not None and now - known[0] < self.ttl_s:
            return known[1]
        version = read()
        if len(self._known) >= TOKEN_VERSIONS_KEPT:
            self._known.clear()
        self._known[user_id] = (now, version)
        return version

    def forget(self, user_id: uuid.UUID) -> None:
        self._known.pop(user_id, None)


def _unauthorized() -> None:
    abort(401, message="missing, invalid or expired bearer token",
          headers={"WWW-Authenticate": 'Bearer realm="lifetales"'})


def _user_from_token() -> User | None:
    claims = request_claims()
    if claims is None:
        return None
    user = db().get(User, uuid.UUID(claims["sub"]))
    if user is None or user.token_version != claims["ver"]:
        return None  # deleted user, or a token issued before a password change
    return user


def authenticate() -> User:
    """The user the request's bearer token belongs to; 401 without a valid one."""
    user = _user_from_token()
    if user is None:
        _unauthorized()
    assert user is not None
    g.current_user = user
    g.user_id = user.id
    return user


def authenticate_user_id() -> uuid.UUID:
    """The id of the user the request's bearer token belongs to, without loading the user: the
    signature, then the token version against the process's TokenVersions (a query at most
    every few seconds per user). 401 without a valid token, as ``authenticate``."""
    claims = request_claims()
    if claims is None:
        _unauthorized()
    assert claims is not None
    user_id = uuid.UUID(claims["sub"])
    version = state().token_versions.version(
        user_id, lambda: db().scalar(select(User.token_version).where(User.id == user_id)))
    if version is None or version != claims["ver"]:
        _unauthorized()
    g.user_id = user_id
    return user_id


def login_required(view: F) -> F:
    """Reject the request with 401 unless it carries a valid bearer token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
        return view(*args, **kwargs)

    return cast(F, wrapper)


def token_required(view: F) -> F:
    """``login_required`` for views that need only the user's id (``current_user_id``): no
    query for the user (``authenticate_user_id``)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate_user_id()
        return view(*args, **kwargs)

    return cast(F, wrapper)


def admin_required(view: F) -> F:
    """401 without a valid bearer token; 403 when its user is not an admin (a role check on the
    route, which reveals nothing about any other user's rows)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if authenticate().role != ADMIN_ROLE:
            abort(403, message="this operation requires the admin role")
        return view(*args, **kwargs)

    return cast(F, wrapper)


def current_user() -> User:
    return cast(User, g.current_user)


def current_user_id() -> uuid.UUID:
    """The authenticated user's id (after ``login_required`` or ``token_required``)."""
    return cast(uuid.UUID, g.user_id)
