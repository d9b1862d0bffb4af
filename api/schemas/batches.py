from __future__ import annotations

from datetime import UTC
from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from api.schemas.base import CamelSchema
from api.schemas.jobs import WebhookOptionsSchema
from api.schemas.settings import StorySettingsSchema
from api.schemas.stories import FORCE_HELP
from models import JOB_STATUSES
from workers.batch import MAX_SPACE_IDS


class StoryRegenerationRequestSchema(WebhookOptionsSchema):
    """Which spaces to regenerate: ``spaceIds``, or a filter (``userId``, ``updatedBefore``,
    ``all: true``; the filters combine). Only spaces with moments count. ``webhook``: told
    when the batch starts and finishes (``completed``), like any job's."""

    space_ids = fields.List(fields.UUID(), validate=validate.Length(min=1, max=MAX_SPACE_IDS),
                            metadata={"description": "These spaces (not with a filter)"})
    user_id = fields.UUID(metadata={"description": "Every space of this user"})
    updated_before = fields.AwareDateTime(
        default_timezone=UTC, metadata={"description": "Spaces last changed before this time"})
    all_spaces = fields.Boolean(data_key="all", load_default=False,
                                metadata={"description": "Every space (with no other filter)"})
    settings = fields.Nested(StorySettingsSchema, load_default=None, allow_none=True,
                             metadata={"description": "Overrides each owner's saved settings"})
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)
    dry_run = fields.Boolean(load_default=False, metadata={
        "description": "Answer with the count and estimated calls and cost; create nothing"})

    @validates_schema
    def _one_selection(self, data: dict[str, Any], **_: Any) -> None:
        has_filter = any(data.get(name) for name in ("user_id", "updated_before", "all_spaces"))
        if ("space_ids" in data) == has_filter:
            raise ValidationError("give either spaceIds or a filter (userId, updatedBefore, "
                                  "all: true), not both")


class BatchEstimateSchema(CamelSchema):
    """A dry run's answer: what the batch would do, before any call."""

    dry_run = fields.Boolean(dump_only=True)
    spaces = fields.Integer(dump_only=True, metadata={"description": "Stories to regenerate"})
    story_calls = fields.Integer(dump_only=True)
    illustration_calls = fields.Integer(dump_only=True)
    gemini_calls = fields.Integer(dump_only=True)
    estimated_cost_usd = fields.Float(dump_only=True, metadata={
        "description": "At list prices, with no answer from the cache (an upper bound)"})


class BatchTotalsSchema(CamelSchema):
    queued = fields.Integer(dump_only=True, metadata={
        "description": "Children waiting, and targets not fanned out yet"})
    running = fields.Integer(dump_only=True)
    succeeded = fields.Integer(dump_only=True)
    failed = fields.Integer(dump_only=True)
    canceled = fields.Integer(dump_only=True)


class BatchSchema(CamelSchema):
    """A batch regeneration: the ``story_batch`` job and how far its children are."""

    id = fields.UUID(dump_only=True)
    kind = fields.String(dump_only=True)
    status = fields.String(dump_only=True, metadata={"enum": list(JOB_STATUSES)})
    owner_id = fields.UUID(dump_only=True)
    input = fields.Dict(dump_only=True, metadata={
        "description": "The frozen selection, the settings overrides and the target count"})
    cancel_requested = fields.Boolean(dump_only=True)
    error = fields.Dict(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    finished_at = fields.DateTime(dump_only=True, allow_none=True)
    total = fields.Integer(dump_only=True, metadata={"description": "Stories in the batch"})
    fanned_out = fields.Integer(dump_only=True, metadata={
        "description": "Child story jobs created so far"})
    totals = fields.Nested(BatchTotalsSchema, dump_only=True)
    percent_done = fields.Float(dump_only=True)
    estimated_seconds_remaining = fields.Float(dump_only=True, allow_none=True, metadata={
        "description": "At the rate children have finished so far; null before the first"})
    cost_usd = fields.Float(dump_only=True, metadata={
        "description": "Estimated cost of the calls made so far (stories and illustrations)"})
    calls = fields.Integer(dump_only=True, metadata={"description": "Model calls made so far"})
    links = fields.Dict(keys=fields.String(), values=fields.String(), dump_only=True)
