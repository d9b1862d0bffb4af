from __future__ import annotations

from marshmallow import fields, validate

from agents.types import NARRATIVE_TONES, VOICE_STYLES
from api.schemas.base import CamelSchema
from api.schemas.jobs import JobOptionsSchema
from api.schemas.stories import FORCE_HELP


class FilmSettingsSchema(CamelSchema):
    """What may change from the user's saved settings for one film."""

    voice_style = fields.String(validate=validate.OneOf(VOICE_STYLES))
    background_music = fields.Boolean()
    narrative_tone = fields.String(validate=validate.OneOf(NARRATIVE_TONES))


class FilmRequestSchema(JobOptionsSchema):
    settings = fields.Nested(FilmSettingsSchema, load_default=None, allow_none=True)
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)
    narrator_clip_id = fields.UUID(load_default=None, allow_none=True, metadata={
        "description": "A finished narrator clip of yours (its job id, `POST /narrator-clips`)"
                       ": the film opens with it, with its own sound, before the scenes."})


class FilmQuerySchema(CamelSchema):
    version = fields.Integer(validate=validate.Range(min=1))


class FilmSceneSchema(CamelSchema):
    chapter_id = fields.String(dump_only=True)
    start_seconds = fields.Float(dump_only=True)
    end_seconds = fields.Float(dump_only=True)


class FilmSchema(CamelSchema):
    """A film version: its status, and once ready, where to watch it."""

    id = fields.UUID(dump_only=True)
    space_id = fields.UUID(dump_only=True)
    version = fields.Integer(dump_only=True)
    story_version = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True, metadata={
        "enum": ["scripting", "narrating", "rendering", "ready", "failed", "canceled"]})
    job_id = fields.UUID(dump_only=True)
    current = fields.Boolean(dump_only=True)
    settings = fields.Dict(dump_only=True)
    script = fields.Dict(dump_only=True, allow_none=True, metadata={
        "description": "The frontend's VideoScript: title, totalDurationSeconds, musicMood, "
                       "scenes (chapterId, narrationText, visualDescription, durationSeconds, "
                       "transition)."})
    video_url = fields.String(dump_only=True, allow_none=True)
    poster_url = fields.String(dump_only=True, allow_none=True)
    subtitles_url = fields.String(dump_only=True, allow_none=True)
    duration_seconds = fields.Float(dump_only=True, allow_none=True)
    width = fields.Integer(dump_only=True, allow_none=True)
    height = fields.Integer(dump_only=True, allow_none=True)
    size_bytes = fields.Integer(dump_only=True, allow_none=True)
    scenes = fields.List(fields.Nested(FilmSceneSchema), dump_only=True, allow_none=True)
    has_music = fields.Boolean(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    finished_at = fields.DateTime(dump_only=True, allow_none=True)
