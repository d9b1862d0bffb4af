"""Narrator clip submissions: a photo (a moment's, or uploaded) and a script."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates

from agents.models import route_video_durations
from agents.narrator import ASPECT_RATIOS, MAX_SCRIPT_CHARS
from api.schemas.base import CamelSchema
from api.schemas.jobs import JobOptionsFormSchema, JobOptionsSchema

DEFAULT_SECONDS = 8  # the frontend's narrator clip
_DURATION_HELP = {"description": "Length of the clip in seconds: one the video model (and each "
                                 "of its fallbacks) accepts: 3 to 10 with the default models."}


def allowed_durations() -> tuple[int, ...]:
    """The lengths the configured video model (and each of its fallbacks) accepts."""
    from api.state import state

    return route_video_durations(state().settings.agents.video)


class _ClipFields(CamelSchema):
    script = fields.String(required=True, validate=validate.Length(min=1, max=MAX_SCRIPT_CHARS),
                           metadata={"description": "What the person in the photo says."})
    duration_seconds = fields.Integer(load_default=DEFAULT_SECONDS, metadata=_DURATION_HELP)
    aspect_ratio = fields.String(load_default="16:9", validate=validate.OneOf(ASPECT_RATIOS))

    @validates("duration_seconds")
    def _model_accepts(self, value: int, **_: Any) -> None:
        allowed = allowed_durations()
        if value not in allowed:
            raise ValidationError(f"must be one of the video model's lengths: "
                                  f"{allowed[0]} to {allowed[-1]} s" if len(allowed) > 2
                                  else f"must be one of {list(allowed)} s")


class NarratorClipJsonSchema(_ClipFields, JobOptionsSchema):
    """A clip of a photo already on one of your moments."""

    media_id = fields.UUID(required=True, metadata={
        "description": "A photo on one of your moments; the clip is added to that moment."})
    duration_seconds = fields.Integer(load_default=DEFAULT_SECONDS, strict=True,
                                      metadata=_DURATION_HELP)


class NarratorClipFormSchema(_ClipFields, JobOptionsFormSchema):
    """The multipart form beside ``file`` (the photo)."""

    note_id = fields.UUID(load_default=None, allow_none=True, metadata={
        "description": "A moment of yours to add the photo and the clip to."})
