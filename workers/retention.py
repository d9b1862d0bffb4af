"""Retention: finished jobs keep their input and result for a while, raw audio for less; then
beat prunes them, and stored files nothing refers to any more are deleted.

What stays: a pruned job is a tombstone (status, timestamps, error, usage — usage is billing)
with ``data_removed_at`` set and one ``done`` event, so its stream still ends; a note's
transcription outlives its audio; a story's generated images live as long as the story (they
are what the user reads), whatever happens to the jobs that drew them. Generated files (drawn
images, spoken narrations) live while a job result, a cache entry or a domain row refers to them.

Rows are changed first and committed, files deleted after: a failed delete leaves an orphan
file the next sweep retries, never a row pointing at a missing file.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from agents.media.storage import MediaError, MediaStorage
from config import RetentionSettings
from models import (
    TERMINAL_STATUSES,
    CacheEntry,
    Chapter,
    Film,
    Job,
    JobEvent,
    Media,
    Note,
    Story,
    WebhookDelivery,
)
from models.base import utcnow
from workers.events import emit
from workers.lifecycle import affected

log = logging.getLogger(__name__)

BATCH = 500
# A LIKE per key: keep one query's list of them short.
REFERENCE_BATCH = 100
# Folders our stores write (api/media_intake.py: ``<kind>/<media id>``; generated files, see
# GENERATED: ``<folder>/<job id>``). Keys elsewhere are not ours to judge, so never swept.
MEDIA_FOLDERS = ("audio", "image", "video")
ILLUSTRATIONS = "illustrations"
NARRATIONS = "narrations"
FILMS = "films"
NARRATOR_CLIPS = "narrator-clips"
_JOB_ID = "(?P<job>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ILLUSTRATION_KEY = re.compile(rf"{ILLUSTRATIONS}/{_JOB_ID}")
# A film's files: its video, poster and subtitles, keyed by the film job (workers/tasks/render).
_FILM_KEY = re.compile(rf"{FILMS}/{_JOB_ID}/(?:video|poster|subtitles)")
# A narrator clip's poster, keyed by the clip job; the clip itself is a moment's video media
# file, whose media row has the job's id.
_CLIP_POSTER_KEY = re.compile(rf"{NARRATOR_CLIPS}/{_JOB_ID}/poster")


def clip_key(job_id: uuid.UUID) -> str:
    """Where a narrator clip job stores its clip (workers/tasks/narrator_clip): a video media
    file keyed by the job, so a retry overwrites it (its media row has the job's id)."""
    return f"video/{job_id}"


def clip_poster_key(job_id: uuid.UUID) -> str:
    """Where a narrator clip job stores its clip's poster."""
    return f"{NARRATOR_CLIPS}/{job_id}/poster"
# A pending cache lease this long expired belongs to a job that is long gone.
STALE_LEASE = timedelta(hours=1)


@dataclass
class RetentionReport:
    jobs_pruned: int = 0
    audio_removed: int = 0
    cache_entries_purged: int = 0
    orphans_deleted: int = 0
    delete_failures: int = 0


def prune_retention(
    session: Session,
    storage: MediaStorage,
    settings: RetentionSettings,
    *,
    now: datetime | None = None,
    time_budget_s: float = 45.0,
) -> RetentionReport:
    """One beat run: prune old jobs, delete old audio, purge expired cache entries, then sweep
    orphaned files; in batches, stopping early (the next run goes on) past ``time_budget_s``."""
    now = now or utcnow()
    deadline = time.monotonic() + time_budget_s
    report = RetentionReport()
    if settings.job_ttl_s > 0:
        report.jobs_pruned = prune_finished_jobs(
            session, before=now - timedelta(seconds=settings.job_ttl_s), now=now,
            deadline=deadline)
    if settings.audio_ttl_s > 0:
        report.audio_removed = remove_old_audio(
            session, storage, before=now - timedelta(seconds=settings.audio_ttl_s), now=now,
            deadline=deadline, report=report)
    report.cache_entries_purged = purge_expired_cache_entries(session, now=now, deadline=deadline)
    sweep_orphans(session, storage, stored_before=now - timedelta(seconds=settings.orphan_grace_s),
                  now=now, deadline=deadline, report=report)
    if any(asdict(report).values()):
        log.info("retention pruned", extra={"report": asdict(report)})
    return report


def prune_finished_jobs(
    session: Session, *, before: datetime, now: datetime, deadline: float
) -> int:
    """Tombstone jobs finished before ``before``: input, result and progress go, as do their
    events (but a final ``done``) and webhook payloads."""
    parent = aliased(Job)
    # A child waits for its parent: the parent's completion reads its children's inputs.
    parent_unfinished = exists().where(
        parent.id == Job.parent_id, parent.status.not_in(TERMINAL_STATUSES)
    )
    pruned = 0
    while time.monotonic() < deadline:
        rows = session.execute(
            select(Job.id, Job.status, Job.error)
            .where(Job.status.in_(TERMINAL_STATUSES), Job.data_removed_at.is_(None),
                   Job.finished_at < before, ~parent_unfinished)
            .order_by(Job.finished_at)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        # Only the rows this run tombstones (a run overlapping it may take some first).
        ids = set(session.scalars(
            update(Job)
            .where(Job.id.in_([job_id for job_id, _, _ in rows]), Job.data_removed_at.is_(None))
            # updated_at kept as it was: the tombstone keeps the job's own timeline.
            .values(input={}, result=None, progress=None, data_removed_at=now,
                    updated_at=Job.updated_at)
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ))
        session.execute(delete(JobEvent).where(JobEvent.job_id.in_(ids)))
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.job_id.in_(ids), WebhookDelivery.status != "pending")
            .values(payload=None)
        )
        for job_id, status, error in rows:
            if job_id in ids:
                # A stream opened on the tombstone still ends, and says why it carries nothing.
                emit(session, job_id, "done",
                     {"status": status, "result": None, "error": error, "dataRemoved": True})
        session.commit()
        pruned += len(ids)
        if len(rows) < BATCH:
            break
    return pruned


def remove_old_audio(
    session: Session, storage: MediaStorage, *, before: datetime, now: datetime,
    deadline: float, report: RetentionReport,
) -> int:
    """Delete stored audio older than ``before`` whose transcription is no longer running; the
    media row stays (with ``removed_at``) and so does its transcription text."""
    transcribing = exists().where(
        Job.id == Media.transcription_job_id, Job.status.not_in(TERMINAL_STATUSES)
    )
    removed = 0
    while time.monotonic() < deadline:
        rows = session.execute(
            select(Media.id, Media.storage_key)
            .where(Media.kind == "audio", Media.removed_at.is_(None), Media.created_at < before,
                   ~transcribing)
            .order_by(Media.created_at)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        session.execute(
            update(Media).where(Media.id.in_([media_id for media_id, _ in rows]))
            .values(removed_at=now)
        )
        session.commit()
        delete_files(storage, [key for _, key in rows], report, deadline)
        removed += len(rows)
        if len(rows) < BATCH:
            break
    return removed


def purge_expired_cache_entries(session: Session, *, now: datetime, deadline: float) -> int:
    """Drop cache entries past their expiry (reads already ignore them) and long-dead leases."""
    expired = or_(
        (CacheEntry.status == "ready") & (CacheEntry.expires_at < now),
        (CacheEntry.status == "pending") & (CacheEntry.lease_expires_at < now - STALE_LEASE),
    )
    purged = 0
    while time.monotonic() < deadline:
        keys = list(session.scalars(select(CacheEntry.key).where(expired).limit(BATCH)))
        if not keys:
            break
        # Re-checked in the DELETE: an entry refreshed meanwhile stays.
        purged += affected(session, delete(CacheEntry).where(CacheEntry.key.in_(keys), expired))
        session.commit()
        if len(keys) < BATCH:
            break
    return purged


def sweep_orphans(
    session: Session, storage: MediaStorage, *, stored_before: datetime, now: datetime,
    deadline: float, report: RetentionReport,
) -> None:
    """Delete stored files no row refers to (their note, space or story was deleted, or an
    earlier delete failed). Files stored after ``stored_before`` may belong to work that has
    not committed yet: left for a later sweep."""
    for folder in (*MEDIA_FOLDERS, *(generated.folder for generated in GENERATED)):
        batch: list[str] = []
        try:
            for stored in storage.iter_keys(f"{folder}/"):
                if stored.stored_at < stored_before:
                    batch.append(stored.key)
                if len(batch) >= REFERENCE_BATCH:
                    _delete_unreferenced(session, storage, batch, now, deadline, report)
                    batch = []
                if time.monotonic() > deadline:
                    return
        except MediaError as exc:
            log.warning("orphan sweep could not list stored files",
                        extra={"folder": folder, "code": exc.code})
        _delete_unreferenced(session, storage, batch, now, deadline, report)


def _delete_unreferenced(session: Session, storage: MediaStorage, keys: list[str],
                         now: datetime, deadline: float, report: RetentionReport) -> None:
    if not keys:
        return
    live = referenced_keys(session, keys, now=now, include_jobs=True)
    session.rollback()  # end the read transaction before the slow part
    orphans = [key for key in keys if key not in live]
    report.orphans_deleted += delete_files(storage, orphans, report, deadline)


def referenced_keys(
    session: Session, keys: Iterable[str], *, now: datetime, include_jobs: bool
) -> set[str]:
    """The keys among ``keys`` that something still points at: a media row that was not
    removed, a row showing a generated file (a chapter), a live cache entry; with
    ``include_jobs``, also an unfinished job (it may be storing it right now) or a job whose
    result has not been pruned."""
    keys = list(dict.fromkeys(keys))
    media_keys = [k for k in keys if k.split("/", 1)[0] in MEDIA_FOLDERS]
    live: set[str] = set(session.scalars(
        select(Media.storage_key).where(Media.storage_key.in_(media_keys),
                                        Media.removed_at.is_(None))
    )) if media_keys else set()
    judged = set(media_keys)
    for generated in GENERATED:
        made = [k for k in keys if generated.key.fullmatch(k)]
        judged.update(made)
        for start in range(0, len(made), REFERENCE_BATCH):
            batch = made[start:start + REFERENCE_BATCH]
            live.update(_referenced_generated(session, generated, batch, now=now,
                                              include_jobs=include_jobs))
    # Anything else (unknown folders, odd names) counts as referenced: never deleted.
    live.update(k for k in keys if k not in judged)
    return live


def _mentioning(keys: list[str], *columns: Any) -> Any:
    return or_(*(cast(column, String).like(f"%{key}%") for column in columns for key in keys))


def _found_in(rows: Iterable[Any], keys: list[str]) -> set[str]:
    return {key for row in rows for text in row if text for key in keys if key in text}


def shown_in_chapters(session: Session, keys: list[str]) -> set[str]:
    """The drawn images among ``keys`` some chapter shows."""
    return _found_in(session.execute(
        select(Chapter.generated_image_url, cast(Chapter.generated_image_urls, String))
        .where(_mentioning(keys, Chapter.generated_image_url, Chapter.generated_image_urls))
    ), keys)


def shown_in_films(session: Session, keys: list[str]) -> set[str]:
    """The film files among ``keys`` some film shows (a cached film shares another's files)."""
    return _found_in(session.execute(
        select(Film.video_url, Film.poster_url, Film.subtitles_url)
        .where(_mentioning(keys, Film.video_url, Film.poster_url, Film.subtitles_url))
    ), keys)


def shown_with_their_clip(session: Session, keys: list[str]) -> set[str]:
    """The clip posters among ``keys`` whose clip is still a moment's video."""
    by_clip = {uuid.UUID(match.group("job")): key for key in keys
               if (match := _CLIP_POSTER_KEY.fullmatch(key))}
    if not by_clip:
        return set()
    return {by_clip[media_id] for media_id in session.scalars(
        select(Media.id).where(Media.id.in_(by_clip), Media.removed_at.is_(None)))}


def shown_nowhere(session: Session, keys: list[str]) -> set[str]:
    """For generated files no domain row shows (yet): only jobs and the cache keep them."""
    return set()


@dataclass(frozen=True)
class GeneratedFolder:
    """Files the jobs of one kind make, stored as ``<folder>/<job id>[/<name>]`` (``key``, its
    ``job`` group the job), the check of the domain rows that show them (``shown_in``: the keys
    among those given that some row uses), and the cache agent whose entries point at them."""

    folder: str
    job_kind: str
    shown_in: Callable[[Session, list[str]], set[str]]
    key: re.Pattern[str]
    cache_agent: str


# A narration is only the material of a film's render (the film has its own sound): its job's
# result and the cache keep it, nothing else.
GENERATED: tuple[GeneratedFolder, ...] = (
    GeneratedFolder(ILLUSTRATIONS, "illustration", shown_in_chapters, _ILLUSTRATION_KEY,
                    "illustration"),
    GeneratedFolder(NARRATIONS, "narration", shown_nowhere,
                    re.compile(rf"{NARRATIONS}/{_JOB_ID}"), "narration"),
    GeneratedFolder(FILMS, "film", shown_in_films, _FILM_KEY, "film"),
    GeneratedFolder(NARRATOR_CLIPS, "narrator_clip", shown_with_their_clip, _CLIP_POSTER_KEY,
                    "narrator_clip"),
)


def _referenced_generated(session: Session, generated: GeneratedFolder, keys: list[str], *,
                          now: datetime, include_jobs: bool) -> set[str]:
    live = generated.shown_in(session, keys)
    live |= _found_in(session.execute(
        select(cast(CacheEntry.value, String))
        .where(CacheEntry.status == "ready",
               or_(CacheEntry.expires_at.is_(None), CacheEntry.expires_at > now),
               _mentioning(keys, CacheEntry.value))
    ), keys)
    if include_jobs:
        by_job: dict[uuid.UUID, list[str]] = {}
        for key in keys:
            match = generated.key.fullmatch(key)
            if match:
                by_job.setdefault(uuid.UUID(match.group("job")), []).append(key)
        # A film's files are keyed by the film job, which its render works for.
        owners = select(Job.id).where(Job.id.in_(by_job), or_(
            Job.status.not_in(TERMINAL_STATUSES), Job.data_removed_at.is_(None)))
        for job_id in session.scalars(owners):
            live.update(by_job[job_id])
        # A cached result points at the file of the job that made it.
        live |= _found_in(session.execute(
            select(cast(Job.result, String))
            .where(Job.kind == generated.job_kind, Job.data_removed_at.is_(None),
                   _mentioning(keys, Job.result))
        ), keys)
    return live


def delete_files(storage: MediaStorage, keys: Iterable[str], report: RetentionReport,
                 deadline: float | None = None) -> int:
    """Delete each key (after the commit that let go of it); failures, and what is left when
    ``deadline`` passes, stay for the orphan sweep."""
    deleted = 0
    for key in keys:
        if deadline is not None and time.monotonic() > deadline:
            break
        try:
            storage.delete(key)
        except (MediaError, OSError) as exc:
            report.delete_failures += 1
            log.warning("stored file not deleted; the orphan sweep retries",
                        extra={"key": key, "code": getattr(exc, "code", type(exc).__name__)})
            continue
        deleted += 1
    return deleted


# -- deleting a space or a note ----------------------------------------------------------------


def stored_keys_of_space(session: Session, space_id: uuid.UUID) -> list[str]:
    """Keys of every file a space holds: its moments' media, its stories' drawn images and its
    films' files."""
    keys = stored_keys_of_notes(session, select(Note.id).where(Note.space_id == space_id))
    urls = session.execute(
        select(Chapter.generated_image_url, cast(Chapter.generated_image_urls, String))
        .join(Story, Story.id == Chapter.story_id).where(Story.space_id == space_id)
    ).all()
    drawn = {match.group(0) for row in urls for text in row if text
             for match in _ILLUSTRATION_KEY.finditer(text)}
    films = session.execute(select(Film.video_url, Film.poster_url, Film.subtitles_url)
                            .where(Film.space_id == space_id)).all()
    filmed = {match.group(0) for row in films for text in row if text
              for match in _FILM_KEY.finditer(text)}
    return keys + sorted(drawn) + sorted(filmed)


def stored_keys_of_notes(session: Session, note_ids: Any) -> list[str]:
    """Keys of the stored media (audio, photos, videos) of these notes (ids or a select of
    them), with the poster of each video that is a narrator clip."""
    rows = session.execute(
        select(Media.id, Media.kind, Media.storage_key)
        .where(Media.note_id.in_(note_ids), Media.removed_at.is_(None))
    ).all()
    posters = [clip_poster_key(media_id) for media_id, kind, key in rows
               if kind == "video" and key == clip_key(media_id)]
    return [key for _, _, key in rows] + posters


def delete_released_files(session: Session, storage: MediaStorage, keys: list[str]) -> int:
    """After the commit that deleted their rows: delete the files nothing else refers to.

    A drawn image (or a film) may be shared through the cache with another story (film): it
    stays while a chapter (film) shows it. Otherwise its cache entries go with it, so the cache
    never hands out a deleted file nor keeps what was made from deleted moments.
    """
    media = [key for key in keys if key.split("/", 1)[0] in MEDIA_FOLDERS]
    live = referenced_keys(session, media, now=utcnow(), include_jobs=False)
    released = [key for key in media if key not in live]
    for generated in GENERATED:
        made = [key for key in keys if generated.key.fullmatch(key)]
        for start in range(0, len(made), REFERENCE_BATCH):
            batch = made[start:start + REFERENCE_BATCH]
            shown = generated.shown_in(session, batch)
            for key in batch:
                if key in shown:
                    continue
                released.append(key)
                session.execute(delete(CacheEntry).where(
                    CacheEntry.agent == generated.cache_agent,
                    cast(CacheEntry.value, String).like(f"%{key}%")))
    session.commit()
    return delete_files(storage, released, RetentionReport())
