"""Moments (notes) of a space and their media files."""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint, abort
from marshmallow import fields
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import FileStorage

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.media_intake import classify, read_upload, start_transcription, store_media
from api.ownership import owned_note, owned_space
from api.ratelimit import charge
from api.resources.stories import MAX_NOTES_PER_STORY
from api.schemas.jobs import JobSchema
from api.schemas.spaces import (
    MediaSchema,
    MediaUploadSchema,
    NoteCreateSchema,
    NoteSchema,
    NoteUpdateSchema,
)
from api.state import db, state
from models import Media, Note
from workers.retention import delete_released_files, stored_keys_of_notes

blp = Blueprint("notes", __name__, url_prefix="/api/v1", description="Moments and their media")

# A story tells every moment of its space: a space never holds more than one story can take.
MAX_NOTES_PER_SPACE = MAX_NOTES_PER_STORY
MAX_MEDIA_PER_NOTE = 20


class MediaCreatedSchema(MediaSchema):
    transcription_job = fields.Nested(JobSchema, dump_only=True, allow_none=True)


@blp.route("/spaces/<uuid:space_id>/notes")
class Notes(MethodView):
    decorators = [login_required]

    @blp.response(200, NoteSchema(many=True))
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, space_id: uuid.UUID) -> list[Note]:
        """The space's moments, oldest first."""
        owned_space(space_id)
        return list(db().scalars(
            select(Note).where(Note.space_id == space_id)
            .options(selectinload(Note.media)).order_by(Note.timestamp_ms, Note.created_at)
        ))

    @blp.arguments(NoteCreateSchema)
    @blp.response(201, NoteSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 404, 413, 429))
    def post(self, data: dict[str, Any], space_id: uuid.UUID) -> Note:
        """Add a moment; ``timestamp`` (ms since epoch) defaults to now. A space holds at most
        200 moments."""
        owned_space(space_id)
        count = db().scalar(select(func.count()).where(Note.space_id == space_id)) or 0
        if count >= MAX_NOTES_PER_SPACE:
            abort(422, message=f"a space holds at most {MAX_NOTES_PER_SPACE} moments "
                               "(the most one story can tell)")
        note = Note(
            space_id=space_id, type=data.get("type", "MOMENT"),
            timestamp_ms=data.get("timestamp", int(time.time() * 1000)),
            title=data.get("title"), text_content=data.get("text_content"), media=[],
        )
        db().add(note)
        db().commit()
        return note


@blp.route("/spaces/<uuid:space_id>/notes/<uuid:note_id>")
class NoteById(MethodView):
    decorators = [login_required]

    @blp.response(200, NoteSchema)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def get(self, space_id: uuid.UUID, note_id: uuid.UUID) -> Note:
        """One moment."""
        return owned_note(space_id, note_id)

    @blp.arguments(NoteUpdateSchema)
    @blp.response(200, NoteSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 404, 413, 429))
    def patch(self, data: dict[str, Any], space_id: uuid.UUID, note_id: uuid.UUID) -> Note:
        """Change some of a moment's fields."""
        note = owned_note(space_id, note_id)
        for name, value in data.items():
            setattr(note, "timestamp_ms" if name == "timestamp" else name, value)
        db().commit()
        return note

    @blp.response(204)
    @blp.doc(security=SECURITY, responses=error_responses(401, 404, 429))
    def delete(self, space_id: uuid.UUID, note_id: uuid.UUID) -> None:
        """Delete a moment and its media, with their stored files."""
        note = owned_note(space_id, note_id)
        keys = stored_keys_of_notes(db(), [note.id])
        db().delete(note)
        db().commit()
        # After the commit: a file whose delete fails is an orphan the retention sweep retries.
        delete_released_files(db(), state().storage, keys)


@blp.route("/spaces/<uuid:space_id>/notes/<uuid:note_id>/media")
class NoteMedia(MethodView):
    decorators = [login_required]

    @blp.arguments(MediaUploadSchema, location="files")
    @blp.response(201, MediaCreatedSchema)
    @blp.doc(security=SECURITY, responses=error_responses(400, 401, 404, 413, 429))
    def post(self, files: dict[str, FileStorage], space_id: uuid.UUID, note_id: uuid.UUID
             ) -> Media:
        """Attach an audio file or a photo (20 MB at most, its type checked against its bytes);
        audio starts a transcription job. A moment holds at most 20 files."""
        note = owned_note(space_id, note_id)
        if len(note.media) >= MAX_MEDIA_PER_NOTE:
            abort(422, message=f"a moment holds at most {MAX_MEDIA_PER_NOTE} files")
        upload = files["file"]
        data = read_upload(upload, "file")
        kind, mime = classify(data, upload.mimetype, "file", audio_only=False)
        if kind == "audio":
            charge("transcription")
        media = store_media(data, kind, mime, owner_id=current_user().id, note_id=note.id)
        job = start_transcription(media) if kind == "audio" else None
        db().commit()
        media.transcription_job = job  # type: ignore[attr-defined]
        return media
