"""Narrator clips in the worker: the job starts one video generation (the real google-genai SDK
talking to the fake Gemini's Interactions API), records it, waits for it by re-scheduling
itself, and stores the clip on the moment. Handlers run through ``run_job`` against real
PostgreSQL; a killed worker is played by claiming a job and abandoning it, as a dead process
would."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import time
import uuid
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentSettings
from agents.film import ffmpeg_info
from agents.film.inputs import ClipInfo, parse_clip_info
from agents.media.local import LocalMediaStorage
from agents.provider import build_provider
from config import NarratorSettings, Settings
from models import Job, Media, Note, Space, User
from models.base import utcnow
from tests.fakes.gemini_server import FakeGemini
from tests.test_worker_jobs import fresh
from workers import lifecycle
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.job_resource import JobSchema
from workers.parents import cancel_job
from workers.reaper import reap_stale_jobs
from workers.retention import clip_key
from workers.runner import run_job
from workers.tasks.narrator_clip import make_clip
from workers.usage import usage_since

SCRIPT = "Hello! This was our weekend in Porto, and the river was gold at sunset."


def photo_bytes(colour: tuple[int, int, int] = (190, 120, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), colour).save(buffer, "JPEG")
    return buffer.getvalue()


def context(settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path,
            agents: AgentSettings) -> WorkerContext:
    from workers.sending import install_enqueue_after_commit

    install_enqueue_after_commit(session_factory)
    return WorkerContext(
        settings=dataclasses.replace(settings, agents=agents, narrator=NarratorSettings(
            poll_min_s=1.0, poll_max_s=5.0, estimate_s=30, max_wait_s=120)),
        engine=None,  # type: ignore[arg-type]
        session_factory=session_factory,
        provider=build_provider(agents),
        storage=LocalMediaStorage(tmp_path / "media", "http://localhost/media"),
    )


@pytest.fixture
def ctx(settings: Settings, session_factory: sessionmaker[Session], fake_gemini: FakeGemini,
        redis_client: redis.Redis, tmp_path: Path) -> WorkerContext:
    return context(settings, session_factory, tmp_path, AgentSettings(
        gemini_api_key="test-key", video_timeout_ms=5000, video_max_bytes=8 * 1024 * 1024))


@pytest.fixture
def offline_ctx(settings: Settings, session_factory: sessionmaker[Session],
                redis_client: redis.Redis, tmp_path: Path) -> WorkerContext:
    return context(settings, session_factory, tmp_path, AgentSettings(gemini_api_key=None))


@pytest.fixture
def note(session: Session) -> Note:
    user = User(email=f"clip-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
    session.add(user)
    session.flush()
    space = Space(owner_id=user.id, title="Porto")
    session.add(space)
    session.flush()
    moment = Note(space_id=space.id, timestamp_ms=1_700_000_000_000, title="Sunset", media=[])
    session.add(moment)
    session.commit()
    return moment


def owner_of(session: Session, note: Note) -> uuid.UUID:
    space = session.get(Space, note.space_id)
    assert space is not None
    return space.owner_id


def clip_job(session: Session, ctx: WorkerContext, note: Note, **extra: Any) -> Job:
    """A narrator_clip job for a photo stored on the moment, as the API makes it."""
    owner = owner_of(session, note)
    media_id = uuid.uuid4()
    data = photo_bytes()
    stored = ctx.storage.save(f"image/{media_id}", data, "image/jpeg")
    session.add(Media(id=media_id, owner_id=owner, note_id=note.id, kind="image",
                      storage_key=f"image/{media_id}", url=stored.url, mime_type="image/jpeg",
                      size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    job = create_job(session, owner_id=owner, kind="narrator_clip", input={
        "mediaId": str(media_id), "script": SCRIPT, "durationSeconds": 4,
        "aspectRatio": "16:9", "noteId": str(note.id), **extra.pop("input", {})}, **extra)
    session.commit()
    return job


def run(ctx: WorkerContext, job: Job) -> None:
    run_job(str(job.id), make_clip, context=ctx)


def make_due(session: Session, job: Job) -> None:
    """The re-scheduled job's message arrives (its countdown is what a test does not wait)."""
    session.execute(update(Job).where(Job.id == job.id).values(enqueued_at=utcnow()))
    session.commit()


def start_then_look(session: Session, ctx: WorkerContext, job: Job) -> None:
    """Start the clip's generation, then take the (due) next look at it."""
    run(ctx, job)
    make_due(session, job)
    run(ctx, job)


def probe(path: Path) -> ClipInfo:
    """What ffmpeg itself reads in a stored file (the binary the platform uses: system or the
    imageio-ffmpeg wheel's; ffprobe may not be installed)."""
    done = subprocess.run([ffmpeg_info().path, "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True, check=False)
    info = parse_clip_info(done.stderr.splitlines())
    assert info is not None, done.stderr
    return info


def stored_path(ctx: WorkerContext, key: str) -> Path:
    storage = ctx.storage
    assert isinstance(storage, LocalMediaStorage)
    found = [p for p in storage.media_dir.glob(f"{key}.*")]
    assert len(found) == 1, found
    return found[0]


def test_a_clip_is_started_once_polled_without_a_thread_and_stored_on_the_moment(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.generation_seconds = 1.5
    job = clip_job(session, ctx, note)
    labels = {"agent": "narrator_clip", "model": "gemini-omni-1.2-flash"}
    seconds_before = REGISTRY.get_sample_value("lifetales_model_video_seconds_total", labels) or 0
    cost_before = REGISTRY.get_sample_value("lifetales_model_cost_usd_total", labels) or 0

    run(ctx, job)  # starts the generation and re-schedules itself
    waiting = fresh(session, job)
    assert waiting.status == "queued" and waiting.attempts == 0  # waiting spends no attempt
    assert waiting.progress is not None and waiting.progress["step"] == "generating"
    assert waiting.progress["total"] == 30  # the estimate, in seconds
    assert waiting.progress["estimatedSecondsRemaining"] == 30
    operation = waiting.upstream_operation
    assert operation is not None and operation["state"] == "running"
    assert operation["model"] == "gemini-omni-1.2-flash" and operation["id"].startswith("v1_")
    assert waiting.enqueued_at is not None and waiting.enqueued_at > utcnow()  # polled later
    # What was asked of the model: image to video, in the background, as the SDK sends it.
    (start,) = fake_gemini.requests_of("video")
    assert start.path == "/v1/interactions" and start.body["background"] is True
    assert start.body["generation_config"] == {"video_config": {"task": "image_to_video"}}
    assert start.body["response_format"] == {"type": "video", "aspect_ratio": "16:9",
                                             "duration": "4s", "resolution": "720p",
                                             "delivery": "inline"}
    content = start.body["input"][0]["content"]
    assert SCRIPT in content[0]["text"] and content[1]["type"] == "image"
    assert base64.b64decode(content[1]["data"]) == photo_bytes()

    make_due(session, job)
    run(ctx, job)  # too early: still generating, re-scheduled again
    assert fresh(session, job).status == "queued"
    time.sleep(1.6)
    make_due(session, job)
    run(ctx, job)  # done: fetched, checked, stored

    done = fresh(session, job)
    assert done.status == "succeeded", done.error
    assert fake_gemini.video.starts == 1 and fake_gemini.video.polls == 2
    result = done.result or {}
    assert (result["durationSeconds"], result["width"], result["height"]) == (4.0, 1280, 720)
    assert result["hasAudio"] is True and result["noteId"] == str(note.id)
    assert result["videoUrl"].endswith(f"/media/{clip_key(job.id)}.mp4")
    assert result["posterUrl"].endswith(f"/media/narrator-clips/{job.id}/poster.jpg")
    probed = probe(stored_path(ctx, clip_key(job.id)))
    assert probed.has_video and probed.has_audio and (probed.width, probed.height) == (1280, 720)
    assert abs(probed.seconds - 4.0) < 0.2
    poster = Image.open(stored_path(ctx, f"narrator-clips/{job.id}/poster"))
    assert poster.size == (1280, 720)
    # On the moment as a video: what the note's videoFileIds lists.
    video = session.get(Media, job.id, populate_existing=True)
    assert video is not None and video.kind == "video" and video.note_id == note.id
    assert video.storage_key == clip_key(job.id) and video.mime_type == "video/mp4"
    # Usage and cost: billed by the second of video.
    usage = done.usage or {}
    assert usage["model"] == "gemini-omni-1.2-flash" and usage["inputTokens"] > 1290
    assert (usage["outputTokens"], usage["calls"], usage["videoSeconds"]) == (0, 1, 4.0)
    (row,) = [r for r in usage_since(session, utcnow() - timedelta(hours=1))
              if r.agent == "narrator_clip"]
    assert row.video_seconds == 4.0 and row.cost_usd is not None
    assert row.cost_usd == pytest.approx(4.0 * 0.07 + row.input_tokens * 1.5e-6)
    shown = JobSchema().dump(done)["upstreamOperation"]
    assert shown["state"] == "succeeded" and shown["billed"] is True and "id" not in shown
    # The metrics: seconds of video and their cost.
    seconds = REGISTRY.get_sample_value("lifetales_model_video_seconds_total", labels)
    cost = REGISTRY.get_sample_value("lifetales_model_cost_usd_total", labels)
    assert seconds == seconds_before + 4.0
    assert cost == pytest.approx(cost_before + row.cost_usd)


def test_a_worker_killed_between_start_and_done_resumes_polling_and_never_starts_again(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.generation_seconds = 1.0
    job = clip_job(session, ctx, note)
    run(ctx, job)
    operation = fresh(session, job).upstream_operation
    assert operation is not None

    # A worker claims the due job to poll it and dies (SIGKILL): the job stays running, its
    # heartbeat goes stale, and the reaper puts it back in the queue.
    make_due(session, job)
    claimed = lifecycle.start_job(session, job.id, heartbeat_timeout_s=30)
    assert claimed is not None and claimed.status == "running"
    session.execute(update(Job).where(Job.id == job.id)
                    .values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    report = reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=30)
    assert report.requeued == 1
    time.sleep(1.1)

    run(ctx, job)  # the next worker polls the operation the dead one was following
    done = fresh(session, job)
    assert done.status == "succeeded", done.error
    assert fake_gemini.video.starts == 1
    assert (done.upstream_operation or {})["id"] == operation["id"]


def test_a_worker_killed_inside_the_start_call_never_starts_a_second_generation(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    from workers.runner import JobRun
    from workers.upstream_ops import mark_starting

    job = clip_job(session, ctx, note)
    # The attempt committed "starting" and died before the answer of the start came back.
    claimed = lifecycle.start_job(session, job.id, heartbeat_timeout_s=30)
    assert claimed is not None
    mark_starting(JobRun(ctx, session, claimed), "gemini-omni-1.2-flash")
    session.execute(update(Job).where(Job.id == job.id)
                    .values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=30)

    run(ctx, job)
    failed = fresh(session, job)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "upstream_unconfirmed" and not failed.error["retryable"]
    assert "never paid for twice" in failed.error["message"]
    assert fake_gemini.video.starts == 0  # not started again: possibly paid once, never twice
    shown = JobSchema().dump(failed)["upstreamOperation"]
    assert shown["state"] == "unconfirmed" and shown["billed"] is None


def test_a_start_that_is_never_answered_is_not_retried(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.drop_next("video")  # Google may have received it: the answer never came
    job = clip_job(session, ctx, note)
    run(ctx, job)
    failed = fresh(session, job)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "upstream_unconfirmed"
    assert len(fake_gemini.requests_of("video")) == 1  # the SDK did not retry it either


def test_a_refused_start_is_retried_as_a_new_start(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.fail_next("video", status=503)
    job = clip_job(session, ctx, note)
    run(ctx, job)
    retrying = fresh(session, job)
    assert retrying.status == "queued" and retrying.attempts == 1
    assert (retrying.upstream_operation or {})["state"] == "not_started"
    assert len(fake_gemini.requests_of("video")) == 1  # one request: the SDK retries nothing
    make_due(session, job)
    run(ctx, job)
    waiting = fresh(session, job)
    assert (waiting.upstream_operation or {})["state"] == "running"
    assert fake_gemini.video.starts == 1


def test_cancel_mid_generation_stops_polling_and_says_the_generation_is_billed(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.generation_seconds = 60
    job = clip_job(session, ctx, note)
    run(ctx, job)
    cancel_job(session, fresh(session, job))  # waiting between polls: no worker holds it
    canceled = fresh(session, job)
    assert canceled.status == "canceled"
    polls = fake_gemini.video.polls
    make_due(session, job)
    run(ctx, job)  # its next message finds it canceled: no poll, no start
    assert fake_gemini.video.polls == polls and fake_gemini.video.starts == 1
    shown = JobSchema().dump(fresh(session, job))["upstreamOperation"]
    assert shown == {"model": "gemini-omni-1.2-flash", "state": "abandoned",
                     "startedAt": shown["startedAt"], "billed": True, "starts": 1}


def test_a_deadline_mid_generation_stops_the_job_at_its_next_look(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.generation_seconds = 60
    job = clip_job(session, ctx, note)
    run(ctx, job)
    session.execute(update(Job).where(Job.id == job.id)
                    .values(deadline_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=30)
    ended = fresh(session, job)
    assert ended.status == "canceled" and (ended.error or {})["reason"] == "deadline"
    shown = JobSchema().dump(ended)["upstreamOperation"]
    assert shown["state"] == "abandoned" and shown["billed"] is True


def test_a_filtered_clip_fails_blocked_with_the_reasons(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.next_outcomes("filtered")
    job = clip_job(session, ctx, note)
    start_then_look(session, ctx, job)
    failed = fresh(session, job)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["code"] == "blocked" and failed.error["retryable"] is False
    assert "celebrity" in failed.error["message"] and "RAI_MEDIA_FILTERED" in failed.error[
        "message"]
    assert fake_gemini.video.starts == 1
    shown = JobSchema().dump(failed)["upstreamOperation"]
    assert shown["state"] == "failed" and shown["billed"] is False
    assert session.get(Media, job.id) is None


def test_an_operation_error_maps_to_the_usual_codes(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.next_outcomes("error")  # INTERNAL: retryable, a new generation
    job = clip_job(session, ctx, note)
    start_then_look(session, ctx, job)
    retrying = fresh(session, job)
    assert retrying.status == "queued" and (retrying.error or {})["code"] == "upstream_unavailable"
    make_due(session, job)
    run(ctx, job)  # starts again: the failed one made nothing to pay for
    make_due(session, job)
    run(ctx, job)
    assert fresh(session, job).status == "succeeded"
    assert fake_gemini.video.starts == 2

    fake_gemini.video.next_outcomes("invalid")  # INVALID_ARGUMENT: fails at once
    other = clip_job(session, ctx, note)
    start_then_look(session, ctx, other)
    failed = fresh(session, other)
    assert failed.status == "failed" and (failed.error or {})["code"] == "upstream_bad_request"


def test_the_size_cap_refuses_a_clip_too_large(
    session: Session, settings: Settings, session_factory: sessionmaker[Session],
    fake_gemini: FakeGemini, note: Note, tmp_path: Path,
) -> None:
    capped = context(settings, session_factory, tmp_path, AgentSettings(
        gemini_api_key="test-key", video_max_bytes=1024 * 1024))
    fake_gemini.video.min_bytes = 3 * 1024 * 1024
    for delivery in ("inline", "uri"):
        fake_gemini.video.delivery = delivery
        job = clip_job(session, capped, note)
        start_then_look(session, capped, job)
        failed = fresh(session, job)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["code"] == "media_rejected" and "1 MB" in failed.error["message"]
        # The generation was done (and billed); the oversized file is never stored.
        assert JobSchema().dump(failed)["upstreamOperation"]["billed"] is True
        assert session.get(Media, job.id) is None
    assert fake_gemini.video.starts == 2 and fake_gemini.video.downloads == 1


def test_a_uri_delivered_clip_is_downloaded_through_the_files_api(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.video.delivery = "uri"
    job = clip_job(session, ctx, note)
    start_then_look(session, ctx, job)
    assert fresh(session, job).status == "succeeded"
    assert fake_gemini.video.downloads == 1


def test_a_retired_video_model_moves_to_its_fallback(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.models.retire(["gemini-omni-1.2-flash"])
    job = clip_job(session, ctx, note)
    start_then_look(session, ctx, job)
    done = fresh(session, job)
    assert done.status == "succeeded" and (done.usage or {})["model"] == "gemini-omni-1.1-flash"


def test_the_offline_narrator_makes_a_real_clip_from_the_photo(
    session: Session, offline_ctx: WorkerContext, note: Note
) -> None:
    job = clip_job(session, offline_ctx, note, input={"durationSeconds": 3})
    run(offline_ctx, job)  # made at once: nothing upstream to wait for
    done = fresh(session, job)
    assert done.status == "succeeded" and done.attempts == 1, done.error
    assert done.upstream_operation is None
    probed = probe(stored_path(offline_ctx, clip_key(job.id)))
    espeak = shutil.which("espeak-ng") is not None
    assert probed.has_video and probed.has_audio is espeak  # narrated when espeak-ng is there
    assert (probed.width, probed.height) == (1280, 720)
    assert (done.result or {})["hasAudio"] is espeak
    assert abs(probed.seconds - 3.0) < 0.2


def test_the_video_model_is_checked_like_every_agents(
    settings: Settings, session_factory: sessionmaker[Session], fake_gemini: FakeGemini
) -> None:
    from agents.models import availability
    from tests.conftest import FAKE_GEMINI_KEY
    from tests.test_model_lifecycle import ready_app, run_models_cli

    agents = AgentSettings(gemini_api_key=FAKE_GEMINI_KEY)
    video = ready_app(settings, session_factory, agents).test_client().get(
        "/ready").get_json()["models"]["video"]
    assert video == {"model": "gemini-omni-1.2-flash", "fallbacks": ["gemini-omni-1.1-flash"],
                     "state": "ok", "answering": "gemini-omni-1.2-flash",
                     "found": {"gemini-omni-1.2-flash": True, "gemini-omni-1.1-flash": True}}

    availability.clear()
    fake_gemini.models.retire(["gemini-omni-1.2-flash", "gemini-omni-1.1-flash"])
    answer = ready_app(settings, session_factory, agents).test_client().get("/ready")
    assert answer.status_code == 503
    assert answer.get_json()["models"]["video"]["state"] == "unavailable"
    cli = run_models_cli({"GOOGLE_GEMINI_BASE_URL": fake_gemini.base_url,
                          "GEMINI_API_KEY": FAKE_GEMINI_KEY,
                          "GEMINI_MODEL_VIDEO": "gemini-omni-flash-preview",
                          "GEMINI_FALLBACK_MODELS_VIDEO": "none"})
    assert cli.returncode == 1 and "no working model for: video" in cli.stderr
    report = {a["agent"]: a for a in json.loads(cli.stdout)["agents"]}
    assert report["video"]["models"][0]["model"] == "gemini-omni-flash-preview"
    assert report["video"]["models"][0]["found"] is False  # shut down on 2026-09-30


def test_a_start_on_a_video_model_with_no_working_fallback_fails_model_unavailable(
    session: Session, ctx: WorkerContext, note: Note, fake_gemini: FakeGemini
) -> None:
    fake_gemini.models.retire(["gemini-omni-1.2-flash", "gemini-omni-1.1-flash"])
    job = clip_job(session, ctx, note)
    run(ctx, job)
    failed = fresh(session, job)
    assert failed.status == "failed" and (failed.error or {})["code"] == "model_unavailable"
    assert "GEMINI_MODEL_VIDEO" in (failed.error or {})["message"]
    assert fake_gemini.video.starts == 0
    assert JobSchema().dump(failed)["upstreamOperation"]["billed"] is False


def test_polls_grow_apart_and_one_falls_on_the_estimate() -> None:
    from workers.upstream_ops import poll_delay

    looks, waited = [], 5.0
    while waited < 400:
        looks.append(round(waited, 1))
        waited += poll_delay(waited, minimum=5, maximum=30, growth=0.2, estimate=60)
    assert looks[:10] == [5, 10, 15, 20, 25, 30, 36, 43.2, 51.8, 60]  # one look at 60 s
    gaps = [b - a for a, b in pairwise(looks)]
    assert all(5 <= gap <= 30 for gap in gaps) and gaps[-1] == 30
    before, after = gaps[:8], gaps[9:]  # gaps[8] is shortened to land on the estimate
    assert before == sorted(before) and after == sorted(after)  # growing
    assert len(looks) < 25  # a few looks per minute, never a busy loop


def test_a_film_opens_with_its_narrator_clip(
    session: Session, offline_ctx: WorkerContext, note: Note, tmp_path: Path
) -> None:
    from models import Chapter, Film, Story
    from tests.audio import wav_tone
    from workers.runner import JobRun
    from workers.tasks.film import film_cache_payload
    from workers.tasks.render import render

    clip = clip_job(session, offline_ctx, note, input={"durationSeconds": 3})
    run(offline_ctx, clip)
    video = session.get(Media, clip.id)
    assert video is not None
    owner = owner_of(session, note)
    story = Story(space_id=note.space_id, version=1, job_id=uuid.uuid4(), status="ready",
                  settings={}, generated_at=utcnow(),
                  chapters=[Chapter(position=0, title="One", content="We walked.",
                                    user_image_ids=[])])
    session.add(story)
    session.flush()

    def rendered(intro: bool) -> dict[str, Any]:
        """Render a one-scene film (2 s of narration), opening with the clip or not."""
        film_job = create_job(session, owner_id=owner, kind="film", input={
            "spaceId": str(note.space_id), "storyId": str(story.id), "settings": {},
            **({"narratorClipId": str(clip.id), "introClipKey": video.storage_key,
                "introClipSha256": video.sha256} if intro else {})})
        lifecycle_running = update(Job).where(Job.id == film_job.id).values(
            status="running", attempts=1, started_at=utcnow(), heartbeat_at=utcnow())
        session.execute(lifecycle_running)
        film = Film(space_id=note.space_id, story_id=story.id, version=2 if intro else 1,
                    job_id=film_job.id, status="rendering", settings={}, script={
                        "title": "T", "musicMood": "calm", "totalDurationSeconds": 8,
                        "scenes": [{"chapterId": str(story.chapters[0].id),
                                    "narrationText": "We walked.", "visualDescription": "x",
                                    "durationSeconds": 8, "transition": "fade"}]})
        session.add(film)
        key = f"narrations/{uuid.uuid4()}"
        stored = offline_ctx.storage.save(key, wav_tone(2.0), "audio/wav")
        create_job(session, owner_id=owner, kind="narration", parent_id=film_job.id,
                   input={"sceneIndex": 0})
        session.execute(update(Job).where(Job.parent_id == film_job.id).values(
            status="succeeded", result={"audioUrl": stored.url, "durationSeconds": 2.0}))
        render_job = create_job(session, owner_id=owner, kind="render", parent_id=film_job.id,
                                input={"filmId": str(film.id)})
        session.commit()
        if intro:
            payload = film_cache_payload(JobRun(offline_ctx, session, film_job), story, {})
            assert payload["introClip"] == video.sha256  # another clip, another film
        run_job(str(render_job.id), render, context=offline_ctx)
        done = fresh(session, render_job)
        assert done.status == "succeeded", done.error
        return done.result or {}

    without, opened = rendered(False), rendered(True)
    # The clip plays first, whole, before the scene (an intro ends with a short transition).
    assert opened["durationSeconds"] == pytest.approx(without["durationSeconds"] + 3.0, abs=1.0)
    assert opened["scenes"][0]["startSeconds"] >= 2.0 > without["scenes"][0]["startSeconds"]
