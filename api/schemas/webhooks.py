from __future__ import annotations

from marshmallow import fields

from api.schemas.base import CamelSchema


class WebhookSecretSchema(CamelSchema):
    """The key that signs the user's webhooks (README, Webhooks: how to verify)."""

    secret = fields.String(dump_only=True, metadata={
        "description": "``whsec_`` + base64 of the HMAC-SHA256 key: ``webhook-signature`` is "
                       "``v1,`` + base64(HMAC-SHA256(base64decode(secret without whsec_), "
                       "``{webhook-id}.{webhook-timestamp}.{body}``)).",
        "example": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})
    algorithm = fields.String(dump_only=True, metadata={"example": "HMAC-SHA256"})
