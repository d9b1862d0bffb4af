"""The whole flow a frontend developer runs, against the platform started as ``make run`` does:
register, a space, three moments (one with a voice note), its transcription, the illustrated
story, and every generated image fetched back.

On PostgreSQL + Redis and on PostgreSQL + RabbitMQ (Redis then holds the shared state only),
with the real google-genai and cloudinary SDKs talking to local fake servers; and on the
embedded default (SQLite, SQLAlchemy broker, offline provider, local media).
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from PIL import Image

from tests.audio import spoken_audio
from tests.conftest import REDIS_BASE, create_database, drop_database
from tests.fakes.cloudinary_server import FakeCloudinary
from tests.fakes.gemini_server import FakeGemini
from tests.platform import Client, Platform
from tests.rabbitmq import delete_platform_queues

pytestmark = pytest.mark.integration


def run_story_flow(client: Client, voice_note: bytes) -> dict[str, Any]:
    client.register(f"e2e-{uuid.uuid4().hex[:8]}@example.com")
    space = client.call("POST", "/spaces", json={"title": "Porto weekend"}, expect=201).json()
    notes = [
        client.call(
            "POST",
            f"/spaces/{space['id']}/notes",
            expect=201,
            json={"title": title, "textContent": text, "timestamp": ts},
        ).json()
        for title, text, ts in (
            ("Arrival", "We landed at dawn and walked along the river.", 1_700_000_000_000),
            ("Market", "Fresh sardines and custard tarts at the market.", 1_700_040_000_000),
            ("Sunset", None, 1_700_090_000_000),
        )
    ]
    upload = client.call(
        "POST",
        f"/spaces/{space['id']}/notes/{notes[2]['id']}/media",
        expect=201,
        files={"file": ("sunset.webm", voice_note, "audio/webm;codecs=opus")},
    ).json()
    assert upload["kind"] == "audio" and upload["transcriptionJob"]["status"] in {
        "queued",
        "running",
        "succeeded",
    }
    transcription = client.wait_job(upload["transcriptionJob"]["id"])
    assert transcription["status"] == "succeeded", transcription
    text = transcription["result"]["transcription"]
    assert text

    note = client.call("GET", f"/spaces/{space['id']}/notes/{notes[2]['id']}").json()
    assert note["audioFileIds"] == [upload["id"]]
    assert note["transcriptions"] == [text]

    submitted = client.call("POST", f"/spaces/{space['id']}/story", json={}, expect=202)
    assert submitted.headers["Location"] == f"/api/v1/jobs/{submitted.json()['id']}"
    assert int(submitted.headers["Retry-After"]) >= 1
    story_job = client.wait_job(submitted.json()["id"], timeout=90)
    assert story_job["status"] == "succeeded", story_job
    assert story_job["progress"]["step"] == "done"
    assert story_job["result"]["illustrations"]["succeeded"] == 3

    story = client.call("GET", f"/spaces/{space['id']}/story").json()
    assert story["version"] == 1 and story["status"] == "ready"
    chapters = story["chapters"]
    assert [c["sourceNoteId"] for c in chapters] == [n["id"] for n in notes]
    for chapter in chapters:
        assert chapter["title"] and chapter["content"]
        image = requests.get(chapter["generatedImageUrl"], timeout=10)
        assert image.status_code == 200
        width, height = Image.open(io.BytesIO(image.content)).size
        assert abs(width / height - 4 / 3) < 0.02
    children = client.call("GET", f"/jobs?parentId={story_job['id']}").json()
    assert {c["status"] for c in children} == {"succeeded"} and len(children) == 3

    # The architecture brief's contract: base64 audio, mime parameters as MediaRecorder gives.
    direct = client.call(
        "POST",
        "/transcriptions",
        expect=(200, 202),
        headers={"Prefer": "wait=30"},
        json={
            "audioData": base64.b64encode(voice_note).decode(),
            "mimeType": "audio/webm;codecs=opus",
        },
    ).json()
    assert direct["status"] == "succeeded", direct
    assert direct["input"]["mimeType"] == "audio/webm"
    assert direct["result"]["transcription"] == text
    clip = run_clip_flow(client, space["id"], notes[0]["id"])
    return {"space": space, "notes": notes, "story": story, "transcription": text,
            "clip": clip}


def run_clip_flow(client: Client, space_id: str, note_id: str) -> dict[str, Any]:
    """A narrator clip of a photo on the moment: it ends up on the moment as a video."""
    photo = Image.new("RGB", (800, 600), (200, 120, 60))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    media = client.call("POST", f"/spaces/{space_id}/notes/{note_id}/media", expect=201,
                        files={"file": ("me.jpg", buffer.getvalue(), "image/jpeg")}).json()
    job = client.call("POST", "/narrator-clips", expect=202, json={
        "mediaId": media["id"], "script": "Welcome to Porto!", "durationSeconds": 3}).json()
    clip: dict[str, Any] = client.wait_job(job["id"], timeout=90)
    assert clip["status"] == "succeeded", clip
    assert clip["result"]["durationSeconds"] == pytest.approx(3.0, abs=0.2)
    note = client.call("GET", f"/spaces/{space_id}/notes/{note_id}").json()
    assert note["videoFileIds"] == [clip["result"]["mediaId"]]
    video = requests.get(clip["result"]["videoUrl"], timeout=10)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    return clip


@pytest.fixture
def pg_platform_env(tmp_path: Path, amqp_url: str | None) -> Iterator[dict[str, str]]:
    database = create_database("lt_e2e")  # empty: the platform migrates it on start
    shared = f"{REDIS_BASE}/14"
    redis.Redis.from_url(shared).flushdb()
    if amqp_url is not None:
        delete_platform_queues(amqp_url)
    yield {
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": amqp_url or shared,
        "REDIS_URL": shared,
        "SECRET_KEY": "e2e-secret-" + uuid.uuid4().hex,
        "MEDIA_DIR": str(tmp_path / "media"),
    }
    drop_database(database)


def test_story_flow_on_postgresql_with_fake_gemini_and_cloudinary(
    pg_platform_env: dict[str, str], tmp_path: Path
) -> None:
    with (
        FakeGemini(transcription_text="The sun sets over the Douro.") as gemini,
        FakeCloudinary() as cloudinary,
    ):
        env = {
            **pg_platform_env,
            "GEMINI_API_KEY": "fake-key-for-tests",
            "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
            "CLOUDINARY_URL": cloudinary.cloudinary_url,
        }
        with Platform(env, tmp_path / "var") as platform:
            ready = requests.get(f"{platform.base_url}/ready", timeout=5).json()
            assert ready["provider"] == "gemini" and ready["media"] == "cloudinary"
            voice = spoken_audio("The sun sets over the Douro.", tmp_path)
            outcome = run_story_flow(Client(platform.base_url), voice)
        assert outcome["transcription"] == "The sun sets over the Douro."
        audio_parts = [part for r in gemini.requests_of("transcription") for part in r.inline_data]
        assert audio_parts and all(
            part.get("mimeType", part.get("mime_type")) == "audio/webm" for part in audio_parts
        )
        paths = [r.path for r in gemini.requests]
        assert any(p.startswith("/v1/models/gemini-3.5-flash-lite:generateContent") for p in paths)
        assert any(p.startswith("/v1/models/gemini-3.8-flash:stream") for p in paths)
        assert any(p.startswith("/v1/models/gemini-nano-banana-2.1:generateContent")
                   for p in paths)
        assert all(r.headers.get("x-goog-api-key") == "fake-key-for-tests" for r in gemini.requests)
        # The narrator clip: one video generation through the Interactions API, uploaded as a
        # Cloudinary video keyed by its job.
        assert gemini.video.starts == 1
        clip_id = outcome["clip"]["id"]
        assert [u.resource_type for u in cloudinary.uploads
                if u.public_id == f"video/{clip_id}"] == ["video"]
        # One upload per illustration, named after its job: a retry would overwrite it.
        illustration_uploads = [
            u for u in cloudinary.uploads if u.public_id.startswith("illustrations/")
        ]
        assert len(illustration_uploads) == 3
        log = platform.log()
        assert f"broker={env['CELERY_BROKER_URL'].split(':', 1)[0]} " in log
        assert "fake-key-for-tests" not in log
        assert cloudinary.api_secret not in log


def test_story_flow_on_the_embedded_default(tmp_path: Path) -> None:
    with Platform({}, tmp_path / "var") as platform:
        ready = requests.get(f"{platform.base_url}/ready", timeout=5).json()
        assert ready == {**ready, "provider": "offline", "media": "local", "status": "ready"}
        voice = spoken_audio("Hello from the embedded default.", tmp_path)
        outcome = run_story_flow(Client(platform.base_url), voice)
    assert outcome["transcription"].startswith("[offline transcription] audio/webm")
    assert (tmp_path / "var" / "lifetales.db").exists()
    assert (tmp_path / "var" / "celery-broker.db").exists()
