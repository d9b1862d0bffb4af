"""Job execution in the worker, without a broker consumer: handlers run through ``run_job``
against real PostgreSQL (rolled back per test) and the real google-genai SDK talking to a local
fake Gemini. Covers success, fenced transitions, redelivery, retries, cancel, fan-out, reaper."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentSettings
from agents.media.local import LocalMediaStorage
from agents.provider import build_provider
from config import Settings
from models import Chapter, Job, Media, Note, Space, Story, User
from models.base import utcnow
from tests.audio import wav_tone
from tests.fakes.gemini_server import FakeGemini
from workers import lifecycle
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.parents import cancel_job
from workers.reaper import reap_stale_jobs
from workers.runner import run_job
from workers.tasks.illustration import illustrate
from workers.tasks.story import build_story
from workers.tasks.transcription import transcribe_media


@pytest.fixture
def gemini(fake_gemini: FakeGemini) -> FakeGemini:
    return fake_gemini


@pytest.fixture
def ctx(
    settings: Settings,
    session_factory: sessionmaker[Session],
    gemini: FakeGemini,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> WorkerContext:
    from workers.sending import install_enqueue_after_commit

    agent_settings = AgentSettings(
        gemini_api_key="test-key",
        transcription_timeout_ms=2000,
        illustration_timeout_ms=2000,
        story_timeout_ms=2000,
    )
    install_enqueue_after_commit(session_factory)
    return WorkerContext(
        settings=dataclasses.replace(settings, agents=agent_settings),
        engine=None,  # type: ignore[arg-type]
        session_factory=session_factory,
        provider=build_provider(agent_settings),
        storage=LocalMediaStorage(tmp_path / "media", "http://localhost/media"),
    )


@pytest.fixture
def user(session: Session) -> User:
    account = User(
        email=f"w-{uuid.uuid4().hex[:8]}@example.com",
        password_hash="x",
        token_version=0,
        role="user",
    )
    session.add(account)
    session.commit()
    return account


def audio_job(session: Session, ctx: WorkerContext, user: User, **job_args: Any) -> Job:
    """A transcription job for a fresh voice note (its own tone: no cache hit between jobs)."""
    media_id = uuid.uuid4()
    audio = wav_tone(seconds=0.1, frequency=200 + media_id.int % 2000)
    stored = ctx.storage.save(f"audio/{media_id}", audio, "audio/wav")
    media = Media(
        id=media_id,
        owner_id=user.id,
        kind="audio",
        storage_key=f"audio/{media_id}",
        url=stored.url,
        mime_type="audio/wav",
        size=stored.size,
        sha256=hashlib.sha256(audio).hexdigest(),
    )
    session.add(media)
    job = create_job(
        session,
        owner_id=user.id,
        kind="transcription",
        input={"mediaId": str(media_id)},
        **job_args,
    )
    session.commit()
    return job


def fresh(session: Session, job: Job) -> Job:
    found = session.get(Job, job.id, populate_existing=True)
    assert found is not None
    return found


def test_transcription_succeeds_and_records_usage(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    run_job(str(job.id), transcribe_media, context=ctx)
    done = fresh(session, job)
    assert done.status == "succeeded" and done.attempts == 1
    assert done.result is not None and done.result["transcription"] == gemini.transcription_text
    assert done.usage is not None and done.usage["model"] == "gemini-3.5-flash-lite"
    assert done.usage["inputTokens"] > 0
    media = session.get(Media, uuid.UUID(done.input["mediaId"]), populate_existing=True)
    assert media is not None and media.transcription == gemini.transcription_text
    assert done.progress == {"step": "done", "current": 1, "total": 1}


def test_redelivered_message_for_a_finished_job_does_nothing(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    run_job(str(job.id), transcribe_media, context=ctx)
    run_job(str(job.id), transcribe_media, context=ctx)
    assert fresh(session, job).attempts == 1
    assert len(gemini.requests) == 1


def test_a_running_job_cannot_be_claimed_twice(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    job = audio_job(session, ctx, user)
    assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is not None
    assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is None
    # Once its heartbeat is older than the timeout, the worker is presumed dead: take over.
    session.execute(
        update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(seconds=120))
    )
    session.commit()
    taken = lifecycle.start_job(session, job.id, heartbeat_timeout_s=60)
    assert taken is not None and taken.attempts == 2


def test_stale_attempt_cannot_finish_a_job(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    job = audio_job(session, ctx, user)
    first = lifecycle.start_job(session, job.id, heartbeat_timeout_s=60)
    assert first is not None
    stale_view = Job(id=first.id, attempts=first.attempts)
    session.execute(
        update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(seconds=120))
    )
    session.commit()
    assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is not None
    assert not lifecycle.succeed_job(session, stale_view, {"transcription": "late"})
    session.commit()
    assert fresh(session, job).status == "running"


def test_rate_limited_attempt_waits_the_retry_delay_without_spending_an_attempt(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    gemini.fail_next("transcription", 1, status=429, retry_delay="7s")
    before = utcnow()
    run_job(str(job.id), transcribe_media, context=ctx)
    waiting = fresh(session, job)
    assert waiting.status == "queued" and waiting.attempts == 0
    assert waiting.progress == {"step": "rate_limited", "current": 0, "total": 0}
    assert waiting.error is not None and waiting.error["code"] == "upstream_rate_limited"
    assert waiting.error["retryable"] is True
    assert waiting.enqueued_at is not None
    assert waiting.enqueued_at >= before + timedelta(seconds=7)
    run_job(str(job.id), transcribe_media, context=ctx)
    done = fresh(session, job)
    assert done.status == "succeeded" and done.attempts == 1 and done.error is None


def test_rate_limits_cost_attempts_once_the_job_has_waited_long_enough(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    session.execute(update(Job).where(Job.id == job.id)
                    .values(created_at=utcnow() - timedelta(minutes=11)))
    session.commit()
    gemini.fail_next("transcription", 1, status=429, retry_delay="1s")
    run_job(str(job.id), transcribe_media, context=ctx)
    retrying = fresh(session, job)
    assert retrying.status == "queued" and retrying.attempts == 1


def test_client_error_fails_at_once(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    gemini.fail_next("transcription", 1, status=400)
    run_job(str(job.id), transcribe_media, context=ctx)
    failed = fresh(session, job)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error is not None and failed.error["retryable"] is False
    assert "key" not in failed.error["message"].lower()


def test_attempts_are_bounded(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user, max_attempts=2)
    gemini.fail_next("transcription", 2, status=503)
    run_job(str(job.id), transcribe_media, context=ctx)
    assert fresh(session, job).status == "queued"
    run_job(str(job.id), transcribe_media, context=ctx)
    failed = fresh(session, job)
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error is not None and failed.error["code"] == "upstream_unavailable"


def test_upstream_hang_times_out_and_is_retried(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    gemini.hang_next("transcription", 10)
    run_job(str(job.id), transcribe_media, context=ctx)
    retrying = fresh(session, job)
    assert retrying.status == "queued"
    assert retrying.error is not None and retrying.error["code"] == "upstream_timeout"


def test_canceled_queued_job_never_runs(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    job = audio_job(session, ctx, user)
    cancel_job(session, job)
    run_job(str(job.id), transcribe_media, context=ctx)
    assert fresh(session, job).status == "canceled"
    assert gemini.requests == []


def make_space_with_notes(
    session: Session, user: User, *, photo_on_second: bool = False
) -> tuple[Space, list[Note]]:
    space = Space(owner_id=user.id, title="Alps")
    session.add(space)
    session.flush()
    notes = [
        Note(
            space_id=space.id,
            timestamp_ms=1_700_000_000_000 + i * 86_400_000,
            title=f"Day {i + 1}",
            text_content=f"Hiking day {i + 1}.",
            type="MOMENT",
        )
        for i in range(3)
    ]
    session.add_all(notes)
    session.flush()
    if photo_on_second:
        session.add(
            Media(
                owner_id=user.id,
                note_id=notes[1].id,
                kind="image",
                storage_key="image/x",
                url="http://localhost/media/image/x.png",
                mime_type="image/png",
                size=1,
                sha256="1" * 64,
            )
        )
    session.commit()
    return space, notes


def written_story(session: Session, ctx: WorkerContext, user: User, space: Space) -> Job:
    """A story job whose text is written: it now waits for its illustration children."""
    job = create_job(session, owner_id=user.id, kind="story", input={"spaceId": str(space.id)})
    session.commit()
    run_job(str(job.id), build_story, context=ctx)
    return job


def test_story_fans_out_illustrations_and_finishes_with_the_last(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    space, notes = make_space_with_notes(session, user, photo_on_second=True)
    job = create_job(
        session,
        owner_id=user.id,
        kind="story",
        input={"spaceId": str(space.id), "settings": {"storyMode": "chapter"}},
    )
    session.commit()
    run_job(str(job.id), build_story, context=ctx)
    running = fresh(session, job)
    assert running.status == "running"
    assert running.progress == {"step": "images", "current": 0, "total": 2}
    story = session.scalar(select(Story).where(Story.job_id == job.id))
    assert story is not None and story.status == "illustrating"  # text done, images pending
    chapters = session.scalars(
        select(Chapter).where(Chapter.story_id == story.id).order_by(Chapter.position)
    ).all()
    assert [c.source_note_id for c in chapters] == [n.id for n in notes]
    assert chapters[1].user_image_ids and chapters[1].generated_image_url is None
    session.refresh(space)
    assert space.current_story_version is None  # not published until complete

    children = session.scalars(select(Job).where(Job.parent_id == job.id)).all()
    assert len(children) == 2 and {c.kind for c in children} == {"illustration"}
    for child in children:
        run_job(str(child.id), illustrate, context=ctx)
    done = fresh(session, job)
    assert done.status == "succeeded"
    assert done.result is not None and done.result["illustrations"]["succeeded"] == 2
    assert done.progress == {"step": "done", "current": 2, "total": 2}
    session.refresh(space)
    assert space.current_story_version == 1
    for chapter in chapters:
        session.refresh(chapter)
    assert chapters[0].generated_image_url and chapters[2].generated_image_url
    assert chapters[1].generated_image_url is None


def test_reaper_completes_a_story_whose_completion_was_lost(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    space, _ = make_space_with_notes(session, user)
    job = written_story(session, ctx, user, space)
    # Every illustration finished, but the worker of the last one died before settling the story.
    long_ago = utcnow() - timedelta(hours=1)
    session.execute(update(Job).where(Job.parent_id == job.id).values(status="succeeded"))
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=long_ago))
    session.commit()
    report = reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=60)
    assert report.completed_parents == 1
    assert fresh(session, job).status == "succeeded"
    session.refresh(space)
    assert space.current_story_version == 1
    assert len(session.scalars(select(Story).where(Story.space_id == space.id)).all()) == 1


def test_reaper_resends_lost_messages_and_recovers_dead_workers(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    lost_message = audio_job(session, ctx, user)
    dead_worker = audio_job(session, ctx, user)
    exhausted = audio_job(session, ctx, user, max_attempts=1)
    long_ago = utcnow() - timedelta(minutes=10)
    session.execute(
        update(Job).where(Job.id == lost_message.id).values(created_at=long_ago, enqueued_at=None)
    )
    for job in (dead_worker, exhausted):
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status="running", attempts=1, heartbeat_at=long_ago)
        )
    session.commit()

    report = reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=60)
    assert report.resent == 1 and report.requeued == 1 and report.failed == 1
    assert fresh(session, lost_message).enqueued_at is not None
    requeued = fresh(session, dead_worker)
    assert requeued.status == "queued"
    assert requeued.error is not None and requeued.error["code"] == "worker_lost"
    assert fresh(session, exhausted).status == "failed"
    # A second pass right away has nothing to do.
    again = reap_stale_jobs(session, resend_after_s=30, heartbeat_timeout_s=60)
    assert (again.resent, again.requeued, again.failed) == (0, 0, 0)


def test_worker_pools_follow_the_command_line_concurrency() -> None:
    from types import SimpleNamespace

    from celery import Celery

    from workers import context
    from workers.process import _size_pools_to_concurrency

    app = Celery("pool-sizing", broker="redis://127.0.0.1:6379/13")
    app.conf.broker_transport_options = {"max_connections": 10, "visibility_timeout": 3600}
    try:
        _size_pools_to_concurrency(SimpleNamespace(app=app, concurrency=32))
        assert app.conf.broker_pool_limit == 36
        assert app.conf.broker_transport_options["max_connections"] == 72
        assert app.conf.broker_transport_options["visibility_timeout"] == 3600
        assert context._concurrency == 32
        assert context.db_pool_size(32) == context.MAX_DB_POOL  # capped: PostgreSQL's limit
        assert context.db_pool_size(4) == 6
    finally:
        context.set_concurrency(None)


def test_canceling_a_story_waiting_on_illustrations_cancels_it_and_its_children(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    space, _ = make_space_with_notes(session, user)
    job = written_story(session, ctx, user, space)
    children = session.scalars(select(Job).where(Job.parent_id == job.id)).all()
    # One illustration is already being drawn when the user cancels.
    assert lifecycle.start_job(session, children[0].id, heartbeat_timeout_s=60) is not None

    cancel_job(session, fresh(session, job))
    assert fresh(session, job).status == "running"  # waits for the drawing one to stop
    assert {fresh(session, c).status for c in children[1:]} == {"canceled"}

    run_job(str(children[0].id), illustrate, context=ctx)  # a duplicate message: not claimable
    from workers.parents import on_child_finished

    session.execute(update(Job).where(Job.id == children[0].id).values(status="canceled"))
    session.commit()
    on_child_finished(session, job.id)
    assert fresh(session, job).status == "canceled"
    story = session.scalar(select(Story).where(Story.job_id == job.id))
    assert story is not None and story.status == "canceled"
    session.refresh(space)
    assert space.current_story_version is None


def test_a_story_waiting_on_children_is_never_taken_over(
    session: Session, ctx: WorkerContext, user: User
) -> None:
    space, _ = make_space_with_notes(session, user)
    job = written_story(session, ctx, user, space)
    session.execute(update(Job).where(Job.id == job.id)
                    .values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is None
    assert fresh(session, job).attempts == 1


def test_heartbeat_pump_beats_only_the_attempts_it_runs(
    session: Session, session_factory: sessionmaker[Session], ctx: WorkerContext, user: User
) -> None:
    from workers.heartbeat import HeartbeatPump

    ours = audio_job(session, ctx, user)
    reclaimed = audio_job(session, ctx, user)
    for job in (ours, reclaimed):
        assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is not None
    long_ago = utcnow() - timedelta(minutes=5)
    session.execute(update(Job).values(heartbeat_at=long_ago, updated_at=long_ago))
    session.commit()
    pump = HeartbeatPump(session_factory, interval_s=3600)  # beat() by hand, no thread timing
    pump.track(ours.id, 1)
    pump.track(reclaimed.id, 0)  # another worker has since taken it over as attempt 1
    try:
        assert pump.beat() == 1
    finally:
        pump.stop()
    beaten = fresh(session, ours).heartbeat_at
    assert beaten is not None and beaten > long_ago + timedelta(minutes=4)
    # A beat is invisible to clients: updatedAt (and the job's ETag) did not move.
    assert fresh(session, ours).updated_at == long_ago
    assert fresh(session, reclaimed).heartbeat_at == long_ago


def test_heartbeat_pump_beats_only_what_a_live_thread_runs(
    session: Session, session_factory: sessionmaker[Session], ctx: WorkerContext, user: User
) -> None:
    """A job tracked by a thread that ended without untracking it is not beaten, and a job
    tracked twice (a reclaimed attempt in the same process) keeps the beat of the run that
    goes on when the other one untracks."""
    import threading

    from workers.heartbeat import HeartbeatPump

    orphan, twice = audio_job(session, ctx, user), audio_job(session, ctx, user)
    for job in (orphan, twice):
        assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=60) is not None
    pump = HeartbeatPump(session_factory, interval_s=3600)  # beat() by hand
    try:
        gone = threading.Thread(target=pump.track, args=(orphan.id, 1))
        gone.start()
        gone.join()  # the thread ended; its job was never untracked
        first = pump.track(twice.id, 1)
        pump.track(twice.id, 1)  # the same attempt run again by this thread after an outage
        pump.untrack(first)
        assert pump.running() == {(twice.id, 1)}
        long_ago = utcnow() - timedelta(minutes=5)
        session.execute(update(Job).values(heartbeat_at=long_ago))
        session.commit()
        assert pump.beat() == 1
    finally:
        pump.stop()
    assert fresh(session, orphan).heartbeat_at == long_ago
    beaten = fresh(session, twice).heartbeat_at
    assert beaten is not None and beaten > long_ago


def test_throttled_job_waits_for_quota_without_spending_an_attempt(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    from workers.ratelimit import LocalRateLimiter, ModelLimit

    # One request a minute: the first job takes it, the second must come back in ~60 s.
    limited = dataclasses.replace(
        ctx, limiter=LocalRateLimiter({"gemini-3.5-flash-lite": ModelLimit(1, None)})
    )
    first, second = audio_job(session, ctx, user), audio_job(session, ctx, user)
    run_job(str(first.id), transcribe_media, context=limited)
    before = utcnow()
    run_job(str(second.id), transcribe_media, context=limited)
    assert fresh(session, first).status == "succeeded"
    waiting = fresh(session, second)
    assert waiting.status == "queued" and waiting.attempts == 0 and waiting.error is None
    assert waiting.progress == {"step": "waiting_for_quota", "current": 0, "total": 0}
    assert waiting.enqueued_at is not None
    assert waiting.enqueued_at > before + timedelta(seconds=50)
    assert len(gemini.requests_of("transcription")) == 1


def test_identical_work_in_flight_is_joined_not_repeated(
    session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini
) -> None:
    from workers.cache import cache_key, lookup_or_lease

    first = audio_job(session, ctx, user)
    media = session.get(Media, uuid.UUID(first.input["mediaId"]))
    assert media is not None
    twin = create_job(session, owner_id=user.id, kind="transcription",
                      input={"mediaId": str(media.id)})
    session.commit()
    transcriber = ctx.provider.transcriber
    key = cache_key("transcription", transcriber.model, transcriber.prompt_version,
                    {"sha256": media.sha256, "mimeType": media.mime_type})
    # The first job holds the lease, as if its model call were under way right now.
    assert lookup_or_lease(session, key, agent="transcription", model=transcriber.model,
                           job_id=first.id, force=False).owner
    run_job(str(twin.id), transcribe_media, context=ctx)
    waiting = fresh(session, twin)
    assert waiting.status == "queued" and waiting.attempts == 0
    assert waiting.progress is not None
    assert waiting.progress["step"] == "waiting_for_identical_job"
    assert gemini.requests == []

    run_job(str(first.id), transcribe_media, context=ctx)
    run_job(str(twin.id), transcribe_media, context=ctx)
    first_result, twin_result = fresh(session, first).result, fresh(session, twin).result
    assert first_result is not None and twin_result == first_result | {"cached": True}
    assert len(gemini.requests) == 1
