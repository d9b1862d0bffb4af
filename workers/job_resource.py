"""The job as clients see it: one serialization for the API (``GET /jobs/{id}``, submit answers),
for webhook payloads and for the copy of each job's document kept in Redis
(workers/job_mirror.py), which the workers build without importing the API."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from marshmallow import Schema, fields
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from models import JOB_STATUSES, TERMINAL_STATUSES, WEBHOOK_EVENTS, WebhookDelivery

# The one description of the job lifecycle; every client-facing list of states is JOB_STATUSES.
JOB_LIFECYCLE = (
    "`queued` -> `running` -> one terminal state: "
    + ", ".join(f"`{status}`" for status in JOB_STATUSES if status in TERMINAL_STATUSES)
    + ". A job may go back from `running` to `queued` to be retried. `canceled`: on request "
    "(`POST /jobs/{id}/cancel`) or, with `error.reason` `deadline`, stopped by its deadline "
    "(`Cancel-After`) while running; `expired`: its deadline passed before it started. "
    "A terminal state never changes."
)
WEBHOOK_DELIVERIES_SHOWN = 20
# A job's upstream operation (workers/upstream_ops.py): the states after which the job may
# start one (again), none having been billed, and those of one running (or done) and billed.
UPSTREAM_STARTABLE = frozenset({"not_started", "failed"})
UPSTREAM_BILLED = frozenset({"running", "succeeded", "abandoned"})


class JobErrorSchema(Schema):
    code = fields.String()
    message = fields.String()
    retryable = fields.Boolean()
    reason = fields.String(metadata={"description": "Why a job was canceled: `deadline` when "
                                                    "its deadline stopped it"})


class JobProgressSchema(Schema):
    step = fields.String()
    current = fields.Integer()
    total = fields.Integer()
    estimated_seconds_remaining = fields.Integer(
        attribute="estimatedSecondsRemaining", data_key="estimatedSecondsRemaining",
        metadata={"description": "While a job waits on a long-running upstream operation "
                                 "(step `generating`): its estimate of the time left; "
                                 "`current`/`total` are then seconds waited / expected."})


class WebhookAttemptSchema(Schema):
    # Dumped from the attempt log's dicts, which are already keyed as clients see them.
    attempt = fields.Integer()
    statusCode = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    at = fields.String(metadata={"format": "date-time"})


class WebhookDeliverySchema(Schema):
    id = fields.UUID(metadata={"description": "The `webhook-id` header of every attempt"})
    event = fields.String(metadata={"enum": list(WEBHOOK_EVENTS)})
    status = fields.String(metadata={"enum": ["pending", "delivered", "failed"]})
    attempts = fields.List(fields.Nested(WebhookAttemptSchema), attribute="attempt_log")


def recent_deliveries(session: Session, job: Any) -> list[WebhookDelivery] | None:
    """A job's last webhook deliveries, oldest first; None (and no query) without a webhook."""
    if not job.webhook_url:
        return None
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(WEBHOOK_DELIVERIES_SHOWN)
    ).all()
    return list(reversed(rows))


class RecentDeliveries(fields.List):
    """A job's last webhook deliveries, read only for a job that has a webhook (polling any
    other job stays one row read)."""

    def get_value(self, obj: Any, attr: str, accessor: Any = None, default: Any = None) -> Any:
        session = object_session(obj) if obj.webhook_url else None
        return recent_deliveries(session, obj) if session is not None else None


class JobSchema(Schema):
    id = fields.UUID(dump_only=True)
    kind = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": list(JOB_STATUSES),
                                                     "description": JOB_LIFECYCLE})
    attempts = fields.Integer(dump_only=True)
    max_attempts = fields.Integer(dump_only=True, data_key="maxAttempts")
    progress = fields.Nested(JobProgressSchema, dump_only=True, allow_none=True)
    input = fields.Dict(dump_only=True)
    result = fields.Dict(dump_only=True, allow_none=True)
    error = fields.Nested(JobErrorSchema, dump_only=True, allow_none=True)
    usage = fields.Dict(dump_only=True, allow_none=True)
    parent_id = fields.UUID(dump_only=True, allow_none=True, data_key="parentId")
    cancel_requested = fields.Boolean(dump_only=True, data_key="cancelRequested")
    deadline_at = fields.DateTime(
        dump_only=True, allow_none=True, data_key="deadlineAt",
        metadata={"description": "Not started by then: `expired`; running then: `canceled` "
                                 "with reason `deadline`."})
    webhook = fields.String(dump_only=True, allow_none=True, attribute="webhook_url")
    webhook_events = fields.List(fields.String(), dump_only=True, allow_none=True,
                                 data_key="webhookEvents")
    webhook_deliveries = RecentDeliveries(
        fields.Nested(WebhookDeliverySchema), dump_only=True, allow_none=True,
        data_key="webhookDeliveries",
        metadata={"description": f"The webhook's last {WEBHOOK_DELIVERIES_SHOWN} deliveries, "
                                 "oldest first, each with its attempts; null without a webhook."})
    created_at = fields.DateTime(dump_only=True, data_key="createdAt")
    updated_at = fields.DateTime(dump_only=True, data_key="updatedAt")
    started_at = fields.DateTime(dump_only=True, allow_none=True, data_key="startedAt")
    finished_at = fields.DateTime(dump_only=True, allow_none=True, data_key="finishedAt")
    data_removed = fields.Function(
        lambda job: job.data_removed_at is not None, dump_only=True, data_key="dataRemoved",
        metadata={"type": "boolean", "description": "Retention pruned the job's input and "
                  "result; its status, timestamps, error and usage remain."})
    upstream_operation = fields.Function(
        lambda job: upstream_view(job), dump_only=True, data_key="upstreamOperation",
        metadata={"type": ["object", "null"], "description": (
            "The long-running upstream operation the job started (a narrator clip's video "
            "generation): `model`, `state` (`starting`, `running`, `succeeded`, `failed`, "
            "`not_started`, `unconfirmed`, or `abandoned`: the job ended while it ran on, "
            "e.g. on cancel or deadline), `startedAt`, `starts`, and `billed` (true: the "
            "provider charges for it; false: nothing to pay; null: unknown). Null for jobs "
            "without one.")})
    links = fields.Method("_links", dump_only=True, metadata={
        "type": "object", "required": ["self", "cancel", "events"],
        "properties": {name: {"type": "string"} for name in ("self", "cancel", "events")}})

    def _links(self, job: Any) -> dict[str, str]:
        base = f"/api/v1/jobs/{job.id}"
        return {"self": base, "cancel": f"{base}/cancel", "events": f"{base}/events"}


def upstream_view(job: Any) -> dict[str, Any] | None:
    """The job's upstream operation as clients see it (its upstream id stays private). A job
    that ended while its operation still ran upstream shows it ``abandoned``: it runs to its
    end, and is billed, with nobody to collect it."""
    record = getattr(job, "upstream_operation", None)
    if not record:
        return None
    state = str(record.get("state"))
    if job.status in TERMINAL_STATUSES and state in ("running", "starting"):
        state = "abandoned" if state == "running" else "unconfirmed"
    billed: bool | None = None
    if state in UPSTREAM_BILLED:
        billed = True
    elif state in UPSTREAM_STARTABLE:
        billed = False
    return {"model": record.get("model"), "state": state, "startedAt": record.get("startedAt"),
            "billed": billed, "starts": record.get("starts", 1)}


# What a webhook carries: the job resource as frozen when the event happened (its deliveries,
# which change as this very payload is sent, are left out).
_payload_schema = JobSchema(exclude=("webhook_deliveries",))
_deliveries_schema = WebhookDeliverySchema(many=True)


def webhook_payload(job: Any) -> dict[str, Any]:
    """The job resource a webhook delivery sends."""
    payload: dict[str, Any] = _payload_schema.dump(job)
    return payload


@dataclass(frozen=True)
class JobDocument:
    """A job's resource as sent to clients: its bytes, their ETag, and what a poll needs to
    answer without reading them (owner, status) or to order two copies (version)."""

    job_id: uuid.UUID
    owner_id: uuid.UUID
    version: int
    status: str
    body: bytes
    etag: str


def job_document(job: Any, deliveries: Sequence[Any] | None) -> JobDocument:
    """The document of a job (an ORM ``Job`` or a row of the jobs table) and its recent webhook
    deliveries (``recent_deliveries``): the one serialization, whoever serves it."""
    data = webhook_payload(job)
    data["webhookDeliveries"] = (
        _deliveries_schema.dump(deliveries) if job.webhook_url and deliveries is not None
        else None)
    body = orjson.dumps(data, default=str, option=orjson.OPT_SORT_KEYS)
    return JobDocument(job.id, job.owner_id, job.version, job.status, body,
                       hashlib.sha256(body).hexdigest()[:32])


def render_job(session: Session, job: Any) -> JobDocument:
    """The document of a job read in ``session`` (its deliveries read too when it has a webhook)."""
    return job_document(job, recent_deliveries(session, job))
