"""Gunicorn settings of the web process (``--config python:gunicorn_conf``): JSON log lines,
no access log (the app logs one line per request, with its request id), and Prometheus metrics
summed over every gunicorn worker process.

This is a configuration script, run once by the gunicorn master before it forks its workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from gunicorn import glogging

# Several worker processes answer /metrics in turn: each must report the totals of all, so
# prometheus-client keeps its values in files under a directory they share (its multiprocess
# mode). The library picks that mode when first imported, so the variable is set here, in the
# master, before anything imports it; a fresh directory per start leaves no stale values behind.
# Not an operator setting (and not in .env.example): the library enables the mode whenever the
# variable exists, even empty, which a worker must never inherit from a shared .env.
_metrics_dir = tempfile.mkdtemp(prefix="lifetales-api-metrics-")
os.environ.update(PROMETHEUS_MULTIPROC_DIR=_metrics_dir)

import telemetry  # noqa: E402 - prometheus-client must see PROMETHEUS_MULTIPROC_DIR first
from config import ObservabilitySettings  # noqa: E402

accesslog = None


class JsonLogger(glogging.Logger):
    """Gunicorn's own lines (start, worker boot and exit, errors) as JSON, and the root logger
    configured for the app at LOG_LEVEL."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = ObservabilitySettings.from_env(os.environ)
        handler = telemetry.configure_logging("api", settings.log_level, os.environ)
        for logger in (self.error_log, self.access_log):
            for gunicorn_handler in logger.handlers:
                gunicorn_handler.setFormatter(handler.formatter)


logger_class = JsonLogger


def on_exit(_server: Any) -> None:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
