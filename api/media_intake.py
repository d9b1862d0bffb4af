"""Accepting uploaded files: size and type checks against the bytes, storage, transcription jobs."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import request
from flask_smorest import abort
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from agents.media.sniff import (
    AUDIO_MIME_TYPES,
    IMAGE_MIME_TYPES,
    check_declared_matches,
    normalize_mime,
    sniff_mime,
)
from api.state import db, state
from models import Job, Media
from workers.dispatch import create_job

MAX_MEDIA_BYTES = 20 * 1024 * 1024
GENERIC_MIME_TYPES = {"", "application/octet-stream", "binary/octet-stream"}


def too_large(field: str) -> None:
    abort(413, message=f"{field} is larger than the {MAX_MEDIA_BYTES // (1024 * 1024)} MB limit")


def uploaded_file(field: str = "file") -> FileStorage:
    """The multipart request's file ``field``; 422 naming it when it is missing."""
    upload = request.files.get(field)
    if upload is None:
        abort(422, message=f"{field} is required", errors={"files": {field: ["required"]}})
    assert upload is not None
    return upload


def read_upload(upload: FileStorage, field: str) -> bytes:
    """An uploaded file's bytes; 413 naming ``field`` past the size limit (read no further)."""
    data = upload.stream.read(MAX_MEDIA_BYTES + 1)
    if len(data) > MAX_MEDIA_BYTES:
        too_large(field)
    return bytes(data)


def classify(data: bytes, declared: str | None, field: str, *, audio_only: bool) -> tuple[str, str]:
    """(kind, mime type) of uploaded bytes, checked against what the client declared."""
    if not data:
        abort(422, message=f"{field} is empty", errors={"json": {field: ["empty file"]}})
    declared = (declared or "").split(";")[0].strip().lower()
    if declared in GENERIC_MIME_TYPES:
        sniffed = sniff_mime(data)
        if sniffed is None:
            abort(422, message=f"{field} is not a supported audio or image file")
        declared = sniffed
    assert declared is not None
    kind = "image" if declared.startswith("image/") else "audio"
    if audio_only and kind != "audio":
        abort(422, message=f"{field}: {declared} is not an audio type; "
                           f"allowed: {', '.join(sorted(AUDIO_MIME_TYPES))}")
    neither = kind == "audio" and normalize_mime(declared, "audio") not in AUDIO_MIME_TYPES
    if neither and not audio_only:
        # Say both kinds are accepted, not just "not a supported audio format".
        accepted = ", ".join(sorted(AUDIO_MIME_TYPES | IMAGE_MIME_TYPES))
        abort(422, message=f"{field} type {declared} is not a supported audio or image format; "
                           f"allowed: {accepted}")
    try:
        mime = check_declared_matches(declared, data, kind)  # type: ignore[arg-type]
    except ValueError as exc:
        abort(422, message=f"{field}: {exc}")
    allowed = AUDIO_MIME_TYPES if kind == "audio" else IMAGE_MIME_TYPES
    if mime not in allowed:
        abort(422, message=f"{field} type {mime} is not allowed")
    return kind, mime


def store_media(
    data: bytes, kind: str, mime: str, *, owner_id: uuid.UUID, note_id: uuid.UUID | None,
    sha256: str | None = None,
) -> Media:
    """Store the file and add its media row; ``sha256``: its digest, if already computed."""
    media_id = uuid.uuid4()
    key = f"{kind}/{media_id}"
    stored = state().storage.save(key, data, mime)
    position = 0
    if note_id is not None:
        position = db().scalar(
            select(func.count()).select_from(Media)
            .where(Media.note_id == note_id, Media.kind == kind)
        ) or 0
    media = Media(
        id=media_id, owner_id=owner_id, note_id=note_id, kind=kind, position=position,
        storage_key=key, url=stored.url, mime_type=mime, size=len(data),
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
    )
    db().add(media)
    return media


def start_transcription(
    media: Media, *, idempotency_key: str | None = None, request_hash: str | None = None,
    force: bool = False, job_args: dict[str, Any] | None = None,
) -> Job:
    """A transcription job for stored audio; ``job_args``: its webhook and deadline."""
    job = create_job(
        db(), owner_id=media.owner_id, kind="transcription",
        input={"mediaId": str(media.id), "noteId": str(media.note_id) if media.note_id else None,
               "mimeType": media.mime_type, "size": media.size, "sha256": media.sha256,
               "force": force},
        idempotency_key=idempotency_key, request_hash=request_hash,
        max_attempts=state().settings.attempts_for("transcription"),
        **(job_args or {}),
    )
    media.transcription_job_id = job.id
    return job
