"""The Celery application: ``celery -A workers.app worker``. Settings come from celeryconfig.py."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_ready,
)

import telemetry
from config import ObservabilitySettings

log = logging.getLogger(__name__)

celery_app = Celery("lifetales")
celery_app.config_from_object("celeryconfig")  # lazy: read on first use, not at import


@worker_init.connect
def _declare_every_queue(sender: Any, **_: Any) -> None:
    """On RabbitMQ, declare every job queue before the worker binds them for delayed delivery.

    At start Celery binds all ``task_queues`` to the delay exchanges, but a worker declares only
    the queues it consumes: a queue nobody had declared yet would miss its binding, and its
    countdown messages (retries, re-scheduled jobs) would be dropped when their delay ends.
    """
    app = sender.app
    with app.connection_for_write() as conn:
        if conn.transport.driver_type != "amqp":
            return
        try:
            conn.ensure_connection(max_retries=5, interval_start=1, interval_step=1,
                                   interval_max=5, timeout=10)
            channel = conn.default_channel
            for queue in app.amqp.queues.values():
                queue.bind(channel).declare()
        except Exception as exc:  # the worker's own start retries the broker; say what is missing
            log.warning("job queues not declared before binding them for delayed delivery; "
                        "countdowns to queues no worker consumes yet may be dropped (the "
                        "reaper re-sends their jobs)", extra={"error": type(exc).__name__})


@setup_logging.connect
def _json_logs(**_: Any) -> None:
    """JSON lines at LOG_LEVEL for worker and beat (Celery's own --loglevel is not used)."""
    telemetry.configure_logging(
        "worker", ObservabilitySettings.from_env(os.environ).log_level, os.environ
    )
    logging.captureWarnings(True)


@celeryd_init.connect
def _worker_output_as_json(instance: Any = None, **_: Any) -> None:
    """Before the worker prints anything: no ASCII banner (worker_ready logs its facts), and
    the start-up checks' warnings (e.g. running as root) as JSON lines too."""
    if instance is not None:
        instance.quiet = True
    _json_logs()


@worker_init.connect
def _start_sentry(**_: Any) -> None:
    telemetry.init_sentry(ObservabilitySettings.from_env(os.environ).sentry_dsn, service="worker")


@worker_ready.connect
def _start_metrics_exporter(sender: Any, **_: Any) -> None:
    """This worker's Prometheus exporter: the threads pool runs every task in this one process,
    so its default registry holds all of the worker's metrics (no multiprocess mode)."""
    settings = ObservabilitySettings.from_env(os.environ)
    port = telemetry.start_metrics_exporter(
        settings.worker_metrics_address, settings.worker_metrics_port
    )
    worker = getattr(sender, "controller", None)
    log.info("worker metrics", extra={
        "hostname": getattr(worker, "hostname", None),
        "concurrency": getattr(worker, "concurrency", None),
        "metrics_address": settings.worker_metrics_address if port else None,
        "metrics_port": port,
    })


@task_prerun.connect
def _bind_task(task_id: str | None = None, **_: Any) -> None:
    """Every line a task logs carries its task id; pooled threads start each task clean."""
    telemetry.clear_context()
    telemetry.bind(task_id=task_id)


@task_postrun.connect
def _unbind_task(**_: Any) -> None:
    telemetry.clear_context()


app = celery_app
