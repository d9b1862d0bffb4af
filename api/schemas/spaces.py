from __future__ import annotations

from datetime import UTC

from flask_smorest.fields import Upload
from marshmallow import fields, validate

from api.schemas.base import CamelSchema

MAX_TEXT = 20_000


class SpaceCreateSchema(CamelSchema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=5000))
    cover_image = fields.String(allow_none=True, validate=validate.Length(max=1000))
    # Naive times are taken as UTC, as the database stores them (timestamptz).
    start_date = fields.AwareDateTime(default_timezone=UTC, allow_none=True)


class SpaceUpdateSchema(SpaceCreateSchema):
    title = fields.String(validate=validate.Length(min=1, max=200))


class MediaSchema(CamelSchema):
    id = fields.UUID(dump_only=True)
    note_id = fields.UUID(dump_only=True, allow_none=True)
    kind = fields.String(dump_only=True)
    url = fields.String(dump_only=True)
    mime_type = fields.String(dump_only=True)
    size = fields.Integer(dump_only=True)
    sha256 = fields.String(dump_only=True)
    transcription = fields.String(dump_only=True, allow_none=True)
    transcription_job_id = fields.UUID(dump_only=True, allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    removed_at = fields.DateTime(dump_only=True, allow_none=True, metadata={
        "description": "When retention deleted the stored file (its url then answers 404); "
                       "an audio file's transcription stays."})


class NoteCreateSchema(CamelSchema):
    type = fields.String(load_default="MOMENT", validate=validate.OneOf(["MOMENT"]))
    timestamp = fields.Integer(strict=True, validate=validate.Range(min=0, max=10**14))
    title = fields.String(allow_none=True, validate=validate.Length(max=200))
    text_content = fields.String(allow_none=True, validate=validate.Length(max=MAX_TEXT))


class NoteUpdateSchema(CamelSchema):
    timestamp = fields.Integer(strict=True, validate=validate.Range(min=0, max=10**14))
    title = fields.String(allow_none=True, validate=validate.Length(max=200))
    text_content = fields.String(allow_none=True, validate=validate.Length(max=MAX_TEXT))


# How the OpenAPI document describes a list-of-strings Method field (it cannot tell by itself).
_STRINGS = {"type": "array", "items": {"type": "string"}}


class NoteSchema(CamelSchema):
    """The frontend's Note (a moment), plus the media objects behind its file ids."""

    id = fields.UUID(dump_only=True)
    space_id = fields.UUID(dump_only=True)
    type = fields.String(dump_only=True)
    timestamp = fields.Integer(dump_only=True, attribute="timestamp_ms")
    title = fields.String(dump_only=True, allow_none=True)
    text_content = fields.String(dump_only=True, allow_none=True)
    audio_file_ids = fields.Method("_audio_ids", dump_only=True, metadata=_STRINGS)
    transcriptions = fields.Method("_transcriptions", dump_only=True, metadata=_STRINGS)
    image_file_ids = fields.Method("_image_ids", dump_only=True, metadata=_STRINGS)
    video_file_ids = fields.Method("_video_ids", dump_only=True, metadata=_STRINGS)
    media = fields.List(fields.Nested(MediaSchema), dump_only=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)

    @staticmethod
    def _of_kind(note: object, kind: str) -> list[object]:
        return [m for m in note.media if m.kind == kind]  # type: ignore[attr-defined]

    def _audio_ids(self, note: object) -> list[str]:
        return [str(m.id) for m in self._of_kind(note, "audio")]  # type: ignore[attr-defined]

    def _transcriptions(self, note: object) -> list[str]:
        # One per audio file, same order; "" while that file's transcription is pending.
        return [m.transcription or "" for m in self._of_kind(note, "audio")]  # type: ignore[attr-defined]

    def _image_ids(self, note: object) -> list[str]:
        return [str(m.id) for m in self._of_kind(note, "image")]  # type: ignore[attr-defined]

    def _video_ids(self, note: object) -> list[str]:
        return [str(m.id) for m in self._of_kind(note, "video")]  # type: ignore[attr-defined]


class SpaceSchema(CamelSchema):
    id = fields.UUID(dump_only=True)
    title = fields.String(dump_only=True)
    description = fields.String(dump_only=True, allow_none=True)
    cover_image = fields.String(dump_only=True, allow_none=True)
    start_date = fields.DateTime(dump_only=True, allow_none=True)
    story_version = fields.Integer(dump_only=True, attribute="current_story_version",
                                   allow_none=True)
    created_at = fields.DateTime(dump_only=True)
    updated_at = fields.DateTime(dump_only=True)


class SpaceDetailSchema(SpaceSchema):
    notes = fields.List(fields.Nested(NoteSchema), dump_only=True)


class MediaUploadSchema(CamelSchema):
    file = Upload(required=True)
