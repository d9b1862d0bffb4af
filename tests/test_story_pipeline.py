"""The story pipeline as a client sees it, with the platform's real processes: chapters stream
out as the model writes them, illustrations start before the story is finished, the event
stream resumes without loss, and identical work is done once."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.audio import wav_tone
from tests.fakes.gemini_server import FakeGemini
from tests.platform import Client, Stack, running_stack

pytestmark = pytest.mark.integration

STREAM_S = 4.0  # how long the fake takes to stream the whole story


@dataclass
class Event:
    id: int
    type: str
    data: dict[str, Any]
    at: float  # seconds since the story was submitted


def read_events(client: Client, job_id: str, started: float, last_id: int | None = None,
                limit: int = 1000) -> list[Event]:
    """Read the job's SSE stream until ``done`` (or ``limit`` events)."""
    headers = {"Accept": "text/event-stream"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    events: list[Event] = []
    with client.http.get(f"{client.base}/api/v1/jobs/{job_id}/events", headers=headers,
                         stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for raw in response.iter_lines(decode_unicode=True):
            if raw:
                name, _, value = raw.partition(": ")
                fields[name] = value
                continue
            if "event" in fields:
                event = Event(int(fields["id"]), fields["event"], json.loads(fields["data"]),
                              time.monotonic() - started)
                events.append(event)
                if event.type == "done" or len(events) >= limit:
                    break
            fields = {}
    return events


def make_space(client: Client, notes: int) -> str:
    space: str = client.call("POST", "/spaces", json={"title": "Lisbon"}, expect=201).json()["id"]
    for i in range(notes):
        client.call("POST", f"/spaces/{space}/notes", expect=201, json={
            "title": f"Day {i + 1}", "textContent": f"We walked up hill number {i + 1}.",
            "timestamp": 1_700_000_000_000 + i * 86_400_000,
        })
    return space


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeGemini(story_stream_seconds=STREAM_S) as gemini, \
            running_stack(tmp_path, gemini) as running:
        gemini.set_latency(0.5, "illustration")
        running.services.start_worker("w1", concurrency=8)
        yield running


def test_chapters_stream_out_and_illustrations_start_before_the_story_is_written(
    stack: Stack,
) -> None:
    space = make_space(stack.client, notes=4)
    started = time.monotonic()
    job = stack.client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
    assert job["links"]["events"] == f"/api/v1/jobs/{job['id']}/events"
    events = read_events(stack.client, job["id"], started)

    types = [e.type for e in events]
    assert types[-1] == "done" and events[-1].data["status"] == "succeeded", types
    chapters = [e for e in events if e.type == "chapter"]
    illustrations = [e for e in events if e.type == "illustration"]
    assert len(chapters) == 4 and len(illustrations) == 4
    assert [c.data["position"] for c in chapters] == [0, 1, 2, 3]
    # The first chapter is out long before the model has finished writing.
    assert chapters[0].at < STREAM_S * 0.6, [round(c.at, 2) for c in chapters]
    assert chapters[-1].at - chapters[0].at > STREAM_S * 0.3
    # Its illustration started (and even finished) while later chapters were being written.
    assert illustrations[0].at < chapters[-1].at, (illustrations[0].at, chapters[-1].at)
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    story = stack.client.call("GET", f"/spaces/{space}/story").json()
    assert all(c["generatedImageUrl"] for c in story["chapters"])
    assert {e.data["imageUrl"] for e in illustrations} == {
        c["generatedImageUrl"] for c in story["chapters"]
    }

    # Resuming after any event replays exactly what followed it.
    cut = events[len(events) // 2]
    resumed = read_events(stack.client, job["id"], started, last_id=cut.id)
    assert [(e.id, e.type) for e in resumed] == [
        (e.id, e.type) for e in events if e.id > cut.id
    ]
    # A client arriving after the end gets the whole history, then done.
    late = read_events(stack.client, job["id"], started)
    assert [(e.id, e.type) for e in late] == [(e.id, e.type) for e in events]


def test_identical_work_is_done_once(stack: Stack) -> None:
    space = make_space(stack.client, notes=2)
    first = stack.client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
    second = stack.client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
    done = [stack.client.wait_job(j["id"], timeout=60) for j in (first, second)]
    assert [d["status"] for d in done] == ["succeeded", "succeeded"], done
    assert sorted(d["result"]["cached"] for d in done) == [False, True]
    assert len(stack.gemini.requests_of("story")) == 1
    # Their illustrations were the same prompts: drawn once, reused by the second version.
    assert len(stack.gemini.requests_of("illustration")) == 2
    versions = stack.client.call("GET", f"/spaces/{space}/stories").json()
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["current"] for v in versions] == [True, False]

    audio = {"audioData": base64.b64encode(wav_tone(0.3)).decode(), "mimeType": "audio/wav"}
    jobs = [stack.client.call("POST", "/transcriptions", json=audio, expect=202).json()
            for _ in range(3)]
    results = [stack.client.wait_job(j["id"], timeout=30)["result"] for j in jobs]
    assert len(stack.gemini.requests_of("transcription")) == 1
    assert sorted(r["cached"] for r in results) == [False, True, True]
    assert len({r["transcription"] for r in results}) == 1

    forced = stack.client.call("POST", "/transcriptions", json={**audio, "force": True},
                               expect=202).json()
    assert stack.client.wait_job(forced["id"], timeout=30)["result"]["cached"] is False
    assert len(stack.gemini.requests_of("transcription")) == 2


def test_a_failed_regeneration_leaves_the_current_story_in_place(stack: Stack) -> None:
    space = make_space(stack.client, notes=2)
    stack.client.wait_job(
        stack.client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()["id"])
    before = stack.client.call("GET", f"/spaces/{space}/story").json()
    stack.gemini.block_next("story")
    failed = stack.client.wait_job(stack.client.call(
        "POST", f"/spaces/{space}/story", json={"force": True}, expect=202).json()["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "blocked", failed
    after = stack.client.call("GET", f"/spaces/{space}/story").json()
    assert after == before
    statuses = {v["version"]: v["status"] for v in
                stack.client.call("GET", f"/spaces/{space}/stories").json()}
    assert statuses[1] == "ready" and set(statuses) <= {1, 2}


def test_event_stream_rejects_a_bad_last_event_id(stack: Stack) -> None:
    space = make_space(stack.client, notes=1)
    job = stack.client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
    response = requests.get(f"{stack.client.base}/api/v1/jobs/{job['id']}/events",
                            headers={**stack.client.http.headers, "Last-Event-ID": "abc"},
                            timeout=10)
    assert response.status_code == 422
    assert "Last-Event-ID" in response.json()["message"]
