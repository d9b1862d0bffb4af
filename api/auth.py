"""Password hashing (argon2) and bearer access tokens (JWT, HS256)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import g, request
from flask_smorest import abort

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
    try:
        claims: dict[str, Any] = jwt.decode(
            token, state().settings.secret_key, algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "ver"]},
        )
        uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return claims if claims.get("typ") == "access" else None


def token_subject() -> str | None:
    """The user id a genuine bearer token names (the rate limiter's key); cached per request."""
    if "token_subject" not in g:
        token = bearer_token()
        claims = verified_claims(token) if token else None
        g.token_subject = str(claims["sub"]) if claims else None
    return cast(str | None, g.token_subject)


def _user_from_token(token: str) -> User | None:
    claims = verified_claims(token)
    if claims is None:
        return None
    user = db().get(User, uuid.UUID(claims["sub"]))
    if user is None or user.token_version != claims["ver"]:
        return None  # deleted user, or a token issued before a password change
    return user


def authenticate() -> User:
    """The user the request's bearer token belongs to; 401 without a valid one."""
    token = bearer_token()
    user = _user_from_token(token) if token else None
    if user is None:
        abort(401, message="missing, invalid or expired bearer token",
              headers={"WWW-Authenticate": 'Bearer realm="lifetales"'})
    assert user is not None
    g.current_user = user
    return user


def login_required(view: F) -> F:
    """Reject the request with 401 unless it carries a valid bearer token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authenticate()
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
