"""Transcribe a stored audio file; the text lands on the media row (and so on its note)."""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import Table, bindparam, select, update

from models import Media
from workers.app import celery_app
from workers.attempt import JobFailed, JobRun, usage_dict
from workers.cache import cached_result
from workers.runner import run_job

# Core statements built once (the job's hot path: no ORM object, no statement to build).
MEDIA = cast(Table, Media.__table__)
_AUDIO = select(MEDIA.c.storage_key, MEDIA.c.mime_type, MEDIA.c.sha256, MEDIA.c.note_id).where(
    MEDIA.c.id == bindparam("m_id"), MEDIA.c.owner_id == bindparam("m_owner"))
_SET_TRANSCRIPTION = update(MEDIA).where(MEDIA.c.id == bindparam("m_id")).values(
    transcription=bindparam("m_text"))


def estimated_tokens(audio: bytes) -> int:
    """Rough Gemini cost of a voice note before the call: ~32 tokens per second of audio at
    typical voice-note bitrates (~2 KB/s), plus the instruction and the transcript."""
    return len(audio) // 64 + 300


def transcribe_media(run: JobRun) -> None:
    media_id = uuid.UUID(run.job.input["mediaId"])
    media = run.session.execute(_AUDIO, {"m_id": media_id, "m_owner": run.job.owner_id}).first()
    if media is None:
        raise JobFailed("not_found", "the audio file no longer exists")
    run.progress("transcribing", 0, 1, commit=False)  # commits with the cache lease
    transcriber = run.context.provider.transcriber
    storage = run.context.storage

    def transcribe() -> dict[str, object]:
        audio = storage.read(media.storage_key)
        result = run.call_upstream(
            transcriber.model,
            estimated_tokens(audio),
            lambda: transcriber.transcribe(audio, media.mime_type),
        )
        return {"transcription": result.text, "usage": usage_dict(result.usage)}

    # Same bytes, same type, same model and prompt: the same words, whoever uploaded them.
    value, cached = cached_result(
        run, agent="transcription", model=transcriber.model,
        prompt_version=transcriber.prompt_version,
        payload={"sha256": media.sha256, "mimeType": media.mime_type},
        compute=transcribe,
    )
    # No separate cancel check: succeed() refuses a job asked to stop, rolling this back.
    text = str(value["transcription"])
    run.session.execute(_SET_TRANSCRIPTION, {"m_id": media_id, "m_text": text})
    run.succeed(
        {
            "transcription": text,
            "mediaId": str(media_id),
            "noteId": str(media.note_id) if media.note_id else None,
            "cached": cached,
        },
        usage=None if cached else value["usage"],
    )


@celery_app.task(name="lifetales.transcribe_audio", acks_late=True, ignore_result=True)
def transcribe_audio(job_id: str) -> None:
    run_job(job_id, transcribe_media)
