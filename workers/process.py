"""The worker process's own start: its pools sized to its concurrency, its connections made
again after a fork, its models checked once it is ready.

Celery imports this module before the worker starts (``imports`` in celeryconfig.py), so
``workers.app`` itself needs nothing of the worker's context and stays below everything else.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_init, worker_process_init, worker_ready

from workers.context import get_context, reset_context, set_concurrency
from workers.model_check import check_models_at_start


@worker_init.connect
def _size_pools_to_concurrency(sender: Any, **_: Any) -> None:
    """Size broker and database pools to the concurrency this worker really runs with.

    ``--concurrency`` on the command line does not change ``worker_concurrency`` in the config,
    and a pool smaller than the thread count makes publishes (and on Redis, acks) wait or fail
    (and tasks run twice). ``max_connections`` is the Redis transport's own limit; on RabbitMQ
    acks go through the consumer's channel and only the producer pool needs sizing.
    """
    concurrency = int(getattr(sender, "concurrency", 0) or 0)
    if concurrency <= 0:
        return
    conf = sender.app.conf
    conf.broker_pool_limit = concurrency + 4
    options = dict(conf.broker_transport_options or {})
    if "max_connections" in options:
        options["max_connections"] = concurrency * 2 + 8
        conf.broker_transport_options = options
    set_concurrency(concurrency)


@worker_process_init.connect
def _reset_after_fork(**_: Any) -> None:
    """Connections and HTTP clients must not be shared across a fork."""
    reset_context()


@worker_ready.connect
def _check_models(**_: Any) -> None:
    """One ``models.get`` per configured model, in the background: a retired model is logged
    as an error now, and remembered, instead of failing the first job that uses it."""
    check_models_at_start(get_context().settings.agents)
