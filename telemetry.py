"""Observability shared by the API and the workers: Prometheus metric families, JSON log lines
carrying the request and job they belong to, and Sentry.

Like ``config``, this module reads nothing at import: the processes call ``configure_logging``,
``init_sentry`` and ``start_metrics_exporter`` when they start.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import Counter, Histogram, start_http_server
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from config import estimated_cost_usd
from models import Job
from models.job import loaded_job, pending_events

log = logging.getLogger(__name__)

# --- metric families -------------------------------------------------------------------------
# Label values are bounded sets: endpoint templates (not paths), job kinds, queue names, model
# names from config, error codes from agents.errors. Never ids.

HTTP_REQUESTS = Counter(
    "lifetales_http_requests", "API requests answered, by endpoint template, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "lifetales_http_request_duration_seconds",
    "API request latency until the response is handed to the server (an SSE stream's headers).",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
JOBS_SUBMITTED = Counter(
    "lifetales_jobs_submitted", "Jobs created (committed), by kind.", ["kind"]
)
JOBS_FINISHED = Counter(
    "lifetales_jobs_finished", "Jobs that reached a final state, by kind and status.",
    ["kind", "status"],
)
JOB_DURATION = Histogram(
    "lifetales_job_duration_seconds",
    "From submit to final state (what the client waits, retries included), by kind and status.",
    ["kind", "status"],
    buckets=(0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600),
)
JOB_QUEUE_WAIT = Histogram(
    "lifetales_job_queue_wait_seconds",
    "From queued (or due again after a retry delay) to claimed by a worker, per attempt.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
JOB_RETRIES = Counter(
    "lifetales_job_retries", "Attempts that failed and were re-queued, by kind and error code.",
    ["kind", "code"],
)
MODEL_CALLS = Counter(
    "lifetales_model_calls",
    "Model calls (Gemini; model=\"offline\" for the offline provider), by agent, model and "
    "outcome (ok or the error code).",
    ["agent", "model", "outcome"],
)
MODEL_LATENCY = Histogram(
    "lifetales_model_call_duration_seconds", "Model call latency, by agent, model and outcome.",
    ["agent", "model", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 45, 60, 90),
)
MODEL_TOKENS = Counter(
    "lifetales_model_tokens", "Tokens billed by the model, by agent, model and direction (in/out).",
    ["agent", "model", "direction"],
)
MODEL_COST = Counter(
    "lifetales_model_cost_usd",
    "Estimated cost in USD at the list prices of config.MODEL_PRICES_USD_PER_MTOK (and, for "
    "video, config.MODEL_PRICES_USD_PER_VIDEO_SECOND).",
    ["agent", "model"],
)
MODEL_VIDEO_SECONDS = Counter(
    "lifetales_model_video_seconds",
    "Seconds of video generated (what video models bill), by agent and model.",
    ["agent", "model"],
)
RENDER_SECONDS = Histogram(
    "lifetales_render_seconds",
    "Wall time of one film render (ffmpeg), per render job.",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900),
)
FILM_SECONDS = Histogram(
    "lifetales_film_seconds",
    "Duration of each rendered film; rate against lifetales_render_seconds for the render speed.",
    buckets=(10, 30, 60, 120, 180, 300, 600, 900),
)
CACHE_LOOKUPS = Counter(
    "lifetales_cache_lookups",
    "Agent result cache lookups, by agent and result: hit, miss (this job computes it), joined "
    "(an identical job is computing it), bypass (forced).",
    ["agent", "result"],
)
RATE_LIMIT_WAITS = Histogram(
    "lifetales_ratelimit_wait_seconds",
    "Waits imposed by the global Gemini rate limit, by model and action (waited in the worker, "
    "or rescheduled the job).",
    ["model", "action"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


def observe_http(endpoint: str, method: str, status: int, seconds: float) -> None:
    labels = (endpoint, method, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_LATENCY.labels(*labels).observe(seconds)


# --- job counts from the job event log ----------------------------------------------------------
# Every transition appends its event in the transaction that makes it (workers.events): a new
# job its first "status", a final state its "done", a retry a "queued" status with an error.
# Counting those events once their transaction commits counts each job exactly once, whichever
# process (API, worker, reaper) made the change, and never a change that was rolled back.

_PENDING_COUNTS = "lifetales.metrics_pending"


def install_job_metrics(factory: sessionmaker[Session]) -> None:
    """Count jobs submitted, finished and retried from this factory's sessions."""
    event.listen(factory, "after_flush", _collect_submitted)
    event.listen(factory, "before_commit", _collect_job_changes)
    event.listen(factory, "after_commit", _observe_job_changes)
    event.listen(factory, "after_rollback", lambda session: session.info.pop(_PENDING_COUNTS, None))


def _collect_submitted(session: Session, _flush_context: object) -> None:
    submitted = [("submitted", job.kind, "", None) for job in session.new if isinstance(job, Job)]
    if submitted:
        session.info.setdefault(_PENDING_COUNTS, []).extend(submitted)


def _collect_job_changes(session: Session) -> None:
    finished: dict[Any, str] = {}
    retried: list[tuple[Any, str]] = []
    for item in pending_events(session):
        data = item["data"]
        if not isinstance(data, dict):
            continue
        if item["type"] == "done":
            finished[item["job_id"]] = str(data.get("status"))
        elif item["type"] == "status" and data.get("status") == "queued":
            error = data.get("error")
            if isinstance(error, dict):
                retried.append((item["job_id"], str(error.get("code"))))
    if not (finished or retried):
        return
    jobs: dict[Any, tuple[str, datetime]] = {}
    ids = set(finished) | {job_id for job_id, _code in retried}
    for job_id in ids:
        # A worker finishing its own job has it loaded: no query for that one.
        loaded = loaded_job(session, job_id)
        if loaded is not None and {"kind", "created_at"} <= loaded.__dict__.keys():
            jobs[job_id] = (loaded.kind, loaded.created_at)
    if missing := ids - jobs.keys():
        # Bulk cancels and the like: one primary-key lookup for all the jobs not loaded.
        rows = session.connection().execute(
            select(Job.id, Job.kind, Job.created_at).where(Job.id.in_(missing))
        )
        jobs.update({job_id: (kind, created_at) for job_id, kind, created_at in rows})
    pending = session.info.setdefault(_PENDING_COUNTS, [])
    for job_id, status in finished.items():
        if job_id in jobs:
            pending.append(("finished", jobs[job_id][0], status, jobs[job_id][1]))
    for job_id, code in retried:
        if job_id in jobs:
            pending.append(("retried", jobs[job_id][0], code, None))


def _observe_job_changes(session: Session) -> None:
    for change, kind, detail, created_at in session.info.pop(_PENDING_COUNTS, []):
        if change == "submitted":
            JOBS_SUBMITTED.labels(kind).inc()
        elif change == "finished":
            observe_job_finished(kind, detail, created_at)
        else:
            observe_retry(kind, detail)


def observe_job_finished(kind: str, status: str, submitted_at: datetime | None) -> None:
    JOBS_FINISHED.labels(kind, status).inc()
    if submitted_at is not None:
        JOB_DURATION.labels(kind, status).observe(_seconds_since(submitted_at))


def observe_queue_wait(kind: str, due_at: datetime | None, claimed_at: datetime | None) -> None:
    if due_at is not None and claimed_at is not None:
        JOB_QUEUE_WAIT.labels(kind).observe(max(0.0, (claimed_at - due_at).total_seconds()))


def observe_render(render_seconds: float, film_seconds: float) -> None:
    RENDER_SECONDS.observe(render_seconds)
    FILM_SECONDS.observe(film_seconds)


def observe_retry(kind: str, code: str) -> None:
    JOB_RETRIES.labels(kind, code).inc()


def observe_rate_limit_wait(model: str, action: str, seconds: float) -> None:
    RATE_LIMIT_WAITS.labels(model, action).observe(seconds)


def record_cache_lookup(agent: str, result: str) -> None:
    CACHE_LOOKUPS.labels(agent, result).inc()


class _Usage(Protocol):
    """What ``agents.types.Usage`` carries (structural, so this module needs no agent import)."""

    @property
    def model(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def calls(self) -> int: ...
    @property
    def video_seconds(self) -> float: ...


# The model call this job (thread or task) has in flight: (agent, model, perf_counter at start).
_call_in_flight: ContextVar[tuple[str, str, float] | None] = ContextVar(
    "lifetales_model_call", default=None
)


def model_call_started(agent: str, model: str) -> None:
    """The job got rate-limit room and now calls the model."""
    _call_in_flight.set((agent, model, time.perf_counter()))


def model_call_finished(agent: str, model: str, usage: _Usage) -> None:
    """The call answered: its latency, tokens and estimated cost, labelled with the model that
    answered (a fallback's, when the configured one is retired)."""
    _end_call("ok", calls=usage.calls, answered_by=usage.model)
    record_model_usage(agent, usage)


def model_call_answered(agent: str, model: str) -> None:
    """A call that starts a long-running operation answered: counted (and timed) now; what
    the operation makes is billed when it finishes (``record_model_usage``)."""
    _end_call("ok", answered_by=model)


def record_model_usage(agent: str, usage: _Usage) -> None:
    """Tokens, seconds of video and estimated cost of what a model made."""
    MODEL_TOKENS.labels(agent, usage.model, "in").inc(usage.input_tokens)
    MODEL_TOKENS.labels(agent, usage.model, "out").inc(usage.output_tokens)
    if usage.video_seconds:
        MODEL_VIDEO_SECONDS.labels(agent, usage.model).inc(usage.video_seconds)
    cost = estimated_cost_usd(usage.model, usage.input_tokens, usage.output_tokens,
                              usage.video_seconds)
    if cost is not None:
        MODEL_COST.labels(agent, usage.model).inc(cost)


def model_call_failed(outcome: str) -> None:
    """The job failed (``outcome`` is its error code); counts the call in flight, if any."""
    _end_call(outcome)


def _end_call(outcome: str, *, calls: int = 1, answered_by: str | None = None) -> None:
    in_flight = _call_in_flight.get()
    if in_flight is None:
        return
    _call_in_flight.set(None)
    agent, model, started = in_flight
    model = answered_by or model
    MODEL_CALLS.labels(agent, model, outcome).inc(max(1, calls))
    MODEL_LATENCY.labels(agent, model, outcome).observe(time.perf_counter() - started)


def _seconds_since(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())


_exporter_port: int | None = None


def start_metrics_exporter(address: str, port: int, *, tries: int = 10) -> int | None:
    """Serve this process's metrics on ``port``, or the next free one of ``tries`` ports (several
    workers on one host); once per process. Returns the port, or None when off (port 0) or when
    no port was free."""
    global _exporter_port
    if port <= 0 or _exporter_port is not None:
        return _exporter_port if port > 0 else None
    for candidate in range(port, port + tries):
        try:
            start_http_server(candidate, addr=address)
        except OSError:
            continue
        _exporter_port = candidate
        return candidate
    log.warning("no free port for the metrics exporter",
                extra={"ports": f"{port}-{port + tries - 1}"})
    return None


# --- request and job context -----------------------------------------------------------------

REQUEST_ID_HEADER = "X-Request-ID"
# What we accept from a client as its request id: a short token, nothing that could forge a
# log line or carry data (a UUID, a trace id, a load balancer's id all fit).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_context: ContextVar[Mapping[str, str]] = ContextVar(
    "lifetales_log_context", default=MappingProxyType({})
)


def accept_request_id(candidate: str | None) -> str:
    """The client's request id if it is a sane token, else a fresh one."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add fields to every log line of this context (thread or task); ``unbind`` the token."""
    current = dict(_context.get())
    current.update({key: value for key, value in fields.items() if value is not None})
    return _context.set(current)


def unbind(token: Token[Mapping[str, str]]) -> None:
    _context.reset(token)


def clear_context() -> None:
    """Forget every bound field (a pooled thread starting its next task)."""
    _context.set({})
    _call_in_flight.set(None)


def begin_job(job_id: str, request_id: str | None) -> Token[Mapping[str, str]]:
    """Bind a job's ids to everything it logs; pair with ``end_job``."""
    _call_in_flight.set(None)
    return bind(job_id=job_id, request_id=request_id)


def end_job(token: Token[Mapping[str, str]]) -> None:
    # A call still in flight was cut short by us (the job was canceled or re-scheduled).
    _end_call("abandoned")
    unbind(token)


def current_request_id() -> str | None:
    return _context.get().get("request_id")


def context_fields() -> Mapping[str, str]:
    return _context.get()


# --- JSON logs -------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}
_SENSITIVE_KEY = re.compile(
    r"(^|_)(password|passwd|secret|token|api_?key|authorization|cookie|credentials|dsn)$", re.I
)
REDACTED = "[redacted]"
# Variables whose values must never appear in a log line, and URLs whose password must not.
SECRET_ENV_VARS = (
    "GEMINI_API_KEY", "SECRET_KEY", "JWT_SECRET", "METRICS_TOKEN", "SENTRY_DSN",
    "FLOWER_BASIC_AUTH", "POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS",
)
URL_ENV_VARS = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "CLOUDINARY_URL",
                "FLOWER_BROKER_API")
_MIN_SECRET_LENGTH = 6  # shorter values would redact ordinary words


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The secrets this process was given, for the formatter to scrub from every line."""
    values = [env.get(name, "").strip() for name in SECRET_ENV_VARS]
    for name in URL_ENV_VARS:
        url = env.get(name, "").strip()
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            password = None
        values.extend(part for part in (password, url if name == "CLOUDINARY_URL" else "") if part)
    return [value for value in values if len(value) >= _MIN_SECRET_LENGTH]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, service, the bound context
    (request_id, job_id, task_id...), the record's ``extra`` fields and any exception."""

    def __init__(self, service: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.service = service
        # Longest first, so a secret containing another is scrubbed whole; each also as it
        # reads inside a JSON string (escaped once here, not on every line).
        self._secrets = [
            (secret, json.dumps(secret, ensure_ascii=False)[1:-1])
            for secret in sorted(set(secrets), key=len, reverse=True)
        ]

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        entry["pid"] = record.process
        entry.update(_context.get())
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = REDACTED if _SENSITIVE_KEY.search(key) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return self._scrub(json.dumps(entry, default=str, ensure_ascii=False))

    def _scrub(self, line: str) -> str:
        for secret, escaped in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
            if escaped != secret and escaped in line:
                line = line.replace(escaped, REDACTED)
        return line


_HANDLER_MARK = "_lifetales_json"
# Libraries that log every HTTP request they make at INFO: useful only when debugging.
# Celery's per-task "received"/"succeeded in" lines repeat the worker's own "job started" /
# "job finished" (which carry job and request ids) and cost a formatted line each per job.
_CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3", "google_genai.models",
                   "celery.app.trace", "celery.worker.strategy")


def json_formatter(service: str, env: Mapping[str, str]) -> JsonFormatter:
    return JsonFormatter(service, secret_values(env))


def configure_logging(service: str, level: str, env: Mapping[str, str]) -> logging.Handler:
    """JSON lines on stderr from the root logger at ``level``; idempotent (one handler)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    handler.setFormatter(json_formatter(service, env))
    root.setLevel(level)
    if logging.getLevelName(level) > logging.DEBUG:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    return handler


# --- Sentry ----------------------------------------------------------------------------------


def init_sentry(dsn: str | None, *, service: str) -> bool:
    """Error tracking with the Flask and Celery integrations when a DSN is set; off otherwise."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        # No user data, no request bodies (audio, notes), no local variables (keys, tokens).
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        server_name=service,
        before_send=_tag_with_context,
    )
    sentry_sdk.set_tag("service", service)
    return True


def _tag_with_context(event: Any, _hint: dict[str, Any]) -> Any:
    """Issues carry the request and job ids, to find the log lines of the same work."""
    tags = event.setdefault("tags", {})
    for key in ("request_id", "job_id", "task_id"):
        value = _context.get().get(key)
        if value is not None:
            tags[key] = value
    return event
