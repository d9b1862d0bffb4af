"""Register, log in, and who am I."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.auth import (
    SECURITY,
    current_user,
    hash_password,
    issue_token,
    login_required,
    verify_password,
)
from api.errors import error_responses
from api.schemas.auth import (
    CredentialsSchema,
    LoginSchema,
    PasswordChangeSchema,
    RegisteredSchema,
    TokenSchema,
    UserSchema,
)
from api.state import db, state
from models import User

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Accounts and tokens")


@blp.route("/auth/register")
class Register(MethodView):
    rate_limit_group = "auth"

    @blp.arguments(CredentialsSchema)
    @blp.response(201, RegisteredSchema)
    @blp.doc(responses=error_responses(400, 409, 413, 429))
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create an account and return an access token."""
        session = db()
        email = data["email"].strip().lower()
        if session.scalar(select(User.id).where(func.lower(User.email) == email)):
            abort(409, message="an account with this email already exists")
        user = User(email=email, password_hash=hash_password(data["password"]),
                    token_version=0, role="user")
        session.add(user)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            abort(409, message="an account with this email already exists")
        return {**issue_token(user), "user": user}


@blp.route("/auth/token")
class Token(MethodView):
    rate_limit_group = "auth"

    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @blp.doc(responses=error_responses(400, 401, 413, 429))
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Exchange email and password for an access token."""
        email = data["email"].strip().lower()
        user = db().scalar(select(User).where(func.lower(User.email) == email))
        if not verify_password(user.password_hash if user else None, data["password"]):
            abort(401, message="invalid email or password")
        assert user is not None
        return issue_token(user)


@blp.route("/auth/password")
class Password(MethodView):
    decorators = [login_required]
    rate_limit_group = "auth"

    @blp.arguments(PasswordChangeSchema)
    @blp.response(200, TokenSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 413, 429))
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Change the password; every token issued before stops working, a fresh one is returned."""
        user = current_user()
        if not verify_password(user.password_hash, data["current_password"]):
            abort(422, message="currentPassword is not the account's password",
                  errors={"json": {"currentPassword": ["incorrect password"]}})
        user.password_hash = hash_password(data["new_password"])
        # Tokens carry the version they were issued under: bumping it revokes them all.
        user.token_version += 1
        db().commit()
        state().token_versions.forget(user.id)  # other API processes: within their cache's TTL
        return issue_token(user)


@blp.route("/me")
class Me(MethodView):
    decorators = [login_required]

    @blp.response(200, UserSchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def get(self) -> User:
        """The authenticated user."""
        return current_user()
