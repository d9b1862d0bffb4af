"""Narrator clips on the platform's real processes (API, beat, Celery workers on the ``video``
queue, PostgreSQL, a private Redis) against the fake Gemini: a worker SIGKILLed mid-poll, and
many clips waiting upstream at once on a worker with few threads."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.gemini_server import FakeGemini
from tests.fakes.gemini_video import mp4_clip
from tests.platform import Client, Stack, running_stack
from tests.test_api_media import png_bytes
from tests.test_reliability import wait_for

pytestmark = pytest.mark.integration

SECONDS = 3  # each clip's length (the fake makes a real MP4 of it)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    mp4_clip(SECONDS)  # made once, before any worker waits on it
    env = {"NARRATOR_POLL_MIN_SECONDS": "1", "NARRATOR_POLL_MAX_SECONDS": "3",
           "NARRATOR_ESTIMATE_SECONDS": "10", "RATE_LIMIT_NARRATOR_CLIPS": "100/day"}
    with FakeGemini() as gemini, running_stack(tmp_path, gemini, extra_env=env) as running:
        yield running


def photos(client: Client, count: int) -> list[str]:
    """One photo on each of ``count`` new moments (a moment holds 20 files: clips spread out)."""
    space = client.call("POST", "/spaces", json={"title": "Porto"}, expect=201).json()
    found = []
    for n in range(count):
        note = client.call("POST", f"/spaces/{space['id']}/notes", expect=201,
                           json={"textContent": f"moment {n}"}).json()
        photo = client.call("POST", f"/spaces/{space['id']}/notes/{note['id']}/media",
                            expect=201, files={"file": ("me.png", io.BytesIO(png_bytes()),
                                                        "image/png")}).json()
        found.append(photo["id"])
    return found


def submit_clip(client: Client, photo: str) -> dict[str, Any]:
    job: dict[str, Any] = client.call("POST", "/narrator-clips", expect=202, json={
        "mediaId": photo, "script": "Hello from the river", "durationSeconds": SECONDS}).json()
    return job


def test_a_worker_killed_while_polling_is_replaced_and_the_clip_is_never_started_twice(
        stack: Stack) -> None:
    video = stack.gemini.video
    video.generation_seconds = 4
    stack.services.start_worker("v1", concurrency=2, queues="video,maintenance")
    job = submit_clip(stack.client, photos(stack.client, 1)[0])
    wait_for(lambda: video.starts == 1, 20, "the generation to start")
    # The next look hangs; the worker dies in the middle of it (no ack, no cleanup).
    stack.gemini.hang_next("video_poll", 60)
    polls = len(stack.gemini.requests_of("video_poll"))
    wait_for(lambda: len(stack.gemini.requests_of("video_poll")) > polls, 20, "a poll")
    stack.services.kill("v1")
    stack.services.start_worker("v2", concurrency=2, queues="video,maintenance")

    done = stack.client.wait_job(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert video.starts == 1  # resumed the same operation
    assert done["upstreamOperation"]["state"] == "succeeded" and done["upstreamOperation"][
        "starts"] == 1
    assert done["result"]["durationSeconds"] == pytest.approx(SECONDS, abs=0.2)


@pytest.mark.timeout(420)
def test_fifty_clips_wait_upstream_at_once_on_a_worker_with_four_threads(stack: Stack) -> None:
    video = stack.gemini.video
    video.generation_seconds = 6
    stack.services.start_worker("v1", concurrency=4, queues="video,maintenance")
    sources = photos(stack.client, 3)
    jobs = [submit_clip(stack.client, sources[n % 3]) for n in range(50)]

    finished = [stack.client.wait_job(job["id"], timeout=300) for job in jobs]
    assert [j["status"] for j in finished] == ["succeeded"] * 50, [
        j["error"] for j in finished if j["status"] != "succeeded"]
    assert video.starts == 50
    # Threads held while generations run would cap this at 4.
    assert video.most_in_flight() >= 20, video.most_in_flight()
