"""How every submission answers: 202 + Location + Retry-After, or the finished job under
``Prefer: wait=N`` (RFC 7240); ``Idempotency-Key`` returns the job a retried submit made; the
options any submit may give its job (webhook, deadline) are read here, once."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Response, request
from flask_smorest import abort
from marshmallow import Schema, ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from api.ratelimit import charge
from api.schemas.jobs import MAX_DEADLINE_S, CancelAfterSchema, JobSchema
from api.state import db, state
from models import TERMINAL_STATUSES, WEBHOOK_EVENTS, Job
from models.base import utcnow
from workers.dispatch import create_job
from workers.job_mirror import committed_document
from workers.job_resource import JobDocument, render_job
from workers.webhooks import WebhookRefused, resolve_target

MAX_WAIT_S = 60
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
POLL_INTERVAL_S = 0.05  # without Redis notifications (embedded default)
WAKE_TIMEOUT_S = 1.0  # with them: re-read anyway this often (a lost notification)
# One preference of a Prefer header (RFC 7240): commas inside quoted values do not split.
_PREFERENCE = re.compile(r'(?:[^,"]|"[^"]*")+')

# OpenAPI of every submit: its request headers, and its two success answers.
SUBMIT_HEADERS: list[dict[str, Any]] = [
    {"in": "header", "name": "Idempotency-Key", "required": False,
     "description": "A retried submit with the same key returns the same job (for 24 h); "
                    "the same key with another body is 422.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
    {"in": "header", "name": "Prefer", "required": False,
     "description": f"RFC 7240. ``wait=N`` (N <= {MAX_WAIT_S}): wait up to N seconds for the "
                    "job to finish, answering 200 with the finished job if it does (else 202). "
                    "``respond-async``: answer 202 at once; with ``wait=N`` as well, wait up to "
                    "N seconds first. ``Preference-Applied`` names what shaped the answer "
                    "(``wait=N`` on a 200, ``respond-async`` on a 202); other "
                    "preferences (``return=...``) are ignored. Answers carry ``Vary: Prefer``.",
     "schema": {"type": "string"}},
    {"in": "header", "name": "Cancel-After", "required": False,
     "description": f"The job's deadline, in seconds from now (1 to {MAX_DEADLINE_S}): not "
                    "started by then it ends ``expired``; still running then it is stopped "
                    "and ends ``canceled`` with ``error.reason`` ``deadline``. The body's "
                    "``deadlineSeconds`` says the same; sending both with different values "
                    "is 422.",
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DEADLINE_S}},
]
_JOB_CONTENT = {"application/json": {"schema": JobSchema}}
SUBMITTED: dict[str, Any] = {
    "202": {"description": "Accepted: the job, queued or running; poll its Location.",
            "content": _JOB_CONTENT,
            "headers": {"Location": {"required": True, "schema": {"type": "string"}},
                        "Retry-After": {"required": True, "schema": {"type": "integer"}},
                        "Vary": {"required": True, "schema": {"type": "string"}},
                        "Preference-Applied": {"schema": {"type": "string"}}}},
    "200": {"description": "The job, already finished (``Prefer: wait=N``, or a replay of a "
                           "finished job's Idempotency-Key).",
            "content": _JOB_CONTENT,
            "headers": {"Content-Location": {"required": True, "schema": {"type": "string"}},
                        "Vary": {"required": True, "schema": {"type": "string"}},
                        "Preference-Applied": {"schema": {"type": "string"}}}},
}


def retry_after_s(status: str) -> int:
    """When to poll a job in this status again (seconds)."""
    return 1 if status == "queued" else 2


def job_document(job: Job) -> JobDocument:
    """The job's document: as rendered when the request's last commit wrote it (no second
    rendering), else rendered now from the loaded job."""
    session = db()
    return committed_document(session, job) or render_job(session, job)


@dataclass(frozen=True)
class Preferences:
    """What the request's ``Prefer`` headers ask of a submit."""

    respond_async: bool = False
    wait_s: int = 0  # 0: no wait asked


def preferences() -> Preferences:
    """Parse every ``Prefer`` header (RFC 7240): comma-separated, case-insensitive names,
    parameters after ``;`` ignored, the first of a repeated preference wins; a preference not
    understood or malformed is ignored, as the RFC asks."""
    found: dict[str, str | None] = {}
    for header in request.headers.getlist("Prefer"):
        for item in _PREFERENCE.findall(header):
            token = item.split(";", 1)[0]
            name, equals, value = token.partition("=")
            name = name.strip().lower()
            if name and name not in found:
                found[name] = value.strip().strip('"') if equals else None
    wait = found.get("wait") or ""
    wait_s = min(int(wait), MAX_WAIT_S) if wait.isascii() and wait.isdigit() else 0
    return Preferences(respond_async="respond-async" in found, wait_s=wait_s)


@dataclass(frozen=True)
class JobOptions:
    """What a submit asks of its job besides its input: a webhook and a deadline."""

    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    deadline_s: int | None = None
    deadline_at: datetime | None = None

    def job_args(self) -> dict[str, Any]:
        """Keyword arguments of ``create_job``."""
        return {"webhook_url": self.webhook_url, "webhook_events": self.webhook_events,
                "deadline_at": self.deadline_at}

    def fingerprint(self) -> dict[str, Any]:
        """The part of the request an Idempotency-Key replay must repeat."""
        asked = {"webhook": self.webhook_url, "webhookEvents": self.webhook_events,
                 "deadlineSeconds": self.deadline_s}
        return {name: value for name, value in asked.items() if value is not None}


def job_options(data: Mapping[str, Any] | None = None) -> JobOptions:
    """The job options of this submit: the body's ``webhook``, ``webhookEvents`` and
    ``deadlineSeconds`` (as loaded by JobOptionsSchema) and the ``Cancel-After`` header.
    422 naming the field for a webhook URL that may not receive webhooks (SSRF guard)."""
    data = data or {}
    location = "json" if request.is_json else "form"
    deadline_s = _deadline_s(data.get("deadline_seconds"), location)
    deadline_at = utcnow() + timedelta(seconds=deadline_s) if deadline_s else None
    url = data.get("webhook")
    events = data.get("webhook_events")
    if url is None:
        if events:
            abort(422, message="webhookEvents needs a webhook",
                  errors={location: {"webhookEvents": ["needs webhook"]}})
        return JobOptions(deadline_s=deadline_s, deadline_at=deadline_at)
    settings = state().settings.webhooks
    try:
        resolve_target(url, allow_http=settings.allow_http, allow_private=settings.allow_private)
    except WebhookRefused as exc:
        abort(422, message=f"webhook {exc.reason}", errors={location: {"webhook": [exc.reason]}})
    asked = set(events or ()) | {"completed"}  # completed is always sent
    return JobOptions(webhook_url=url,
                      webhook_events=[event for event in WEBHOOK_EVENTS if event in asked],
                      deadline_s=deadline_s, deadline_at=deadline_at)


def _deadline_s(from_body: int | None, location: str) -> int | None:
    try:
        header = CancelAfterSchema().load(
            {"Cancel-After": request.headers["Cancel-After"]}
            if "Cancel-After" in request.headers else {})["cancel_after"]
    except ValidationError as exc:
        abort(422, message=f"Cancel-After must be a whole number of seconds from 1 to "
                           f"{MAX_DEADLINE_S}", errors={"headers": exc.messages})
    if header is not None and from_body is not None and header != from_body:
        abort(422, message="Cancel-After and deadlineSeconds disagree; send one of them",
              errors={location: {"deadlineSeconds": ["disagrees with Cancel-After"]}})
    deadline: int | None = header if header is not None else from_body
    return deadline


def load_body(schema: Schema, data: Any) -> dict[str, Any]:
    """A JSON or multipart submit body loaded by ``schema``; 422 naming the fields otherwise
    (for bodies ``@blp.arguments`` cannot take: one view, two content types)."""
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        location = "json" if request.is_json else "form"
        abort(422, errors={location: exc.messages})  # the error handler words the message
        raise AssertionError("unreachable") from exc
    return loaded


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        abort(422, message="Idempotency-Key must be 1 to 255 printable characters")
    return key


def find_replay(owner_id: uuid.UUID, key: str | None, fingerprint: str) -> Job | None:
    """The job an earlier submit with this key made; 422 if that submit's body differed."""
    if key is None:
        return None
    job = db().scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))
    if job is not None and job.created_at < utcnow() - IDEMPOTENCY_KEY_TTL:
        # Expired: the key is free again. Released in the transaction that reuses it.
        db().execute(update(Job).where(Job.id == job.id).values(idempotency_key=None))
        return None
    if job is not None and job.request_hash != fingerprint:
        abort(422, message="Idempotency-Key was already used with a different request body")
    return job


def submit(
    owner_id: uuid.UUID, fingerprint_payload: Any, create: Callable[[str | None, str], Job],
    *, options: JobOptions | None = None,
) -> Response:
    """Run ``create(key, fingerprint)`` (domain writes + job) once per Idempotency-Key, commit,
    and answer. ``options``: the job options ``create`` passed to ``create_job`` (a replay must
    repeat them too)."""
    key = idempotency_key()
    asked = options.fingerprint() if options is not None else {}
    fingerprint = request_fingerprint(
        {"request": fingerprint_payload, "jobOptions": asked} if asked else fingerprint_payload)
    job = find_replay(owner_id, key, fingerprint)
    if job is None:
        job = create(key, fingerprint)
        try:
            db().commit()  # the Celery message goes out after this commit
        except IntegrityError:
            # Two concurrent submits with one key: the loser answers with the winner's job.
            db().rollback()
            job = find_replay(owner_id, key, fingerprint)
            if job is None:
                raise
    response = job_response(job, prefer=preferences())
    response.vary.add("Prefer")  # the answer (200 or 202, when) depends on it
    return response


def submit_job(owner_id: uuid.UUID, kind: str, payload: dict[str, Any],
               data: Mapping[str, Any], *, budget: str | None = None) -> Response:
    """``submit`` of one ``kind`` job of ``payload`` with the body's job options (``data``),
    charging the user's ``budget`` (the kind's, by default) only when a job is made: an
    Idempotency-Key replay makes none."""
    options = job_options(data)

    def create(key: str | None, request_hash: str) -> Job:
        charge(budget or kind)
        return create_job(db(), owner_id=owner_id, kind=kind, input=payload,
                          idempotency_key=key, request_hash=request_hash,
                          max_attempts=state().settings.attempts_for(kind),
                          **options.job_args())

    return submit(owner_id, payload, create, options=options)


def wait_for_job(job: Job, wait_s: float) -> tuple[str, bytes]:
    """(status, document) of the job once finished, or as it is when ``wait_s`` runs out.

    Wakes on the job's event notifications (registered before the first read, so nothing
    slips between) and reads the status the notification announced from the job's document in
    Redis; when no notification came for a while it reads the database instead (a lost
    notification, or an entry a failed write left behind), and polls the database briskly with
    no notifications at all (the embedded default has no Redis)."""
    deadline = time.monotonic() + wait_s
    status_of = select(Job.status).where(Job.id == job.id)
    session = db()
    mirror = state().mirror
    woken = True
    with state().watcher.watch(job.id) as watch:
        while True:
            status = mirror.status(job.id) if mirror is not None and woken else None
            if status is None:
                status = session.scalar(status_of)
                session.commit()  # hand the connection back while waiting
            remaining = deadline - time.monotonic()
            if status is None or status in TERMINAL_STATUSES or remaining <= 0:
                break
            woken = watch.wait(min(remaining, WAKE_TIMEOUT_S), poll_s=POLL_INTERVAL_S)
    if status is None or status == job.status:
        return job.status, job_document(job).body
    if mirror is not None and status in TERMINAL_STATUSES:
        entry = mirror.lookup(job.id)
        if entry is not None and entry.status == status:  # final: no newer state can follow
            return entry.status, entry.body or b""
    fresh = session.get(Job, job.id, populate_existing=True) or job
    return fresh.status, render_job(session, fresh).body


def job_response(job: Job, *, prefer: Preferences | None = None) -> Response:
    """200 with a finished job, else 202 with where to poll; under ``Prefer: wait=N`` (with
    or without ``respond-async``) a job not yet finished is waited for up to N seconds."""
    prefer = prefer or Preferences()
    if prefer.wait_s and job.status not in TERMINAL_STATUSES:
        status, body = wait_for_job(job, prefer.wait_s)
    else:
        status, body = job.status, job_document(job).body
    response = Response(body, mimetype="application/json")
    location = f"/api/v1/jobs/{job.id}"
    if status in TERMINAL_STATUSES:
        response.status_code = 200
        response.headers["Content-Location"] = location
        if prefer.wait_s:  # the final answer the wait asked for
            response.headers["Preference-Applied"] = f"wait={prefer.wait_s}"
    else:
        response.status_code = 202
        response.headers["Location"] = location
        response.headers["Retry-After"] = str(retry_after_s(status))
        if prefer.respond_async:
            response.headers["Preference-Applied"] = "respond-async"
    return response
