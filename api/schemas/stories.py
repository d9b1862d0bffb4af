from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.base import CamelSchema
from api.schemas.jobs import JobOptionsFormSchema, JobOptionsSchema
from api.schemas.settings import StorySettingsSchema

MAX_PROMPT = 2000


FORCE_HELP = {"description": "bypass the result cache (a new call to the model)"}


class StoryRequestSchema(JobOptionsSchema):
    settings = fields.Nested(StorySettingsSchema, load_default=None, allow_none=True)
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)


class StoryQuerySchema(CamelSchema):
    version = fields.Integer(validate=validate.Range(min=1))


class ChapterSchema(CamelSchema):
    """The frontend's Chapter."""

    id = fields.UUID(dump_only=True)
    position = fields.Integer(dump_only=True)
    title = fields.String(dump_only=True)
    content = fields.String(dump_only=True)
    illustration_prompt = fields.String(dump_only=True, allow_none=True)
    source_note_id = fields.UUID(dump_only=True, allow_none=True)
    user_image_ids = fields.List(fields.String(), dump_only=True)
    generated_image_url = fields.String(dump_only=True, allow_none=True)
    generated_image_urls = fields.List(fields.String(allow_none=True), dump_only=True,
                                       allow_none=True)


class StoryVersionSchema(CamelSchema):
    version = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True)
    job_id = fields.UUID(dump_only=True)
    current = fields.Boolean(dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    generated_at = fields.DateTime(dump_only=True, allow_none=True)


class MissingIllustrationSchema(CamelSchema):
    chapter_id = fields.UUID(dump_only=True)
    chapter_index = fields.Integer(dump_only=True)
    variant = fields.Integer(dump_only=True)


class StorySchema(CamelSchema):
    space_id = fields.UUID(dump_only=True)
    version = fields.Integer(dump_only=True)
    status = fields.String(dump_only=True)
    job_id = fields.UUID(dump_only=True)
    settings = fields.Dict(dump_only=True)
    chapters = fields.List(fields.Nested(ChapterSchema), dump_only=True)
    generated_at = fields.DateTime(dump_only=True, allow_none=True)
    missing_illustrations = fields.List(
        fields.Nested(MissingIllustrationSchema), dump_only=True,
        metadata={"description": "Images chapters should have and lack (their drawing failed); "
                                 "POST /spaces/{id}/story/illustrations/retry draws them."})


class IllustrationRequestSchema(JobOptionsSchema):
    prompt = fields.String(required=True, validate=validate.Length(min=1, max=MAX_PROMPT))
    style = fields.String(
        load_default="illustration",
        validate=validate.OneOf(["illustration", "cinematic", "pastel", "realistic"]),
    )
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)


class TranscriptionJsonSchema(JobOptionsSchema):
    """The architecture brief's contract: base64 audio and its mime type."""

    audio_data = fields.String(required=True, validate=validate.Length(min=1))
    mime_type = fields.String(required=True, validate=validate.Length(min=1, max=100))
    note_id = fields.UUID(load_default=None, allow_none=True)
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)


class TranscriptionFormSchema(JobOptionsFormSchema):
    note_id = fields.UUID(load_default=None, allow_none=True)
    force = fields.Boolean(load_default=False, metadata=FORCE_HELP)
