"""The Celery application: ``celery -A workers.app worker``. Settings come from celeryconfig.py."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init

celery_app = Celery("lifetales")
celery_app.config_from_object("celeryconfig")  # lazy: read on first use, not at import


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """Connections and HTTP clients must not be shared across a fork."""
    from workers.context import reset_context

    reset_context()


app = celery_app
