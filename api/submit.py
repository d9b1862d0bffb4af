"""How every submission answers: 202 + Location + Retry-After, or the finished job under
``Prefer: wait=N`` (RFC 7240); ``Idempotency-Key`` returns the job a retried submit made."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Response, jsonify, request
from flask_smorest import abort
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from api.schemas.jobs import JobSchema
from api.state import db, state
from models import TERMINAL_STATUSES, Job
from models.base import utcnow

MAX_WAIT_S = 60
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)
POLL_INTERVAL_S = 0.05
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)

job_schema = JobSchema()

# OpenAPI of every submit: its request headers, and its two success answers.
SUBMIT_HEADERS: list[dict[str, Any]] = [
    {"in": "header", "name": "Idempotency-Key", "required": False,
     "description": "A retried submit with the same key returns the same job (for 24 h); "
                    "the same key with another body is 422.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
    {"in": "header", "name": "Prefer", "required": False,
     "description": f"``wait=N`` (RFC 7240, N <= {MAX_WAIT_S}): wait up to N seconds for the "
                    "job to finish, answering 200 with the finished job if it does.",
     "schema": {"type": "string"}},
]
_JOB_CONTENT = {"application/json": {"schema": JobSchema}}
SUBMITTED: dict[str, Any] = {
    "202": {"description": "Accepted: the job, queued or running; poll its Location.",
            "content": _JOB_CONTENT,
            "headers": {"Location": {"required": True, "schema": {"type": "string"}},
                        "Retry-After": {"required": True, "schema": {"type": "integer"}}}},
    "200": {"description": "The job, already finished (``Prefer: wait=N``, or a replay of a "
                           "finished job's Idempotency-Key).",
            "content": _JOB_CONTENT,
            "headers": {"Content-Location": {"required": True, "schema": {"type": "string"}}}},
}


def retry_after_s(job: Job) -> int:
    return 1 if job.status == "queued" else 2


def requested_wait() -> int:
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), MAX_WAIT_S) if match else 0


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
    owner_id: uuid.UUID, fingerprint_payload: Any, create: Callable[[str | None, str], Job]
) -> Response:
    """Run ``create(key, fingerprint)`` (domain writes + job) once per Idempotency-Key, commit,
    and answer."""
    key = idempotency_key()
    fingerprint = request_fingerprint(fingerprint_payload)
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
    return job_response(job, wait_s=requested_wait())


def wait_for_job(job: Job, wait_s: float) -> Job:
    deadline = time.monotonic() + wait_s
    session = state().session_factory()
    try:
        current = job
        while current.status not in TERMINAL_STATUSES and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            session.expire_all()
            found = session.get(Job, job.id)
            if found is None:
                break
            current = found
        return current
    finally:
        session.close()


def job_response(job: Job, *, wait_s: int = 0) -> Response:
    if wait_s:
        job = wait_for_job(job, wait_s)
    body = jsonify(job_schema.dump(job))
    location = f"/api/v1/jobs/{job.id}"
    if job.status in TERMINAL_STATUSES:
        body.status_code = 200
        body.headers["Content-Location"] = location
        if wait_s:
            body.headers["Preference-Applied"] = f"wait={wait_s}"
    else:
        body.status_code = 202
        body.headers["Location"] = location
        body.headers["Retry-After"] = str(retry_after_s(job))
    return body
