"""Narrator clips: a photo and a script become a short talking video (a ``narrator_clip`` job,
made by a long-running video generation upstream; see workers/tasks/narrator_clip.py)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from sqlalchemy import func, select

from api.auth import SECURITY, current_user, login_required
from api.errors import error_responses
from api.media_intake import classify, read_upload, store_media, uploaded_file
from api.ownership import owned_note_anywhere
from api.ratelimit import charge
from api.resources.notes import MAX_MEDIA_PER_NOTE
from api.schemas.narrator_clips import NarratorClipFormSchema, NarratorClipJsonSchema
from api.state import db, state
from api.submit import SUBMIT_HEADERS, SUBMITTED, job_options, load_body, submit
from models import Job, Media, Note
from workers.dispatch import create_job

blp = Blueprint("narrator_clips", __name__, url_prefix="/api/v1", description="Narrator clips")

_FORM = {"type": "object", "required": ["file", "script"], "properties": {
    "file": {"type": "string", "format": "binary", "description": "The photo"},
    "script": {"type": "string", "maxLength": 1000},
    "noteId": {"type": "string", "format": "uuid"},
    "durationSeconds": {"type": "integer"},
    "aspectRatio": {"type": "string", "enum": ["16:9", "9:16"]},
    "webhook": {"type": "string", "format": "uri"},
    "webhookEvents": {"type": "string", "description": "comma-separated: start,progress"},
    "deadlineSeconds": {"type": "integer", "minimum": 1}}}


def _owned_photo(media_id: uuid.UUID) -> Media:
    photo = db().scalar(select(Media).where(
        Media.id == media_id, Media.owner_id == current_user().id, Media.kind == "image",
        Media.removed_at.is_(None)))
    if photo is None:
        abort(404, message="photo not found")
    assert photo is not None
    return photo


def _room_for_clip(note: Note | None, adding: int) -> None:
    if note is None:
        return
    held = db().scalar(select(func.count()).select_from(Media)
                       .where(Media.note_id == note.id)) or 0
    if held + adding > MAX_MEDIA_PER_NOTE:
        abort(422, message=f"a moment holds at most {MAX_MEDIA_PER_NOTE} files; this one has "
                           "no room for the clip")


@blp.route("/narrator-clips")
class NarratorClips(MethodView):
    decorators = [login_required]

    @blp.doc(
        security=SECURITY,
        requestBody={"required": True, "content": {
            "application/json": {"schema": NarratorClipJsonSchema},
            "multipart/form-data": {"schema": _FORM}}},
        parameters=SUBMIT_HEADERS,
        responses={**SUBMITTED, **error_responses(400, 401, 404, 413, 415, 422, 429)},
    )
    def post(self) -> Response:
        """Make a narrator clip: the person in a photo says the script (a ``narrator_clip``
        job). JSON ``{mediaId, script, durationSeconds, aspectRatio}`` for a photo on one of
        your moments, or multipart ``file`` (+ optional ``noteId``). The result is
        ``{videoUrl, posterUrl, durationSeconds, width, height, hasAudio, mediaId, noteId}``;
        the clip is added to the moment as a video (its ``videoFileIds``)."""
        user = current_user()
        upload_data: bytes | None = None
        mime = ""
        if request.mimetype == "multipart/form-data":
            form = load_body(NarratorClipFormSchema(), request.form.to_dict())
            upload = uploaded_file()
            upload_data = read_upload(upload, "file")
            kind, mime = classify(upload_data, upload.mimetype, "file", audio_only=False)
            if kind != "image":
                abort(422, message=f"file: {mime} is not a photo")
            note = owned_note_anywhere(form["note_id"]) if form.get("note_id") else None
            photo_ref: dict[str, Any] = {"photo": hashlib.sha256(upload_data).hexdigest()}
        else:
            if not request.is_json:
                abort(415, message="send application/json or multipart/form-data")
            form = load_body(NarratorClipJsonSchema(), request.get_json(silent=True))
            photo = _owned_photo(form["media_id"])
            note = db().get(Note, photo.note_id) if photo.note_id else None
            photo_ref = {"mediaId": str(photo.id)}
        _room_for_clip(note, 2 if upload_data is not None else 1)
        spec = {"script": form["script"], "durationSeconds": form["duration_seconds"],
                "aspectRatio": form["aspect_ratio"], "noteId": str(note.id) if note else None}
        options = job_options(form)

        def create(key: str | None, request_hash: str) -> Job:
            charge("narrator_clip")  # not on an Idempotency-Key replay: that makes no new job
            media_id = photo_ref.get("mediaId")
            if upload_data is not None:
                media_id = str(store_media(upload_data, "image", mime, owner_id=user.id,
                                           note_id=note.id if note else None).id)
            return create_job(db(), owner_id=user.id, kind="narrator_clip",
                              input={"mediaId": media_id, **spec},
                              idempotency_key=key, request_hash=request_hash,
                              max_attempts=state().settings.attempts_for("narrator_clip"),
                              **options.job_args())

        return submit(user.id, {**photo_ref, **spec}, create, options=options)
