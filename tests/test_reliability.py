"""What survives a bad day, with the platform's real processes on PostgreSQL, once on a private
Redis broker and once on RabbitMQ: a worker SIGKILLed mid-job, the broker going away, a retry
that must wait its delay, a cancel while running."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio import wav_tone
from tests.fakes.gemini_server import FakeGemini
from tests.platform import Client, Stack, running_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path, amqp_url: str | None) -> Iterator[Stack]:
    with FakeGemini() as gemini, running_stack(tmp_path, gemini, amqp_url) as running:
        yield running


def submit_transcription(client: Client) -> dict[str, Any]:
    body = {"audioData": base64.b64encode(wav_tone(0.2)).decode(), "mimeType": "audio/wav"}
    response: dict[str, Any] = client.call("POST", "/transcriptions", json=body, expect=202).json()
    return response


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    stack.gemini.set_latency(5, "transcription")
    stack.services.start_worker("w1")
    job = submit_transcription(stack.client)
    wait_for(lambda: stack.gemini.requests_of("transcription"), 15, "the first Gemini call")
    stack.services.kill("w1")  # SIGKILL mid-call: no chance to ack, fail or clean up
    stack.gemini.set_latency(0, "transcription")
    stack.services.start_worker("w2")

    done = stack.client.wait_job(job["id"], timeout=40)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2  # the killed attempt, then the one that finished
    assert len(stack.gemini.requests_of("transcription")) == 2
    media = stack.query(
        "SELECT transcription FROM media WHERE id = :id", id=uuid.UUID(done["result"]["mediaId"])
    )
    assert [row.transcription for row in media] == [stack.gemini.transcription_text]


def test_submits_answer_while_the_broker_is_down_and_run_when_it_is_back(stack: Stack) -> None:
    stack.services.start_worker("w1")
    stack.stop_broker()
    started = time.monotonic()
    response = stack.client.call(
        "POST", "/illustrations", json={"prompt": "a lighthouse", "style": "pastel"}, expect=202
    )
    assert time.monotonic() - started < 3, "a submit must not hang on a dead broker"
    job = response.json()
    assert job["status"] == "queued"
    time.sleep(1)
    stack.start_broker()  # Redis comes back empty; the worker reconnects to either

    done = stack.client.wait_job(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert len(stack.gemini.requests_of("illustration")) == 1


def test_a_retry_waits_its_delay_in_the_broker_not_in_a_worker_thread(stack: Stack) -> None:
    """A countdown message (a 429's ``retryDelay``) is delivered once it is due, not before, and
    a one-thread worker runs the queue's other jobs meanwhile."""
    stack.services.start_worker("w1", concurrency=1)
    stack.gemini.fail_next("illustration", status=429, retry_delay="4s")
    waiting = stack.client.call("POST", "/illustrations", expect=202,
                                json={"prompt": "a harbour at dawn", "style": "pastel"}).json()
    wait_for(lambda: stack.gemini.requests_of("illustration"), 15, "the rate-limited call")
    other = stack.client.call("POST", "/illustrations", expect=202,
                              json={"prompt": "a lighthouse at dusk", "style": "pastel"}).json()
    ran_meanwhile = stack.client.wait_job(other["id"], timeout=20)
    assert ran_meanwhile["status"] == "succeeded", ran_meanwhile

    done = stack.client.wait_job(waiting["id"], timeout=40)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1  # a 429 is back-pressure: it spends no attempt
    calls = [r for r in stack.gemini.requests_of("illustration")
             if "harbour" in r.prompt_text]
    assert [r.status for r in calls] == [429, 200]
    waited = calls[1].received_at - calls[0].received_at
    assert waited >= 4.0, f"the retry came {waited:.2f} s after the 429 asked for 4 s"
    others = [r for r in stack.gemini.requests_of("illustration") if "lighthouse" in r.prompt_text]
    assert others and others[0].received_at < calls[1].received_at


def test_cancel_stops_a_running_job_at_its_next_safe_point(stack: Stack) -> None:
    stack.gemini.set_latency(3, "transcription")
    stack.services.start_worker("w1")
    job = submit_transcription(stack.client)
    wait_for(lambda: stack.gemini.requests_of("transcription"), 15, "the Gemini call")
    canceled = stack.client.call("POST", f"/jobs/{job['id']}/cancel", expect=200).json()
    assert canceled["status"] == "running" and canceled["cancelRequested"] is True
    done = stack.client.wait_job(job["id"], timeout=20)
    assert done["status"] == "canceled", done
    media = stack.query(
        "SELECT transcription FROM media WHERE id = :id", id=uuid.UUID(job["input"]["mediaId"])
    )
    assert [row.transcription for row in media] == [None]  # the result was not applied
