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


def _user_from_token(token: str) -> User | None:
    try:
        claims = jwt.decode(
            token, state().settings.secret_key, algorithms=[ALGORITHM],
            options={"require": ["sub", "exp", "ver"]},
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, KeyError):
        return None
    if claims.get("typ") != "access":
        return None
    user = db().get(User, user_id)
    if user is None or user.token_version != claims["ver"]:
        return None  # deleted user, or a token issued before a password change
    return user


def login_required(view: F) -> F:
    """Reject the request with 401 unless it carries a valid bearer token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = _user_from_token(token.strip()) if scheme.lower() == "bearer" and token else None
        if user is None:
            abort(401, message="missing, invalid or expired bearer token",
                  headers={"WWW-Authenticate": 'Bearer realm="lifetales"'})
        g.current_user = user
        return view(*args, **kwargs)

    return cast(F, wrapper)


def current_user() -> User:
    return cast(User, g.current_user)
