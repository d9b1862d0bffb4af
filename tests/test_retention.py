"""Retention with short TTLs: finished jobs become tombstones (``dataRemoved``), old raw audio is
deleted while its transcription stays, expired cache entries are purged, and stored files no row
refers to any more — on local disk and on (fake) Cloudinary — are deleted; deleting a space or a
moment deletes its files. A story's drawn images live as long as the story."""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agents.media.cloudinary_store import CloudinaryMediaStorage
from agents.media.local import LocalMediaStorage
from agents.media.storage import MediaStorage
from api.state import state
from config import RetentionSettings, Settings
from models import CacheEntry, Job, JobEvent, Media
from models.base import utcnow
from tests.audio import wav_tone
from tests.conftest import make_note, make_space
from tests.fakes.cloudinary_server import FakeCloudinary
from tests.fakes.gemini_server import FakeGemini
from tests.test_worker_jobs import ctx, gemini  # noqa: F401 - shared fixtures, not redefined
from workers.context import WorkerContext, set_context
from workers.job_mirror import touch
from workers.retention import RetentionReport, prune_retention
from workers.runner import run_job
from workers.tasks.illustration import illustrate
from workers.tasks.story import build_story
from workers.tasks.transcription import transcribe_media

TTL = RetentionSettings(job_ttl_s=60, audio_ttl_s=30, orphan_grace_s=0)


def prune(session: Session, storage: MediaStorage, settings: RetentionSettings = TTL
          ) -> RetentionReport:
    report = prune_retention(session, storage, settings)
    session.expire_all()
    return report


def age_jobs(session: Session, seconds: float, *ids: str) -> None:
    """Make jobs look finished ``seconds`` ago (all finished ones if no ids)."""
    statement = update(Job).where(Job.finished_at.is_not(None))
    if ids:
        statement = statement.where(Job.id.in_([uuid.UUID(i) for i in ids]))
    aged = session.scalars(statement.values(finished_at=utcnow() - timedelta(seconds=seconds))
                           .returning(Job.id))
    for job_id in aged:
        touch(session, job_id)  # as any write a client can see: its document in Redis follows
    session.commit()


def expire_cache(session: Session) -> None:
    session.execute(update(CacheEntry).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()


def file_of(media_dir: Path, url: str) -> Path:
    return media_dir / url.split("/media/", 1)[1]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "teal").save(buffer, "PNG")
    return buffer.getvalue()


def upload(client: FlaskClient, auth: dict[str, str], space: str, note: str, data: bytes,
           name: str, mime: str) -> dict[str, Any]:
    response = client.post(f"/api/v1/spaces/{space}/notes/{note}/media", headers=auth,
                           data={"file": (io.BytesIO(data), name, mime)})
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def get_job(client: FlaskClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


@pytest.fixture
def media_dir(settings: Settings) -> Path:
    return settings.media_dir


def test_finished_jobs_become_tombstones_after_the_ttl(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    media_dir: Path,
) -> None:
    old = client.post("/api/v1/illustrations", json={"prompt": "a lighthouse"},
                      headers=auth).get_json()
    recent = client.post("/api/v1/illustrations", json={"prompt": "a harbour"},
                         headers=auth).get_json()
    for job in (old, recent):
        run_job(job["id"], illustrate, context=ctx)
    age_jobs(session, 120, old["id"])
    before = get_job(client, auth, old["id"])
    assert before["dataRemoved"] is False and before["result"]["imageUrl"]
    image = file_of(media_dir, before["result"]["imageUrl"])
    assert image.is_file()

    report = prune(session, ctx.storage)
    assert report.jobs_pruned == 1

    after = get_job(client, auth, old["id"])
    assert after["dataRemoved"] is True
    assert after["input"] == {} and after["result"] is None and after["progress"] is None
    # The tombstone: status, timestamps, usage (billing) and error are kept as they were.
    for key in ("id", "kind", "status", "attempts", "usage", "error", "createdAt", "startedAt",
                "finishedAt", "updatedAt"):
        assert after[key] == before[key], key
    assert after["status"] == "succeeded" and after["usage"]["outputTokens"] > 0
    kept = get_job(client, auth, recent["id"])
    assert kept["dataRemoved"] is False and kept["result"]["imageUrl"]
    # Its event log is gone but for a final ``done`` that says why: a stream still ends.
    events = session.scalars(select(JobEvent).where(JobEvent.job_id == uuid.UUID(old["id"])))
    assert [(e.type, e.data) for e in events] == [
        ("done", {"status": "succeeded", "result": None, "error": None, "dataRemoved": True})]
    stream = client.get(f"/api/v1/jobs/{old['id']}/events", headers=auth).get_data(as_text=True)
    assert "event: done" in stream and '"dataRemoved":true' in stream

    # The drawing is still what the live illustration cache hands out: kept...
    assert image.is_file()
    # ...until the cache entry expires; then the entry is purged and the orphan deleted.
    expire_cache(session)
    report = prune(session, ctx.storage)
    assert report.cache_entries_purged == 2 and report.orphans_deleted == 1
    assert not image.is_file()
    assert file_of(media_dir, kept["result"]["imageUrl"]).is_file()  # its job still holds it
    assert session.scalars(select(CacheEntry)).all() == []
    # A second run finds nothing left to do.
    assert prune(session, ctx.storage) == RetentionReport()


def test_a_story_keeps_its_images_after_its_jobs_are_pruned_until_the_space_is_deleted(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    media_dir: Path,
) -> None:
    space = make_space(client, auth)["id"]
    notes = [make_note(client, auth, space, title=f"Day {i}", timestamp=1000 + i)["id"]
             for i in range(2)]
    voice = upload(client, auth, space, notes[0], wav_tone(0.1), "v.wav", "audio/wav")
    photo = upload(client, auth, space, notes[1], png(), "p.png", "image/png")
    job = client.post(f"/api/v1/spaces/{space}/story", json={}, headers=auth).get_json()
    run_job(job["id"], build_story, context=ctx)
    for child in session.scalars(select(Job).where(Job.parent_id == uuid.UUID(job["id"]))):
        run_job(str(child.id), illustrate, context=ctx)
    assert get_job(client, auth, job["id"])["status"] == "succeeded"
    story = client.get(f"/api/v1/spaces/{space}/story", headers=auth).get_json()
    drawn = [file_of(media_dir, c["generatedImageUrl"]) for c in story["chapters"]
             if c["generatedImageUrl"]]
    assert len(drawn) == 1 and drawn[0].is_file()  # the photo's chapter shows the photo

    age_jobs(session, 120)
    expire_cache(session)
    report = prune(session, ctx.storage)
    assert report.jobs_pruned >= 2  # the story and its illustration (and the transcription)
    assert get_job(client, auth, job["id"])["dataRemoved"] is True
    # The chapters are the story the user reads: their drawing stays.
    assert drawn[0].is_file()
    assert client.get(f"/api/v1/spaces/{space}/story", headers=auth).get_json() == story

    stored = [file_of(media_dir, m["url"]) for m in (voice, photo)] + drawn
    assert all(path.is_file() for path in stored)
    assert client.delete(f"/api/v1/spaces/{space}", headers=auth).status_code == 204
    assert not any(path.exists() for path in stored)


def test_old_audio_is_deleted_and_its_transcription_kept(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    gemini: FakeGemini, media_dir: Path,  # noqa: F811
) -> None:
    space = make_space(client, auth)["id"]
    note = make_note(client, auth, space)["id"]
    old = upload(client, auth, space, note, wav_tone(0.1, frequency=300), "a.wav", "audio/wav")
    transcribing = upload(client, auth, space, note, wav_tone(0.1, frequency=500), "b.wav",
                          "audio/wav")
    recent = upload(client, auth, space, note, wav_tone(0.1, frequency=700), "c.wav",
                    "audio/wav")
    photo = upload(client, auth, space, note, png(), "p.png", "image/png")
    for media in (old, recent):
        run_job(media["transcriptionJob"]["id"], transcribe_media, context=ctx)
    long_ago = utcnow() - timedelta(minutes=5)
    ids = [uuid.UUID(m["id"]) for m in (old, transcribing, photo)]
    session.execute(update(Media).where(Media.id.in_(ids)).values(created_at=long_ago))
    session.commit()

    report = prune(session, ctx.storage)
    assert report.audio_removed == 1 and report.delete_failures == 0
    assert not file_of(media_dir, old["url"]).exists()
    # Still being transcribed, too recent, or not audio: kept.
    for media in (transcribing, recent, photo):
        assert file_of(media_dir, media["url"]).is_file()
    row = session.get(Media, uuid.UUID(old["id"]))
    assert row is not None and row.removed_at is not None
    shown = client.get(f"/api/v1/spaces/{space}/notes/{note}", headers=auth).get_json()
    assert shown["transcriptions"][0] == gemini.transcription_text
    # The resource says the file is gone (its url no longer answers); the others still there.
    removed = {m["id"]: m["removedAt"] for m in shown["media"]}
    assert removed[old["id"]] is not None
    assert all(removed[m["id"]] is None for m in (transcribing, recent, photo))


def test_deleting_a_moment_deletes_its_files_only(
    client: FlaskClient, auth: dict[str, str], media_dir: Path
) -> None:
    space = make_space(client, auth)["id"]
    gone, stays = (make_note(client, auth, space)["id"] for _ in range(2))
    files = [upload(client, auth, space, gone, wav_tone(0.1), "a.wav", "audio/wav"),
             upload(client, auth, space, gone, png(), "p.png", "image/png")]
    other = upload(client, auth, space, stays, png(), "q.png", "image/png")
    assert client.delete(f"/api/v1/spaces/{space}/notes/{gone}", headers=auth).status_code == 204
    assert not any(file_of(media_dir, m["url"]).exists() for m in files)
    assert file_of(media_dir, other["url"]).is_file()


def test_a_drawing_shared_through_the_cache_outlives_the_space_that_drew_it(
    client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str], session: Session,
    ctx: WorkerContext, media_dir: Path,  # noqa: F811
) -> None:
    """The illustration cache is shared: B's identical chapter shows the file A's job drew."""
    spaces, prompts = [], []
    for headers in (auth, other_auth):
        space = make_space(client, headers)["id"]
        make_note(client, headers, space, title="Day 1", timestamp=1000)
        job = client.post(f"/api/v1/spaces/{space}/story", json={}, headers=headers).get_json()
        run_job(job["id"], build_story, context=ctx)
        [child] = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(job["id"])))
        # B's chapter asks for exactly A's picture: the cache answers with A's file.
        prompts.append(child.input["prompt"])
        session.execute(update(Job).where(Job.id == child.id)
                        .values(input={**child.input, "prompt": prompts[0]}))
        session.commit()
        run_job(str(child.id), illustrate, context=ctx)
        spaces.append(space)
    urls = [client.get(f"/api/v1/spaces/{s}/story", headers=h).get_json()["chapters"][0]
            ["generatedImageUrl"] for s, h in zip(spaces, (auth, other_auth), strict=True)]
    assert urls[0] == urls[1]
    shared = file_of(media_dir, urls[0])

    assert client.delete(f"/api/v1/spaces/{spaces[0]}", headers=auth).status_code == 204
    assert shared.is_file()  # B's chapter shows it
    age_jobs(session, 120)
    expire_cache(session)
    prune(session, ctx.storage)
    assert shared.is_file()
    assert client.delete(f"/api/v1/spaces/{spaces[1]}", headers=other_auth).status_code == 204
    assert not shared.exists()


def test_the_sweep_spares_young_files_and_files_of_unknown_folders(
    session: Session, tmp_path: Path
) -> None:
    storage = LocalMediaStorage(tmp_path / "m", "http://x/media")
    young = storage.save(f"image/{uuid.uuid4()}", png(), "image/png")
    foreign = storage.save("exports/report", b"%PDF", "application/octet-stream")
    assert prune(session, storage, dataclasses.replace(TTL, orphan_grace_s=3600)) \
        == RetentionReport()
    assert storage.read(young.public_id) and storage.read(foreign.public_id)
    report = prune(session, storage)
    assert report.orphans_deleted == 1
    assert storage.read(foreign.public_id)


# -- Cloudinary ------------------------------------------------------------------------------


@pytest.fixture
def cloudinary() -> Iterator[FakeCloudinary]:
    with FakeCloudinary() as server:
        yield server


@pytest.fixture
def cloud_app(app: Flask, cloudinary: FakeCloudinary) -> CloudinaryMediaStorage:
    """The API storing on the fake Cloudinary."""
    storage = CloudinaryMediaStorage(cloudinary.cloudinary_url, timeout_s=2.0)
    storage.list_page_size = 2  # a few assets span several listing pages
    with app.app_context():
        state().storage = storage
    return storage


def test_cloudinary_files_of_deleted_rows_are_deleted_and_failures_retried(
    client: FlaskClient, auth: dict[str, str], session: Session,
    cloud_app: CloudinaryMediaStorage, cloudinary: FakeCloudinary,
) -> None:
    space = make_space(client, auth)["id"]
    note = make_note(client, auth, space)["id"]
    kept = [upload(client, auth, space, note, png(), f"{i}.png", "image/png")
            for i in range(3)]
    voice = upload(client, auth, space, note, wav_tone(0.1), "a.wav", "audio/wav")
    gone = make_note(client, auth, space)["id"]
    doomed = [upload(client, auth, space, gone, png(), f"d{i}.png", "image/png")
              for i in range(2)]
    ids = [f"image/{m['id']}" for m in doomed]
    assert all(cloudinary.asset(i) for i in ids)

    cloudinary.fail_next(1, status=500)  # the first destroy after the delete commits fails
    assert client.delete(f"/api/v1/spaces/{space}/notes/{gone}", headers=auth).status_code \
        == 204
    assert [bool(cloudinary.asset(i)) for i in ids] == [True, False]

    report = prune(session, cloud_app)
    assert report.orphans_deleted == 1 and report.delete_failures == 0
    assert not any(cloudinary.asset(i) for i in ids)
    assert all(cloudinary.asset(f"image/{m['id']}") for m in kept)
    assert cloudinary.asset(f"audio/{voice['id']}", "video")
    listed = [p for m, p in cloudinary.requests if m == "GET" and "/resources/image/upload" in p]
    assert len(listed) >= 2  # paged


def test_settings_read_retention_from_the_environment() -> None:
    settings = RetentionSettings.from_env({
        "JOB_RETENTION_DAYS": "10", "AUDIO_RETENTION_SECONDS": "90",
        "RETENTION_INTERVAL_SECONDS": "30", "MEDIA_ORPHAN_GRACE_SECONDS": "5"})
    assert settings == RetentionSettings(job_ttl_s=10 * 86400, audio_ttl_s=90, interval_s=30,
                                         orphan_grace_s=5)
    assert RetentionSettings.from_env({}) == RetentionSettings(
        job_ttl_s=30 * 86400, audio_ttl_s=7 * 86400, interval_s=3600, orphan_grace_s=3600)
    assert Settings.from_env({"JOB_RETENTION_SECONDS": "0"}).retention.job_ttl_s == 0


def test_beat_runs_the_pruning_task_on_the_maintenance_queue(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
) -> None:
    import celeryconfig
    from workers.tasks.maintenance import prune_retention_task

    entry: dict[str, Any] = celeryconfig.beat_schedule["prune-retention"]
    assert entry["task"] == "lifetales.prune_retention"
    assert entry["options"]["queue"] == "maintenance"
    assert celeryconfig.task_routes["lifetales.prune_retention"]["queue"] == "maintenance"

    job = client.post("/api/v1/illustrations", json={"prompt": "a dune"}, headers=auth).get_json()
    run_job(job["id"], illustrate, context=ctx)
    age_jobs(session, 120, job["id"])
    set_context(dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings,
                                                                      retention=TTL)))
    try:
        prune_retention_task.run()
    finally:
        set_context(None)
    assert get_job(client, auth, job["id"])["dataRemoved"] is True
