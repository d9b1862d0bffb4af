from __future__ import annotations

from marshmallow import fields, validate
from webargs.fields import DelimitedList

from api.schemas.base import CamelSchema
from models import JOB_KINDS, JOB_STATUSES, WEBHOOK_EVENTS

# The job resource is shared with the workers (webhook payloads): one serialization.
from workers.job_resource import (
    JOB_LIFECYCLE,
    JobErrorSchema,
    JobProgressSchema,
    JobSchema,
    WebhookDeliverySchema,
)

__all__ = [
    "JOB_LIFECYCLE",
    "MAX_DEADLINE_S",
    "AdminJobQuerySchema",
    "AdminJobSchema",
    "CancelAfterSchema",
    "JobErrorSchema",
    "JobOptionsFormSchema",
    "JobOptionsSchema",
    "JobProgressSchema",
    "JobQuerySchema",
    "JobSchema",
    "WebhookDeliverySchema",
]


MAX_DEADLINE_S = 7 * 24 * 3600
_DEADLINE = validate.Range(min=1, max=MAX_DEADLINE_S)
_WEBHOOK_HELP = (
    "An https URL to push this job's events to, signed (README, Webhooks). Must resolve to a "
    "public address; the payload is the job resource.")
_EVENTS_HELP = (
    f"Events to push besides `completed`, which is always sent: any of {list(WEBHOOK_EVENTS)}.")
_DEADLINE_HELP = (
    "Seconds from now: not started by then, the job ends `expired`; still running then, it is "
    "stopped and ends `canceled` with reason `deadline`. Same as the `Cancel-After` header "
    "(both: they must agree).")


class WebhookOptionsSchema(CamelSchema):
    """What every submit body may add to its job: a webhook."""

    webhook = fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(min=1, max=2048),
                            metadata={"format": "uri", "description": _WEBHOOK_HELP})
    webhook_events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
                                 load_default=None, allow_none=True,
                                 metadata={"description": _EVENTS_HELP})


class JobOptionsSchema(WebhookOptionsSchema):
    """What every submit body may add to its job: a webhook and a deadline."""

    deadline_seconds = fields.Integer(load_default=None, allow_none=True, strict=True,
                                      validate=_DEADLINE, metadata={"description": _DEADLINE_HELP})


class JobOptionsFormSchema(JobOptionsSchema):
    """The same, as multipart form fields (``webhookEvents`` comma-separated)."""

    webhook_events = DelimitedList(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
                                   load_default=None, allow_none=True,
                                   metadata={"description": _EVENTS_HELP})
    deadline_seconds = fields.Integer(load_default=None, allow_none=True, validate=_DEADLINE,
                                      metadata={"description": _DEADLINE_HELP})


class CancelAfterSchema(CamelSchema):
    """The ``Cancel-After`` request header: the job's deadline, in seconds from now."""

    cancel_after = fields.Integer(data_key="Cancel-After", load_default=None, validate=_DEADLINE)


class JobQuerySchema(CamelSchema):
    kind = fields.String(validate=validate.OneOf(JOB_KINDS))
    status = fields.String(validate=validate.OneOf(JOB_STATUSES),
                           metadata={"description": JOB_LIFECYCLE})
    parent_id = fields.UUID()


class AdminJobSchema(CamelSchema, JobSchema):
    """A job as operators see it: whose it is, its queue and the request that made it."""

    owner_id = fields.UUID(dump_only=True)
    queue = fields.String(dump_only=True)
    request_id = fields.String(dump_only=True, allow_none=True)


class AdminJobQuerySchema(JobQuerySchema):
    user_id = fields.UUID()
