"""``POST /narrator-clips`` and ``narratorClipId`` on films, over the API: validation, ownership,
idempotency, the per-user budget, and the clip on the moment (its ``videoFileIds``) once the
job has run (the offline narrator: no key in these tests)."""

from __future__ import annotations

import dataclasses
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from agents.media.local import LocalMediaStorage
from agents.media.storage import MediaError
from api import create_app
from config import RateLimitSettings, Settings
from models import Chapter, Job, Media, Space, Story
from models.base import utcnow
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space, register
from tests.test_api_media import png_bytes
from workers.context import WorkerContext
from workers.runner import run_job
from workers.tasks.narrator_clip import make_clip

SCRIPT = "Hi! Welcome to our little film about the Douro."


def upload_photo(client: FlaskClient, auth: dict[str, str], space: str, note: str) -> str:
    response = client.post(f"/api/v1/spaces/{space}/notes/{note}/media", headers=auth,
                           data={"file": (io.BytesIO(png_bytes()), "me.png", "image/png")})
    assert response.status_code == 201, response.get_json()
    photo: str = response.get_json()["id"]
    return photo


@pytest.fixture
def moment(client: FlaskClient, auth: dict[str, str]) -> dict[str, str]:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    return {"space": space["id"], "note": note["id"],
            "photo": upload_photo(client, auth, space["id"], note["id"])}


def submit(client: FlaskClient, auth: dict[str, str], **body: Any) -> Any:
    return client.post("/api/v1/narrator-clips", headers=auth, json={"script": SCRIPT, **body})


def test_a_clip_of_a_moments_photo_is_a_job(
        client: FlaskClient, auth: dict[str, str], moment: dict[str, str]) -> None:
    response = submit(client, auth, mediaId=moment["photo"], durationSeconds=6,
                      aspectRatio="9:16")
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "narrator_clip" and job["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["input"] == {"mediaId": moment["photo"], "script": SCRIPT, "durationSeconds": 6,
                            "aspectRatio": "9:16", "noteId": moment["note"]}
    assert job["upstreamOperation"] is None  # nothing started upstream yet


def test_defaults_and_idempotency(
        client: FlaskClient, auth: dict[str, str], moment: dict[str, str]) -> None:
    headers = {**auth, "Idempotency-Key": "clip-1"}
    first = client.post("/api/v1/narrator-clips", headers=headers,
                        json={"mediaId": moment["photo"], "script": SCRIPT})
    again = client.post("/api/v1/narrator-clips", headers=headers,
                        json={"mediaId": moment["photo"], "script": SCRIPT})
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert first.get_json()["input"]["durationSeconds"] == 8  # the frontend's clip
    assert first.get_json()["input"]["aspectRatio"] == "16:9"
    other = client.post("/api/v1/narrator-clips", headers=headers,
                        json={"mediaId": moment["photo"], "script": "Something else"})
    assert_error(other, 422, "Idempotency-Key")


def test_an_uploaded_photo_joins_the_moment(
        client: FlaskClient, auth: dict[str, str], moment: dict[str, str]) -> None:
    response = client.post("/api/v1/narrator-clips", headers=auth, data={
        "file": (io.BytesIO(png_bytes()), "me.png", "image/png"), "script": SCRIPT,
        "noteId": moment["note"], "durationSeconds": "4", "webhookEvents": ""})
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    note = client.get(f"/api/v1/spaces/{moment['space']}/notes/{moment['note']}",
                      headers=auth).get_json()
    assert job["input"]["mediaId"] in note["imageFileIds"]
    assert job["input"]["noteId"] == moment["note"] and job["input"]["durationSeconds"] == 4
    # Without a moment the photo and the clip stand alone.
    alone = client.post("/api/v1/narrator-clips", headers=auth, data={
        "file": (io.BytesIO(png_bytes()), "me.png", "image/png"), "script": SCRIPT})
    assert alone.status_code == 202 and alone.get_json()["input"]["noteId"] is None


@pytest.mark.parametrize(("body", "fragment"), [
    ({"script": ""}, "script"),
    ({"script": "x" * 1001}, "script"),
    ({"durationSeconds": 11}, "3 to 10 s"),
    ({"durationSeconds": 2}, "3 to 10 s"),
    ({"durationSeconds": "8"}, "durationSeconds"),
    ({"aspectRatio": "1:1"}, "aspectRatio"),
    ({"mediaId": None}, "mediaId"),
])
def test_invalid_requests_are_422_naming_the_field(
        client: FlaskClient, auth: dict[str, str], moment: dict[str, str],
        body: dict[str, Any], fragment: str) -> None:
    response = submit(client, auth, **{"mediaId": moment["photo"], **body})
    error = assert_error(response, 422)
    assert fragment in str(error), error


def test_only_the_users_own_photos(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
        moment: dict[str, str], session: Session) -> None:
    before = session.query(Job).count()
    assert_error(submit(client, other_auth, mediaId=moment["photo"]), 404, "photo not found")
    assert_error(submit(client, auth, mediaId=str(uuid.uuid4())), 404, "photo not found")
    # A's audio file is no photo.
    audio = client.post(f"/api/v1/spaces/{moment['space']}/notes/{moment['note']}/media",
                        headers=auth,
                        data={"file": (io.BytesIO(wav_tone(0.1)), "a.wav", "audio/wav")})
    before = session.query(Job).count()
    assert_error(submit(client, auth, mediaId=audio.get_json()["id"]), 404, "photo not found")
    # Nor B's upload onto A's moment.
    response = client.post("/api/v1/narrator-clips", headers=other_auth, data={
        "file": (io.BytesIO(png_bytes()), "me.png", "image/png"), "script": SCRIPT,
        "noteId": moment["note"]})
    assert_error(response, 404, "not found")
    assert session.query(Job).count() == before


def test_an_upload_must_be_a_photo(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/narrator-clips", headers=auth, data={
        "file": (io.BytesIO(wav_tone(0.1)), "a.wav", "audio/wav"), "script": SCRIPT})
    assert_error(response, 422, "not a photo")
    assert_error(client.post("/api/v1/narrator-clips", headers=auth, data={"script": SCRIPT},
                             content_type="multipart/form-data"), 422, "file")
    assert_error(client.post("/api/v1/narrator-clips", headers=auth, data="x",
                             content_type="text/plain"), 415)


def test_narrator_clips_have_their_own_daily_budget(
        settings: Settings, session_factory: sessionmaker[Session]) -> None:
    limits = dataclasses.replace(RateLimitSettings(), narrator_clip="2/day")
    app = create_app(dataclasses.replace(settings, rate_limits=limits, redis_url=None),
                     session_factory=session_factory)
    app.testing = True
    client = app.test_client()
    auth = register(client)
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    photo = upload_photo(client, auth, space["id"], note["id"])
    assert_error(submit(client, auth, mediaId=photo, durationSeconds=99), 422)  # costs nothing
    for _ in range(2):
        assert submit(client, auth, mediaId=photo).status_code == 202
    refused = submit(client, auth, mediaId=photo)
    assert_error(refused, 429, "at most 2/day narrator clips per user")
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.fixture
def worker(app: Flask, settings: Settings, session_factory: sessionmaker[Session],
           tmp_path: Path) -> WorkerContext:
    """A worker on the app's database and media (the offline provider: no key)."""
    from agents.provider import build_provider

    storage = app.extensions["lifetales"].storage
    assert isinstance(storage, LocalMediaStorage)
    return WorkerContext(settings=settings, engine=None,  # type: ignore[arg-type]
                         session_factory=session_factory,
                         provider=build_provider(settings.agents), storage=storage)


def ready_story(session: Session, space_id: str) -> None:
    """A finished one-chapter story, the space's current one (what a film is made of)."""
    session.add(Story(space_id=uuid.UUID(space_id), version=1, job_id=uuid.uuid4(),
                      status="ready", settings={}, generated_at=utcnow(),
                      chapters=[Chapter(position=0, title="One", content="We walked.",
                                        user_image_ids=[])]))
    session.execute(update(Space).where(Space.id == uuid.UUID(space_id))
                    .values(current_story_version=1))
    session.commit()


def test_the_finished_clip_is_on_the_moment_and_opens_a_film(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
        moment: dict[str, str], worker: WorkerContext, session: Session) -> None:
    job = submit(client, auth, mediaId=moment["photo"], durationSeconds=3).get_json()
    ready_story(session, moment["space"])
    # Not finished yet: no film opens with it.
    film_url = f"/api/v1/spaces/{moment['space']}/film"
    assert_error(client.post(film_url, headers=auth, json={"narratorClipId": job["id"]}),
                 422, "narratorClipId")

    run_job(job["id"], make_clip, context=worker)
    done = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()
    assert done["status"] == "succeeded", done
    assert set(done["result"]) >= {"videoUrl", "posterUrl", "durationSeconds", "width",
                                   "height", "hasAudio"}
    note = client.get(f"/api/v1/spaces/{moment['space']}/notes/{moment['note']}",
                      headers=auth).get_json()
    assert note["videoFileIds"] == [done["result"]["mediaId"]]
    video = next(m for m in note["media"] if m["kind"] == "video")
    assert video["mimeType"] == "video/mp4" and video["url"] == done["result"]["videoUrl"]
    served = client.get(done["result"]["videoUrl"].removeprefix("http://localhost"))
    assert served.status_code == 200 and served.data[4:8] == b"ftyp"

    film = client.post(film_url, headers=auth, json={"narratorClipId": job["id"]})
    assert film.status_code == 202, film.get_json()
    film_input = film.get_json()["input"]
    assert film_input["narratorClipId"] == job["id"]
    assert film_input["introClipKey"] == f"video/{job['id']}"
    clip = session.get(Media, uuid.UUID(job["id"]))
    assert clip is not None and film_input["introClipSha256"] == clip.sha256
    # Someone else's clip, or any other job, is not found.
    b_space = make_space(client, other_auth)
    ready_story(session, b_space["id"])
    assert_error(client.post(f"/api/v1/spaces/{b_space['id']}/film", headers=other_auth,
                             json={"narratorClipId": job["id"]}), 404, "not found")
    assert_error(client.post(film_url, headers=auth, json={"narratorClipId": film.get_json()[
        "id"]}), 404, "narrator clip not found")



def test_a_clips_poster_lives_as_long_as_its_clip(
        client: FlaskClient, auth: dict[str, str], moment: dict[str, str],
        worker: WorkerContext, session: Session) -> None:
    from config import RetentionSettings
    from workers.retention import prune_retention

    job = submit(client, auth, mediaId=moment["photo"], durationSeconds=3).get_json()
    run_job(job["id"], make_clip, context=worker)
    result = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()["result"]
    storage = worker.storage
    assert isinstance(storage, LocalMediaStorage)
    files = [storage.media_dir / url.split("/media/", 1)[1]
             for url in (result["videoUrl"], result["posterUrl"])]
    assert all(f.is_file() for f in files)
    # The sweep (no grace) keeps both while the clip is the moment's video, even once the
    # job's own result is gone; a poster whose clip is gone is swept.
    stray = storage.save(f"narrator-clips/{uuid.uuid4()}/poster", b"\xff\xd8", "image/jpeg")
    session.execute(update(Job).where(Job.id == uuid.UUID(job["id"]))
                    .values(result=None, data_removed_at=utcnow()))
    session.commit()
    report = prune_retention(session, storage, RetentionSettings(orphan_grace_s=0))
    assert all(f.is_file() for f in files)
    assert report.orphans_deleted == 1
    with pytest.raises(MediaError):
        storage.read(stray.public_id)
    # Deleting the moment deletes the clip and its poster.
    deleted = client.delete(f"/api/v1/spaces/{moment['space']}/notes/{moment['note']}",
                            headers=auth)
    assert deleted.status_code == 204
    assert not any(f.exists() for f in files)
