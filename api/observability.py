"""The API's side of observability: a request id on every request (and its log lines and jobs),
one log line and the HTTP metrics per request, ``/metrics``, and Sentry."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Iterator

from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import REGISTRY, CollectorRegistry, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

import telemetry
from api.errors import error_body
from api.state import EXTENSION, AppState
from models import Job
from workers.dispatch import TASKS

log = logging.getLogger("api.requests")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Probes and scrapes come every few seconds: their request lines only at DEBUG.
_QUIET_ENDPOINTS = frozenset({"/health", "/ready", "/metrics"})
_REGISTRY_KEY = "lifetales.metrics_registry"


def init_observability(app: Flask) -> None:
    """Install the request hooks and ``/metrics``; start Sentry when SENTRY_DSN is set."""
    state: AppState = app.extensions[EXTENSION]
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    queues = sorted({queue for _task, queue in TASKS.values()})
    app.extensions[_REGISTRY_KEY] = metrics_registry(state.session_factory, queues)
    telemetry.install_job_metrics(state.session_factory)
    app.add_url_rule("/metrics", "metrics", metrics_view)
    telemetry.init_sentry(state.settings.observability.sentry_dsn, service="api")


def _start_request() -> None:
    g.request_started = time.perf_counter()
    g.request_id = telemetry.accept_request_id(request.headers.get(telemetry.REQUEST_ID_HEADER))
    g.log_context = telemetry.bind(request_id=g.request_id)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # a hook before ours answered: nothing was measured
        return response
    response.headers[telemetry.REQUEST_ID_HEADER] = request_id
    seconds = time.perf_counter() - g.request_started
    endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    telemetry.observe_http(endpoint, method, response.status_code, seconds)
    log.log(
        logging.DEBUG if endpoint in _QUIET_ENDPOINTS else logging.INFO,
        "%s %s %s", method, request.path, response.status_code,
        # The path, never the query string or a body; the user by id only.
        extra={
            "method": method,
            "path": request.path,
            "endpoint": endpoint,
            "status": response.status_code,
            "duration_ms": round(seconds * 1000, 1),
            "user_id": _user_id(),
        },
    )
    return response


def _user_id() -> str | None:
    """The signed-in user's id as authentication recorded it: never a query, since the
    request's transaction may have failed (the database gone) and left the user's row expired."""
    user_id = g.get("user_id")
    return str(user_id) if user_id is not None else None


def _end_request(_exc: BaseException | None = None) -> None:
    token = g.pop("log_context", None)
    if token is not None:
        telemetry.unbind(token)


# --- /metrics --------------------------------------------------------------------------------


class QueueDepthCollector:
    """``lifetales_queue_depth{queue}``: jobs queued per queue, counted from the database at
    scrape time (the job table is the truth, not the broker)."""

    def __init__(self, session_factory: sessionmaker[Session], queues: list[str]) -> None:
        self._session_factory = session_factory
        self._queues = queues

    def collect(self) -> Iterator[Metric]:
        depth = dict.fromkeys(self._queues, 0)
        try:
            with self._session_factory() as session:
                # One indexed count (ix_jobs_status_updated leads with status).
                rows = session.execute(
                    select(Job.queue, func.count()).where(Job.status == "queued")
                    .group_by(Job.queue)
                ).all()
        except SQLAlchemyError as exc:
            log.warning("queue depth not collected", extra={"error": type(exc).__name__})
            return
        depth.update({queue: count for queue, count in rows})
        family = GaugeMetricFamily(
            "lifetales_queue_depth", "Jobs waiting to run (status queued), per queue.",
            labels=["queue"],
        )
        for queue, count in sorted(depth.items()):
            family.add_metric([queue], count)
        yield family


class _ProcessMetrics:
    """This process's own metric families (the default registry), inside another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_registry(
    session_factory: sessionmaker[Session], queues: list[str]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if getattr(values.ValueClass, "_multiprocess", False):
        # Under gunicorn_conf.py: the sum over every gunicorn worker process.
        MultiProcessCollector(registry)
    else:
        registry.register(_ProcessMetrics())
    registry.register(QueueDepthCollector(session_factory, queues))
    return registry


def metrics_allowed(token: str | None) -> tuple[bool, int]:
    """Loopback callers when no token is configured; with one, only bearers of it."""
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token)
        return ok, 401
    # A request relayed by a proxy on this host looks local: it is not.
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False, 403
    return _is_loopback(request.remote_addr), 403


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def metrics_view() -> Response:
    """Prometheus exposition of the API's metrics (OpenMetrics when the scraper asks for it)."""
    state: AppState = current_app.extensions[EXTENSION]
    allowed, refusal = metrics_allowed(state.settings.observability.metrics_token)
    if not allowed:
        message = (
            "a valid metrics token is required" if refusal == 401
            else "metrics are served to loopback callers only unless METRICS_TOKEN is set"
        )
        response = jsonify(error_body(refusal, message))
        response.status_code = refusal
        if refusal == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(current_app.extensions[_REGISTRY_KEY]), content_type=content_type)
