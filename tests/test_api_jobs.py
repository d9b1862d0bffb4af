"""Submissions (story, illustration) and the job resource: polling, ETags, cancel, Prefer: wait,
Idempotency-Key, listing; plus the saved story settings a story job starts from.

No worker consumes the broker in these tests, so every submitted job stays ``queued``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from api.resources.events import event_stream
from models import Chapter, Job, Space, Story
from models.base import utcnow
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space
from workers import lifecycle

DEFAULT_SETTINGS = {
    "narrativeTone": "cinematic", "storyMode": "chapter", "creativity": 1.0,
    "imageStyle": "illustration", "imagesPerChapter": 1, "voiceStyle": "storyteller",
    "backgroundMusic": True,
}
SAVED_SETTINGS = {
    "narrativeTone": "poetic", "storyMode": "creative", "creativity": 1.5,
    "imageStyle": "pastel", "imagesPerChapter": 2, "voiceStyle": "calm",
    "backgroundMusic": False,
}


def illustrate(client: FlaskClient, headers: dict[str, str], prompt: str = "a tram at dusk",
               style: str = "pastel", **extra_headers: str) -> Any:
    return client.post("/api/v1/illustrations", json={"prompt": prompt, "style": style},
                       headers={**headers, **extra_headers})


def job_rows(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job)) or 0


# --- settings -----------------------------------------------------------------------------


def test_settings_default_to_the_frontends(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/api/v1/settings", headers=auth)
    assert response.status_code == 200
    assert response.get_json() == DEFAULT_SETTINGS


def test_put_settings_replaces_them(client: FlaskClient, auth: dict[str, str],
                                    other_auth: dict[str, str]) -> None:
    response = client.put("/api/v1/settings", headers=auth, json=SAVED_SETTINGS)
    assert response.status_code == 200
    assert response.get_json() == SAVED_SETTINGS
    assert client.get("/api/v1/settings", headers=auth).get_json() == SAVED_SETTINGS
    replaced = {**DEFAULT_SETTINGS, "voiceStyle": "warm"}
    assert client.put("/api/v1/settings", headers=auth, json=replaced).get_json() == replaced
    assert client.get("/api/v1/settings", headers=auth).get_json() == replaced
    # Settings are per user.
    assert client.get("/api/v1/settings", headers=other_auth).get_json() == DEFAULT_SETTINGS


@pytest.mark.parametrize(("change", "field"), [
    ({"creativity": 2.5}, "creativity"),
    ({"creativity": -0.1}, "creativity"),
    ({"creativity": "high"}, "creativity"),
    ({"narrativeTone": "sad"}, "narrativeTone"),
    ({"storyMode": "epic"}, "storyMode"),
    ({"imageStyle": "anime"}, "imageStyle"),
    ({"voiceStyle": "robotic"}, "voiceStyle"),
    ({"backgroundMusic": "loud"}, "backgroundMusic"),
    ({"fontSize": 12}, "fontSize"),
])
def test_put_settings_validation(client: FlaskClient, auth: dict[str, str],
                                 change: dict[str, Any], field: str) -> None:
    body = assert_error(client.put("/api/v1/settings", headers=auth,
                                   json={**DEFAULT_SETTINGS, **change}), 422, field)
    assert list(body["errors"]["json"]) == [field]
    assert client.get("/api/v1/settings", headers=auth).get_json() == DEFAULT_SETTINGS


def test_put_settings_needs_every_field(client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_error(client.put("/api/v1/settings", headers=auth,
                                   json={"narrativeTone": "funny"}), 422)
    assert set(body["errors"]["json"]) == set(DEFAULT_SETTINGS) - {"narrativeTone"}


def test_creativity_bounds_are_inclusive(client: FlaskClient, auth: dict[str, str]) -> None:
    for value in (0, 2):
        response = client.put("/api/v1/settings", headers=auth,
                              json={**DEFAULT_SETTINGS, "creativity": value})
        assert response.status_code == 200 and response.get_json()["creativity"] == value


# --- story ----------------------------------------------------------------------------------


def test_story_job_merges_saved_settings_with_the_request(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    client.put("/api/v1/settings", headers=auth, json=SAVED_SETTINGS)
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    response = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth,
                           json={"settings": {"creativity": 0.5, "narrativeTone": "funny"}})
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "story" and job["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    expected = {**SAVED_SETTINGS, "creativity": 0.5, "narrativeTone": "funny"}
    assert job["input"] == {"spaceId": space["id"], "settings": expected, "force": False}
    row = session.get(Job, uuid.UUID(job["id"]))
    assert row is not None and row.queue == "story" and row.input["settings"] == expected


def test_story_without_body_uses_saved_or_default_settings(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    response = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["input"]["settings"] == DEFAULT_SETTINGS
    empty = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth, json={})
    assert empty.status_code == 202
    assert empty.get_json()["input"]["settings"] == DEFAULT_SETTINGS


def test_story_of_a_space_without_notes_is_422(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    before = job_rows(session)
    assert_error(client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth, json={}),
                 422, "no moments")
    assert job_rows(session) == before


def test_story_settings_are_validated(client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    url = f"/api/v1/spaces/{space['id']}/story"
    body = assert_error(client.post(url, headers=auth, json={"settings": {"creativity": 3}}), 422)
    assert "creativity" in body["errors"]["json"]["settings"]
    body = assert_error(client.post(url, headers=auth, json={"settings": {"mood": "x"}}), 422)
    assert "mood" in body["errors"]["json"]["settings"]
    body = assert_error(client.post(url, headers=auth, json={"style": "x"}), 422)
    assert "style" in body["errors"]["json"]


def test_get_story_before_any_is_404_with_a_message(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    assert_error(client.get(f"/api/v1/spaces/{space['id']}/story", headers=auth),
                 404, "no story")


def test_get_story_returns_the_current_version_with_chapters(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    space_id = uuid.UUID(space["id"])
    story = Story(space_id=space_id, version=1, job_id=uuid.uuid4(), status="ready",
                  settings=DEFAULT_SETTINGS, generated_at=utcnow(), chapters=[
                      Chapter(position=1, title="Later", content="Then.", user_image_ids=[],
                              generated_image_url="http://localhost/media/x.png"),
                      Chapter(position=0, title="First", content="Once.", user_image_ids=[],
                              source_note_id=uuid.UUID(note["id"]), illustration_prompt="a tram"),
                  ])
    session.add(story)
    session.execute(update(Space).where(Space.id == space_id).values(current_story_version=1))
    session.commit()

    response = client.get(f"/api/v1/spaces/{space['id']}/story", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["spaceId"] == space["id"] and body["version"] == 1
    assert body["settings"] == DEFAULT_SETTINGS
    assert body["generatedAt"]
    assert [c["title"] for c in body["chapters"]] == ["First", "Later"]
    first = body["chapters"][0]
    assert first["sourceNoteId"] == note["id"]
    assert first["illustrationPrompt"] == "a tram"
    assert first["userImageIds"] == []
    assert body["chapters"][1]["generatedImageUrl"] == "http://localhost/media/x.png"
    assert client.get(f"/api/v1/spaces/{space['id']}/story?version=1",
                      headers=auth).status_code == 200
    assert_error(client.get(f"/api/v1/spaces/{space['id']}/story?version=2", headers=auth),
                 404, "version 2")
    assert client.get(f"/api/v1/spaces/{space['id']}", headers=auth).get_json()["storyVersion"] == 1


# --- illustrations ----------------------------------------------------------------------------


def test_illustration_answers_202(client: FlaskClient, auth: dict[str, str]) -> None:
    response = illustrate(client, auth)
    assert response.status_code == 202
    job = response.get_json()
    assert job["kind"] == "illustration" and job["status"] == "queued"
    assert job["input"] == {"prompt": "a tram at dusk", "style": "pastel", "force": False}
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert job["links"] == {"self": f"/api/v1/jobs/{job['id']}",
                            "cancel": f"/api/v1/jobs/{job['id']}/cancel",
                            "events": f"/api/v1/jobs/{job['id']}/events"}
    default = client.post("/api/v1/illustrations", headers=auth, json={"prompt": "a kite"})
    assert default.status_code == 202
    assert default.get_json()["input"]["style"] == "illustration"


def test_illustration_validation(client: FlaskClient, auth: dict[str, str],
                                 session: Session) -> None:
    before = job_rows(session)
    body = assert_error(illustrate(client, auth, style="anime"), 422, "style")
    assert "style" in body["errors"]["json"]
    body = assert_error(illustrate(client, auth, prompt="x" * 2001), 422, "prompt")
    assert "prompt" in body["errors"]["json"]
    body = assert_error(illustrate(client, auth, prompt=""), 422, "prompt")
    body = assert_error(client.post("/api/v1/illustrations", headers=auth,
                                    json={"style": "pastel"}), 422, "prompt")
    assert body["errors"]["json"]["prompt"]
    assert job_rows(session) == before


# --- GET /jobs/{id}: ETag, Retry-After ---------------------------------------------------------


def test_job_etag_and_304(client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    job = illustrate(client, auth).get_json()
    url = f"/api/v1/jobs/{job['id']}"
    first = client.get(url, headers=auth)
    assert first.status_code == 200
    assert first.get_json()["id"] == job["id"]
    etag = first.headers["ETag"]
    assert etag.startswith('"')
    assert first.headers["Retry-After"] == "1"
    assert first.headers["Cache-Control"] == "no-cache"

    unchanged = client.get(url, headers={**auth, "If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.get_data() == b""
    assert unchanged.headers["ETag"] == etag

    # A worker picks it up: the representation changes, so does the ETag.
    claimed = lifecycle.start_job(session, uuid.UUID(job["id"]), heartbeat_timeout_s=30)
    assert claimed is not None
    assert lifecycle.set_progress(session, claimed, "drawing", 0, 1)
    session.commit()
    running = client.get(url, headers={**auth, "If-None-Match": etag})
    assert running.status_code == 200
    assert running.get_json()["status"] == "running"
    assert running.get_json()["progress"] == {"step": "drawing", "current": 0, "total": 1}
    assert running.headers["ETag"] != etag
    assert int(running.headers["Retry-After"]) >= 1

    assert lifecycle.succeed_job(session, claimed, {"imageUrl": "http://localhost/media/i.png"})
    session.commit()
    done = client.get(url, headers={**auth, "If-None-Match": running.headers["ETag"]})
    assert done.status_code == 200
    assert done.get_json()["result"] == {"imageUrl": "http://localhost/media/i.png"}
    assert "Retry-After" not in done.headers


def test_unknown_job_is_404(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_error(client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=auth), 404, "job")
    assert_error(client.post(f"/api/v1/jobs/{uuid.uuid4()}/cancel", headers=auth), 404, "job")
    assert_error(client.get("/api/v1/jobs/not-a-uuid", headers=auth), 404)


# --- cancel ---------------------------------------------------------------------------------


def test_cancel_a_queued_job(client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    job = illustrate(client, auth).get_json()
    etag = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).headers["ETag"]
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "canceled" and body["cancelRequested"] is True
    assert body["error"]["code"] == "canceled"
    assert body["finishedAt"]
    row = session.get(Job, uuid.UUID(job["id"]), populate_existing=True)
    assert row is not None and row.status == "canceled" and row.finished_at is not None
    polled = client.get(f"/api/v1/jobs/{job['id']}", headers={**auth, "If-None-Match": etag})
    assert polled.status_code == 200 and polled.get_json()["status"] == "canceled"
    assert "Retry-After" not in polled.headers
    # Canceling again is harmless.
    again = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 200 and again.get_json()["status"] == "canceled"


def test_cancel_a_running_job_asks_it_to_stop(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    job = illustrate(client, auth).get_json()
    session.execute(update(Job).where(Job.id == uuid.UUID(job["id"]))
                    .values(status="running", attempts=1))
    session.commit()
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "running" and body["cancelRequested"] is True


def test_cancel_does_not_touch_a_finished_job(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    job = illustrate(client, auth).get_json()
    session.execute(update(Job).where(Job.id == uuid.UUID(job["id"]))
                    .values(status="succeeded", result={"imageUrl": "u"}))
    session.commit()
    response = client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
    assert response.status_code == 200
    assert response.get_json()["status"] == "succeeded"
    assert response.get_json()["cancelRequested"] is False


# --- Prefer: wait ----------------------------------------------------------------------------


def test_prefer_wait_without_a_worker_still_answers_202_after_the_wait(
        client: FlaskClient, auth: dict[str, str]) -> None:
    started = time.monotonic()
    response = illustrate(client, auth, Prefer="wait=1")
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert 0.9 <= elapsed < 3, elapsed
    assert response.get_json()["status"] == "queued"
    assert response.headers["Location"].startswith("/api/v1/jobs/")
    assert "Preference-Applied" not in response.headers


def test_prefer_wait_returns_200_once_the_job_is_finished(
        client: FlaskClient, auth: dict[str, str]) -> None:
    # A replayed submit of a job that has already finished answers with the final job at once.
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    job = illustrate(client, auth, **key).get_json()
    client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth)
    started = time.monotonic()
    response = illustrate(client, auth, Prefer="wait=5", **key)
    assert time.monotonic() - started < 1
    assert response.status_code == 200
    assert response.get_json()["status"] == "canceled"
    assert response.headers["Content-Location"] == f"/api/v1/jobs/{job['id']}"
    assert response.headers["Preference-Applied"] == "wait=5"


# --- Idempotency-Key --------------------------------------------------------------------------


def test_idempotency_key_replays_the_same_job(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
        session: Session) -> None:
    key = {"Idempotency-Key": "retry-me-1"}
    first = illustrate(client, auth, **key)
    before = job_rows(session)
    second = illustrate(client, auth, **key)
    assert first.status_code == second.status_code == 202
    assert second.get_json()["id"] == first.get_json()["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert job_rows(session) == before
    # Keys are per user: another user's submit with the same key is its own job.
    other = illustrate(client, other_auth, **key)
    assert other.status_code == 202 and other.get_json()["id"] != first.get_json()["id"]


def test_idempotency_key_with_a_different_body_is_422(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    key = {"Idempotency-Key": "retry-me-2"}
    assert illustrate(client, auth, prompt="a tram", **key).status_code == 202
    before = job_rows(session)
    assert_error(illustrate(client, auth, prompt="a boat", **key), 422, "Idempotency-Key")
    assert job_rows(session) == before


def test_idempotency_key_on_story_and_transcription(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    url = f"/api/v1/spaces/{space['id']}/story"
    key = {**auth, "Idempotency-Key": "story-1"}
    first = client.post(url, headers=key, json={"settings": {"creativity": 0.2}})
    again = client.post(url, headers=key, json={"settings": {"creativity": 0.2}})
    assert first.get_json()["id"] == again.get_json()["id"]
    assert_error(client.post(url, headers=key, json={"settings": {"creativity": 0.3}}), 422)

    audio = {"audioData": base64.b64encode(wav_tone(0.1)).decode(), "mimeType": "audio/wav"}
    key = {**auth, "Idempotency-Key": "transcribe-1"}
    first = client.post("/api/v1/transcriptions", headers=key, json=audio)
    again = client.post("/api/v1/transcriptions", headers=key, json=audio)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]


def test_idempotency_key_expires_after_24_hours(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    key = {"Idempotency-Key": "daily-report"}
    first = illustrate(client, auth, prompt="a tram", **key).get_json()["id"]
    session.execute(update(Job).where(Job.id == uuid.UUID(first))
                    .values(created_at=utcnow() - timedelta(hours=24, minutes=1)))
    session.commit()
    # After 24 h the key is free: a new job, even with another body.
    second = illustrate(client, auth, prompt="a boat", **key)
    assert second.status_code == 202 and second.get_json()["id"] != first
    again = illustrate(client, auth, prompt="a boat", **key)
    assert again.get_json()["id"] == second.get_json()["id"]
    old = session.get(Job, uuid.UUID(first), populate_existing=True)
    assert old is not None and old.idempotency_key is None


def test_idempotency_key_too_long_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_error(illustrate(client, auth, **{"Idempotency-Key": "k" * 256}), 422,
                 "Idempotency-Key")


# --- GET /jobs ----------------------------------------------------------------------------------


def test_list_jobs_filters_and_paginates(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    illustrations = [illustrate(client, auth, prompt=f"scene {i}").get_json()["id"]
                     for i in range(5)]
    story = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth).get_json()["id"]
    client.post(f"/api/v1/jobs/{illustrations[0]}/cancel", headers=auth)
    illustrate(client, other_auth)

    everything = client.get("/api/v1/jobs", headers=auth)
    assert everything.status_code == 200
    ids = [j["id"] for j in everything.get_json()]
    assert ids == [story, *reversed(illustrations)]  # the user's own, newest first
    assert json.loads(everything.headers["X-Pagination"])["total"] == 6

    by_kind = client.get("/api/v1/jobs?kind=story", headers=auth).get_json()
    assert [j["id"] for j in by_kind] == [story]
    canceled = client.get("/api/v1/jobs?status=canceled", headers=auth).get_json()
    assert [j["id"] for j in canceled] == [illustrations[0]]
    queued = client.get("/api/v1/jobs?kind=illustration&status=queued", headers=auth)
    assert [j["id"] for j in queued.get_json()] == list(reversed(illustrations[1:]))

    page = client.get("/api/v1/jobs?page=2&page_size=2", headers=auth)
    assert page.status_code == 200
    assert [j["id"] for j in page.get_json()] == ids[2:4]
    pagination = json.loads(page.headers["X-Pagination"])
    assert pagination["total"] == 6 and pagination["total_pages"] == 3
    assert pagination["page"] == 2
    assert pagination["previous_page"] == 1 and pagination["next_page"] == 3
    last = client.get("/api/v1/jobs?page=3&page_size=2", headers=auth).get_json()
    assert [j["id"] for j in last] == ids[4:]


def test_list_jobs_rejects_bad_filters(client: FlaskClient, auth: dict[str, str]) -> None:
    for query, field in (("kind=painting", "kind"), ("status=done", "status"),
                         ("page=0", "page"), ("page_size=abc", "page_size")):
        body = assert_error(client.get(f"/api/v1/jobs?{query}", headers=auth), 422)
        assert field in body["errors"]["query"], (query, body)


def test_event_stream_of_a_finished_job_ends_and_resuming_past_it_is_204(
        client: FlaskClient, auth: dict[str, str]) -> None:
    job = client.post("/api/v1/illustrations", headers=auth, json={"prompt": "a kite"}).get_json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    url = f"/api/v1/jobs/{job['id']}/events"
    stream = client.get(url, headers=auth)
    assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
    ids = [int(line.split(": ")[1]) for line in stream.get_data(as_text=True).splitlines()
           if line.startswith("id: ")]
    assert stream.get_data(as_text=True).rstrip().splitlines()[-2] == "event: done"
    # EventSource reconnects with the last id it saw: 204 tells it the stream is over, at once
    # (not a stream that idles until its time limit), and so does any later id.
    for last in (ids[-1], ids[-1] + 10**20):
        resumed = client.get(url, headers={**auth, "Last-Event-ID": str(last)})
        assert resumed.status_code == 204 and resumed.get_data() == b""
    replay = client.get(url, headers={**auth, "Last-Event-ID": str(ids[0])})
    assert replay.status_code == 200
    assert "event: done" in replay.get_data(as_text=True)


def test_a_stream_resumed_past_the_end_stops_when_the_job_is_done(
        client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    job = client.post("/api/v1/illustrations", headers=auth, json={"prompt": "a kite"}).get_json()
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    state = app.extensions["lifetales"]
    started = time.monotonic()
    # As a stream that began (with a bogus future id) before the job ended would go on.
    frames = list(event_stream(state.session_factory, state.watcher, uuid.UUID(job["id"]),
                               after=10**20))
    assert frames == ["retry: 2000\n\n"]
    assert time.monotonic() - started < 5
