"""Webhook deliveries: one attempt per message, on their own queue (slow receivers never hold a
job worker); retries are new messages scheduled by the failed attempt."""

from __future__ import annotations

import logging
import uuid

from workers.app import celery_app
from workers.context import get_context
from workers.webhooks import TASK, deliver

log = logging.getLogger(__name__)


@celery_app.task(name=TASK, acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: str) -> None:
    try:
        parsed = uuid.UUID(delivery_id)
    except ValueError:
        log.error("webhook delivery message with a malformed id dropped",
                  extra={"delivery_id": delivery_id})
        return
    ctx = get_context()
    deliver(ctx.session_factory, ctx.settings.webhooks, parsed)
