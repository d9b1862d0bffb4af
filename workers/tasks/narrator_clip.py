"""Make a narrator clip (the ``video`` queue): start its video generation once, wait for it off
any worker thread (the job re-schedules itself, polling at a growing interval), then store the
clip on the moment as a video, with a poster frame.

Each attempt does one short thing: start the operation (written on the job before anything
waits on it), or look at it once, or fetch and store the finished clip. A worker killed at any
point leaves a job that the next attempt resumes from its record (``workers.upstream_ops``):
it polls the same operation and never starts a second one.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import telemetry
from agents.errors import AgentError
from agents.narrator import ClipFailed, ClipPending, ClipRequest, GeneratedClip, StartedClip
from agents.provider import ClipMaker
from models import Media, Note
from workers import upstream_ops
from workers.app import celery_app
from workers.attempt import JobFailed, JobRun
from workers.retention import clip_key, clip_poster_key
from workers.runner import run_job

KIND = "narrator_clip"
# What a start weighs in the global rate limit: the photo (~1,300 tokens) and the prompt.
START_TOKENS = 2000


def clip_request(run: JobRun) -> ClipRequest:
    spec = run.job.input
    photo = run.session.get(Media, uuid.UUID(spec["mediaId"]))
    if photo is None or photo.owner_id != run.job.owner_id or photo.removed_at is not None:
        raise JobFailed("not_found", "the photo no longer exists")
    return ClipRequest(image=run.context.storage.read(photo.storage_key),
                       image_mime=photo.mime_type, script=spec["script"],
                       duration_seconds=int(spec["durationSeconds"]),
                       aspect_ratio=spec["aspectRatio"])


def start_clip(run: JobRun, narrator: ClipMaker, workdir: Path) -> GeneratedClip:
    """Start the generation; a clip made locally (offline) comes back at once, otherwise the
    job waits for the operation (``MustWait``)."""
    request = clip_request(run)
    run.acquire_upstream(narrator.model, START_TOKENS)
    offline = run.context.provider.mode == "offline"
    if not offline:
        upstream_ops.mark_starting(run, narrator.model)
    try:
        started = narrator.start(request, workdir)
    except AgentError as exc:
        if not offline:
            upstream_ops.record_state(run, "unconfirmed" if exc.code == upstream_ops.UNCONFIRMED
                                      else "not_started")
        raise
    if isinstance(started, GeneratedClip):
        telemetry.model_call_finished(KIND, started.usage.model, started.usage)
        return started
    telemetry.model_call_answered(KIND, started.model)
    settings = run.context.settings.narrator
    upstream_ops.record_started(run, started.operation_id, started.model, settings.estimate_s)
    raise upstream_ops.wait_again(0.0, settings.poll_min_s, settings.estimate_s)


def follow_clip(run: JobRun, narrator: ClipMaker, workdir: Path) -> GeneratedClip:
    """Look at the running operation once: wait again, fail, or fetch the finished clip."""
    run.check_cancel()
    record = upstream_ops.operation(run.job) or {}
    status = narrator.poll(StartedClip(str(record["id"]), str(record["model"])))
    if isinstance(status, ClipPending):
        settings = run.context.settings.narrator
        waited = upstream_ops.waited_s(run.job)
        if waited > settings.max_wait_s:
            raise JobFailed("upstream_timeout", f"The video generation took longer than "
                            f"{settings.max_wait_s} s; it is no longer waited for.")
        delay = upstream_ops.poll_delay(waited, minimum=settings.poll_min_s,
                                        maximum=settings.poll_max_s, growth=settings.poll_growth,
                                        estimate=settings.estimate_s)
        raise upstream_ops.wait_again(waited, delay, settings.estimate_s)
    if isinstance(status, ClipFailed):
        upstream_ops.record_state(run, "failed")  # a retry may start another
        raise status.error
    if record.get("state") != "succeeded":
        upstream_ops.record_state(run, "succeeded")  # done and billed: never started again
    return narrator.fetch(status, workdir)


def store_clip(run: JobRun, clip: GeneratedClip) -> dict[str, Any]:
    """Store the clip and its poster, and add the clip to the moment as a video (in the
    transaction that finishes the job)."""
    session, job, storage = run.session, run.job, run.context.storage
    data = clip.video.read_bytes()
    stored = storage.save(clip_key(job.id), data, clip.mime_type)
    poster = storage.save(clip_poster_key(job.id), clip.poster.read_bytes(), "image/jpeg")
    note_id = job.input.get("noteId")
    if note_id is not None and session.get(Note, uuid.UUID(note_id)) is None:
        note_id = None  # the moment was deleted meanwhile: the clip stands alone
    media = session.get(Media, job.id)
    if media is None:
        position = session.scalar(select(func.count()).select_from(Media).where(
            Media.note_id == uuid.UUID(note_id), Media.kind == "video")) if note_id else 0
        media = Media(id=job.id, owner_id=job.owner_id, kind="video", position=position or 0)
        session.add(media)
    media.note_id = uuid.UUID(note_id) if note_id else None
    media.storage_key, media.url = clip_key(job.id), stored.url
    media.mime_type, media.size = clip.mime_type, len(data)
    media.sha256 = hashlib.sha256(data).hexdigest()
    return {"videoUrl": stored.url, "posterUrl": poster.url,
            "durationSeconds": clip.duration_seconds, "width": clip.width,
            "height": clip.height, "hasAudio": clip.has_audio,
            "mediaId": str(media.id), "noteId": note_id, "model": clip.usage.model}


def make_clip(run: JobRun) -> None:
    narrator = run.context.provider.clip_maker
    workdir = Path(tempfile.mkdtemp(prefix=f"lifetales-clip-{run.job.id}-"))
    try:
        followed = not upstream_ops.may_start(run.job)
        clip = (follow_clip if followed else start_clip)(run, narrator, workdir)
        run.check_cancel()
        result = store_clip(run, clip)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.succeed(result, usage=clip.usage)
    if followed:  # what the operation made, counted once the job has it
        telemetry.record_model_usage(KIND, clip.usage)


@celery_app.task(name="lifetales.make_narrator_clip", acks_late=True, ignore_result=True)
def make_narrator_clip(job_id: str) -> None:
    run_job(job_id, make_clip)
