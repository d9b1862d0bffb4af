"""Narration jobs: through ``run_job`` on PostgreSQL with the real SDK and the fake Gemini (the
stored WAV, usage and metrics, the cache, the event on a film parent, failures), ``POST
/narrations`` (202, validation, budget, idempotency), the whole path with the platform's real
processes (``Prefer: wait``, the audio downloaded over HTTP), and retention of the files."""

from __future__ import annotations

import dataclasses
import io
import uuid
import wave
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agents.config import AgentSettings
from agents.provider import build_provider
from agents.types import MAX_NARRATION_CHARS
from config import RetentionSettings
from models import CacheEntry, Job, JobEvent, User
from models.base import utcnow
from tests.conftest import assert_error, register
from tests.fakes.gemini_server import FakeGemini
from tests.platform import running_stack
from tests.test_api_rate_limits import AppFactory, assert_refused, limited_app
from tests.test_worker_jobs import ctx, fresh, gemini, user
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.retention import prune_retention
from workers.runner import run_job
from workers.tasks.narration import narrate

__all__ = ["ctx", "gemini", "limited_app", "user"]  # fixtures shared with other test modules

TEXT = "We reached the lighthouse just as the fog lifted over the bay."
FAKE_PACE = 15  # characters a second, the fake Gemini's speech (tests/fakes/gemini_speech.py)


def narration_job(session: Session, user: User, text: str = TEXT, voice: str = "storyteller",
                  **extra: Any) -> Job:
    parent_id = extra.pop("parent_id", None)
    job = create_job(session, owner_id=user.id, kind="narration", parent_id=parent_id,
                     input={"text": text, "voiceStyle": voice, "language": None, **extra})
    session.commit()
    return job


def stored_seconds(ctx: WorkerContext, job_id: uuid.UUID) -> float:
    """How long the narration file a job stored plays."""
    with wave.open(io.BytesIO(ctx.storage.read(f"narrations/{job_id}")), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


def has_file(ctx: WorkerContext, key: str) -> bool:
    return key in {stored.key for stored in ctx.storage.iter_keys("narrations/")}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the job ----------------------------------------------------------------------------------


def test_a_narration_is_spoken_stored_and_accounted(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    labels = {"agent": "narration", "model": "gemini-3.8-flash-tts"}
    calls_before = metric("lifetales_model_calls_total", **labels, outcome="ok")
    tokens_before = metric("lifetales_model_tokens_total", **labels, direction="out")
    cost_before = metric("lifetales_model_cost_usd_total", **labels)
    job = narration_job(session, user, voice="calm")
    assert job.queue == "speech"

    run_job(str(job.id), narrate, context=ctx)

    done = fresh(session, job)
    assert done.status == "succeeded", done.error
    seconds = stored_seconds(ctx, job.id)
    assert seconds == pytest.approx(len(TEXT) / FAKE_PACE, abs=0.001)
    assert done.result == {
        "audioUrl": f"http://localhost/media/narrations/{job.id}.wav",
        "mimeType": "audio/wav", "durationSeconds": round(seconds, 3), "cached": False}
    (request,) = gemini.requests_of("speech")
    assert request.model == "gemini-3.8-flash-tts"
    assert request.usage is not None
    audio_tokens = request.usage["candidatesTokenCount"]
    assert done.usage == {"model": "gemini-3.8-flash-tts", "calls": 1, "outputTokens": audio_tokens,
                          "inputTokens": request.usage["promptTokenCount"]}
    assert done.progress == {"step": "done", "current": 1, "total": 1}
    # Metrics under agent "narration": the call, its audio tokens, their cost at the TTS price.
    assert metric("lifetales_model_calls_total", **labels, outcome="ok") == calls_before + 1
    assert metric("lifetales_model_tokens_total", **labels, direction="out") \
        == tokens_before + audio_tokens
    assert metric("lifetales_model_cost_usd_total", **labels) > cost_before


def test_the_same_words_in_the_same_voice_come_from_the_cache(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    first = narration_job(session, user)
    run_job(str(first.id), narrate, context=ctx)
    again = narration_job(session, user, text=f"  {TEXT} ")  # the same words, once stripped
    run_job(str(again.id), narrate, context=ctx)

    done = fresh(session, again)
    assert done.status == "succeeded"
    assert done.result == {**fresh(session, first).result, "cached": True}  # type: ignore[dict-item]
    assert done.usage is None  # no call made, nothing billed
    assert len(gemini.requests_of("speech")) == 1
    assert not has_file(ctx, f"narrations/{again.id}")  # it reuses the first job's file

    # Another voice, another language or force: spoken again.
    for extra in ({"voice": "serious"}, {"language": "en-GB"}, {"force": True}):
        voice = str(extra.pop("voice", "storyteller"))
        job = narration_job(session, user, voice=voice, **extra)
        run_job(str(job.id), narrate, context=ctx)
        assert fresh(session, job).result["cached"] is False  # type: ignore[index]
    assert len(gemini.requests_of("speech")) == 4


def film_parent(session: Session, user: User) -> Job:
    """A running film job, as the film orchestration makes one."""
    parent = Job(owner_id=user.id, kind="film", queue="story", status="running", attempts=1,
                 input={}, started_at=utcnow())
    session.add(parent)
    session.commit()
    return parent


def test_a_scenes_narration_is_published_on_its_film(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    parent = film_parent(session, user)
    chapter = str(uuid.uuid4())
    scenes = [narration_job(session, user, parent_id=parent.id, chapterId=chapter,
                            sceneIndex=index) for index in range(2)]  # same words: one cached

    for job in scenes:
        run_job(str(job.id), narrate, context=ctx)

    events = session.scalars(select(JobEvent).where(JobEvent.job_id == parent.id,
                                                    JobEvent.type == "narration")
                             .order_by(JobEvent.id)).all()
    results = [fresh(session, job).result or {} for job in scenes]
    assert [e.data for e in events] == [
        {"chapterId": chapter, "sceneIndex": index, "audioUrl": results[0]["audioUrl"],
         "durationSeconds": results[0]["durationSeconds"]} for index in range(2)]
    assert [(r["chapterId"], r["sceneIndex"], r["cached"]) for r in results] == [
        (chapter, 0, False), (chapter, 1, True)]
    assert fresh(session, parent).status == "running"  # the film settles itself
    assert len(gemini.requests_of("speech")) == 1


def test_a_narration_that_cannot_be_spoken_fails_with_the_code_and_tells_no_parent(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    parent = film_parent(session, user)
    gemini.fail_next("speech", status=503)
    job = narration_job(session, user, parent_id=parent.id, chapterId="c-1", sceneIndex=0)

    run_job(str(job.id), narrate, context=ctx)
    waiting = fresh(session, job)
    assert (waiting.status, waiting.attempts) == ("queued", 1)  # a retry with backoff
    assert waiting.error and waiting.error["code"] == "upstream_unavailable"

    gemini.block_next("speech")
    run_job(str(job.id), narrate, context=ctx)
    failed = fresh(session, job)
    assert failed.status == "failed"
    assert failed.error and (failed.error["code"], failed.error["retryable"]) == ("blocked", False)
    assert not has_file(ctx, f"narrations/{job.id}")
    assert not session.scalars(select(JobEvent).where(JobEvent.job_id == parent.id,
                                                      JobEvent.type == "narration")).all()
    # The cache lease was given back: the next identical job speaks.
    again = narration_job(session, user)
    run_job(str(again.id), narrate, context=ctx)
    assert fresh(session, again).status == "succeeded"


def test_the_offline_provider_narrates_without_a_key(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    offline = AgentSettings()
    worker = dataclasses.replace(ctx, provider=build_provider(offline),
                                 settings=dataclasses.replace(ctx.settings, agents=offline))
    job = narration_job(session, user, voice="warm")

    run_job(str(job.id), narrate, context=worker)

    done = fresh(session, job)
    assert done.status == "succeeded" and done.result
    seconds = stored_seconds(ctx, job.id)
    assert done.result["durationSeconds"] == round(seconds, 3) > 1
    assert done.usage and done.usage["model"] == "offline"
    assert gemini.request_count == 0


# --- POST /narrations ---------------------------------------------------------------------------


def test_post_narrations_answers_202_with_a_narration_job(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    response = client.post("/api/v1/narrations", headers=auth,
                           json={"text": TEXT, "voiceStyle": "serious", "language": "fr-CA"})

    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert response.headers["Retry-After"] == "1"
    assert (job["kind"], job["status"]) == ("narration", "queued")
    assert job["input"] == {"text": TEXT, "voiceStyle": "serious", "language": "fr-CA",
                            "force": False}
    # The frontend's default voice when none is named.
    default = client.post("/api/v1/narrations", headers=auth, json={"text": TEXT}).get_json()
    assert default["input"]["voiceStyle"] == "storyteller"
    listed = client.get("/api/v1/jobs?kind=narration", headers=auth).get_json()
    assert {j["id"] for j in listed} == {job["id"], default["id"]}


@pytest.mark.parametrize(("body", "field"), [
    ({}, "text"),
    ({"text": ""}, "text"),
    ({"text": " \n\t "}, "text"),
    ({"text": 42}, "text"),
    ({"text": "x" * (MAX_NARRATION_CHARS + 1)}, "text"),
    ({"text": TEXT, "voiceStyle": "shouty"}, "voiceStyle"),
    ({"text": TEXT, "language": "french"}, "language"),
    ({"text": TEXT, "voice": "warm"}, "voice"),
    ({"text": TEXT, "deadlineSeconds": 0}, "deadlineSeconds"),
])
def test_invalid_narration_requests_are_422_naming_the_field(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    error = assert_error(client.post("/api/v1/narrations", headers=auth, json=body), 422)
    assert field in error["errors"]["json"]


def test_narrations_need_a_signed_in_user(client: FlaskClient) -> None:
    assert_error(client.post("/api/v1/narrations", json={"text": TEXT}), 401)


def test_a_retried_narration_submit_returns_the_same_job(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    headers = {**auth, "Idempotency-Key": "narrate-once"}
    first = client.post("/api/v1/narrations", headers=headers, json={"text": TEXT})
    again = client.post("/api/v1/narrations", headers=headers, json={"text": TEXT})
    assert again.status_code == 202 and again.get_json()["id"] == first.get_json()["id"]
    other = client.post("/api/v1/narrations", headers=headers, json={"text": "Other words."})
    assert_error(other, 422, "Idempotency-Key")


def test_narrations_have_their_own_budget(limited_app: AppFactory) -> None:
    client = limited_app(narration="2/hour").test_client()
    auth = register(client)
    for index in range(2):
        response = client.post("/api/v1/narrations", headers={**auth, "Idempotency-Key": "k"}
                               if index == 0 else auth, json={"text": TEXT})
        assert response.status_code == 202
    # A replay makes no job and costs nothing; a new narration is over the budget.
    assert client.post("/api/v1/narrations", headers={**auth, "Idempotency-Key": "k"},
                       json={"text": TEXT}).status_code == 202
    assert_refused(client.post("/api/v1/narrations", headers=auth, json={"text": TEXT}),
                   "2/hour narrations")
    # Other budgets are untouched by it.
    assert client.post("/api/v1/illustrations", headers=auth,
                       json={"prompt": "a kite"}).status_code == 202


def test_the_openapi_document_describes_narrations(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    post = spec["paths"]["/api/v1/narrations"]["post"]
    assert {"202", "200", "422", "429"} <= set(post["responses"])
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    name = schema["$ref"].rsplit("/", 1)[1]
    properties = spec["components"]["schemas"][name]["properties"]
    assert properties["voiceStyle"]["enum"] == ["serious", "calm", "warm", "storyteller"]
    assert properties["text"]["maxLength"] == MAX_NARRATION_CHARS


# --- with the platform's own processes ------------------------------------------------------


@pytest.mark.integration
def test_a_narration_over_http_with_a_real_worker(tmp_path: Path) -> None:
    """API, a worker on the speech queue, beat, Redis, PostgreSQL: ``Prefer: wait`` answers
    with the finished job, its audio downloads as a WAV, the same words again are cached."""
    with FakeGemini() as fake, running_stack(tmp_path, fake) as stack:
        fake.set_latency(0.3, "speech")
        stack.services.start_worker("speech", queues="speech")
        body = {"text": TEXT, "voiceStyle": "warm"}

        answer = stack.client.call("POST", "/narrations", json=body,
                                   headers={"Prefer": "wait=30"}, expect=200)
        job = answer.json()
        assert answer.headers["Preference-Applied"] == "wait=30"
        assert job["status"] == "succeeded", job
        audio = requests.get(job["result"]["audioUrl"], timeout=10)
        assert audio.status_code == 200
        assert audio.headers["Content-Type"] in ("audio/wav", "audio/x-wav")
        with wave.open(io.BytesIO(audio.content), "rb") as wav:
            seconds = wav.getnframes() / wav.getframerate()
        assert seconds == pytest.approx(job["result"]["durationSeconds"], abs=0.001)
        assert seconds == pytest.approx(len(TEXT) / FAKE_PACE, abs=0.001)

        cached = stack.client.call("POST", "/narrations", json=body,
                                   headers={"Prefer": "wait=30"}, expect=200).json()
        assert cached["result"] == {**job["result"], "cached": True}
        assert len(fake.requests_of("speech")) == 1


# --- retention ----------------------------------------------------------------------------------


def test_narration_files_live_while_a_result_or_the_cache_refers_to_them(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    ttl = RetentionSettings(job_ttl_s=60, audio_ttl_s=30, orphan_grace_s=0)
    first, again = narration_job(session, user), narration_job(session, user)
    for job in (first, again):
        run_job(str(job.id), narrate, context=ctx)
    key = f"narrations/{first.id}"
    orphan = ctx.storage.save(f"narrations/{uuid.uuid4()}", b"RIFF", "audio/wav")  # no job
    assert fresh(session, again).result["cached"] is True  # type: ignore[index]

    def prune() -> None:
        prune_retention(session, ctx.storage, ttl)
        session.expire_all()

    def finished_long_ago(*jobs: Job) -> None:
        session.execute(update(Job).where(Job.id.in_([j.id for j in jobs]))
                        .values(finished_at=utcnow() - timedelta(seconds=120)))
        session.commit()

    prune()
    assert has_file(ctx, key) and not has_file(ctx, orphan.public_id)
    # The job that spoke it is pruned: the cache entry keeps the file.
    finished_long_ago(first)
    prune()
    assert fresh(session, first).data_removed_at is not None
    assert has_file(ctx, key)
    # The cache entry expires: the cached job's result still shows the file.
    session.execute(update(CacheEntry).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    prune()
    assert has_file(ctx, key)
    # Nothing refers to it any more.
    finished_long_ago(again)
    prune()
    assert not has_file(ctx, key)
