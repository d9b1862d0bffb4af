"""The Celery application: ``celery -A workers.app worker``. Settings come from celeryconfig.py."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init

celery_app = Celery("lifetales")
celery_app.config_from_object("celeryconfig")  # lazy: read on first use, not at import


@worker_init.connect
def _size_pools_to_concurrency(sender: Any, **_: Any) -> None:
    """Size broker and database pools to the concurrency this worker really runs with.

    ``--concurrency`` on the command line does not change ``worker_concurrency`` in the config,
    and a pool smaller than the thread count makes acks wait or fail (and tasks run twice).
    """
    from workers.context import set_pool_size

    concurrency = int(getattr(sender, "concurrency", 0) or 0)
    if concurrency <= 0:
        return
    conf = sender.app.conf
    conf.broker_pool_limit = concurrency + 4
    options = dict(conf.broker_transport_options or {})
    if "max_connections" in options:
        options["max_connections"] = concurrency * 2 + 8
        conf.broker_transport_options = options
    set_pool_size(concurrency + 2)


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """Connections and HTTP clients must not be shared across a fork."""
    from workers.context import reset_context

    reset_context()


app = celery_app
