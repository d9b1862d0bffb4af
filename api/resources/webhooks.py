"""The secret that signs the user's job webhooks: read it (created on first use), rotate it."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.schemas.webhooks import WebhookSecretSchema
from api.state import db
from workers.webhooks import ensure_secret, rotate_secret

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1", description="Webhooks")

NO_STORE = {"Cache-Control": "no-store"}


def _secret_body(secret: str) -> dict[str, Any]:
    return {"secret": secret, "algorithm": "HMAC-SHA256"}


@blp.route("/webhooks/secret")
class WebhookSecret(MethodView):
    decorators = [login_required]

    @blp.response(200, WebhookSecretSchema, headers={"Cache-Control": {
        "schema": {"type": "string"}}})
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def get(self) -> Any:
        """The secret that signs your webhooks, created on first use."""
        session = db()
        secret = ensure_secret(session, current_user().id)
        session.commit()
        return _secret_body(secret), 200, NO_STORE


@blp.route("/webhooks/secret/rotate")
class RotateWebhookSecret(MethodView):
    decorators = [login_required]

    @blp.response(200, WebhookSecretSchema, headers={"Cache-Control": {
        "schema": {"type": "string"}}})
    @blp.doc(security=SECURITY, responses=error_responses(401, 429))
    def post(self) -> Any:
        """Replace the secret; every delivery from now on (retries too) is signed with the new
        one, so verify with both while switching your receiver over."""
        session = db()
        secret = rotate_secret(session, current_user().id)
        session.commit()
        return _secret_body(secret), 200, NO_STORE
