from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.base import CamelSchema
from models import JOB_KINDS, JOB_STATUSES


class JobErrorSchema(CamelSchema):
    code = fields.String()
    message = fields.String()
    retryable = fields.Boolean()


class JobProgressSchema(CamelSchema):
    step = fields.String()
    current = fields.Integer()
    total = fields.Integer()


class JobSchema(CamelSchema):
    id = fields.UUID(dump_only=True)
    kind = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": list(JOB_STATUSES)})
    attempts = fields.Integer(dump_only=True)
    max_attempts = fields.Integer(dump_only=True)
    progress = fields.Nested(JobProgressSchema, dump_only=True, allow_none=True)
    input = fields.Dict(dump_only=True)
    result = fields.Dict(dump_only=True, allow_none=True)
    error = fields.Nested(JobErrorSchema, dump_only=True, allow_none=True)
    usage = fields.Dict(dump_only=True, allow_none=True)
    parent_id = fields.UUID(dump_only=True, allow_none=True)
    cancel_requested = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)
    started_at = fields.DateTime(dump_only=True, allow_none=True)
    finished_at = fields.DateTime(dump_only=True, allow_none=True)
    links = fields.Method("_links", dump_only=True)

    def _links(self, job: object) -> dict[str, str]:
        base = f"/api/v1/jobs/{job.id}"  # type: ignore[attr-defined]
        return {"self": base, "cancel": f"{base}/cancel", "events": f"{base}/events"}


class JobQuerySchema(CamelSchema):
    kind = fields.String(validate=validate.OneOf(JOB_KINDS))
    status = fields.String(validate=validate.OneOf(JOB_STATUSES))
    parent_id = fields.UUID()


class AdminJobSchema(JobSchema):
    """A job as operators see it: whose it is, its queue and the request that made it."""

    owner_id = fields.UUID(dump_only=True)
    queue = fields.String(dump_only=True)
    request_id = fields.String(dump_only=True, allow_none=True)


class AdminJobQuerySchema(JobQuerySchema):
    user_id = fields.UUID()
