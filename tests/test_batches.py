"""Batch regeneration: the API an admin drives, and the batch and its story children run through
``run_job`` against real PostgreSQL and the real SDK talking to the fake Gemini (no broker
consumer: queued jobs are run in turn, as a worker would). Every regenerated space gets exactly
one new story version; cancel stops the rest; retry-failed re-runs only the failures; a crash
mid-batch (a child claimed by a worker that died, the batch task stopped right after a chunk
committed) loses nothing and duplicates nothing."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from config import BatchSettings, WebhookSettings
from models import Job, Note, Space, Story, User, WebhookDelivery
from models.base import utcnow
from models.db import make_engine
from tests.conftest import REDIS_BASE, assert_error, register
from tests.fakes.gemini_server import FakeGemini
from tests.test_api_admin import make_admin
from tests.test_worker_jobs import ctx, gemini  # noqa: F401 - the worker context fixtures
from workers import lifecycle
from workers.batch import batch_report, fan_out_chunk
from workers.context import WorkerContext
from workers.ratelimit import LocalRateLimiter, ModelLimit, RateLimiter, RedisRateLimiter
from workers.reaper import reap_stale_jobs
from workers.runner import Handler, run_job
from workers.tasks.batch import run_story_batch
from workers.tasks.illustration import illustrate
from workers.tasks.story import build_story

WINDOW = 3
HANDLERS: dict[str, Handler] = {"story": build_story, "illustration": illustrate,
                                "story_batch": run_story_batch}


@pytest.fixture
def worker(ctx: WorkerContext, fake_gemini: FakeGemini) -> WorkerContext:  # noqa: F811
    """A worker whose batches keep at most WINDOW children unfinished (several chunks)."""
    return dataclasses.replace(
        ctx, settings=dataclasses.replace(ctx.settings, batch=BatchSettings(window=WINDOW)))


@pytest.fixture
def admin(client: FlaskClient, session: Session) -> dict[str, str]:
    return make_admin(client, session)


def owner(session: Session) -> User:
    user = User(email=f"o-{uuid.uuid4().hex[:8]}@example.com", password_hash="x",
                token_version=0, role="user")
    session.add(user)
    session.commit()
    return user


def spaces_with_a_story(session: Session, user: User, count: int, notes: int = 2) -> list[Space]:
    """Spaces with moments and a published story version 1."""
    spaces = [Space(owner_id=user.id, title=f"Trip {i}") for i in range(count)]
    session.add_all(spaces)
    session.flush()
    for n, space in enumerate(spaces):
        session.add_all(Note(space_id=space.id, timestamp_ms=1_700_000_000_000 + i,
                             title=f"Day {i}", text_content=f"Walk {n}.{i} by the river.")
                        for i in range(notes))
        session.add(Story(space_id=space.id, version=1, job_id=uuid.uuid4(), status="ready",
                          settings={}, generated_at=utcnow()))
        space.current_story_version = 1
    session.commit()
    return spaces


def submit_batch(client: FlaskClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/batches/story-regenerations", json=body, headers=admin)
    assert response.status_code == 202, response.get_json()
    job: dict[str, Any] = response.get_json()
    assert job["kind"] == "story_batch" and job["status"] == "queued"
    return job


def text_only_batch(client: FlaskClient, session: Session, admin: dict[str, str],
                    count: int) -> tuple[list[Space], dict[str, Any]]:
    """``count`` spaces of a new owner and a batch over them that draws no images."""
    spaces = spaces_with_a_story(session, owner(session), count)
    return spaces, submit_batch(client, admin, spaceIds=[str(s.id) for s in spaces],
                                settings={"imagesPerChapter": 0})


def run_queued(session: Session, worker: WorkerContext, rounds: int = 100) -> int:
    """Run queued jobs as workers would (children before the batch) until none is left;
    returns how many runs it took."""
    runs = 0
    for _ in range(rounds):
        queued = session.execute(select(Job.id, Job.kind).where(
            Job.status == "queued", Job.kind.in_(HANDLERS)).order_by(Job.created_at)).all()
        if not queued:
            return runs
        for job_id, kind in sorted(queued, key=lambda row: row.kind == "story_batch"):
            run_job(str(job_id), HANDLERS[kind], context=worker)
            runs += 1
    raise AssertionError("jobs still queued")


def versions(session: Session, space: Space) -> dict[int, str]:
    rows = session.execute(select(Story.version, Story.status).where(Story.space_id == space.id))
    return {version: status for version, status in rows}


def batch_row(session: Session, batch_id: str) -> Job:
    found = session.get(Job, uuid.UUID(batch_id), populate_existing=True)
    assert found is not None
    return found


def test_a_batch_gives_every_space_one_new_version_and_keeps_the_old_readable(
        client: FlaskClient, session: Session, worker: WorkerContext, admin: dict[str, str],
        fake_gemini: FakeGemini) -> None:
    user = owner(session)
    spaces = spaces_with_a_story(session, user, 7)
    other = spaces_with_a_story(session, owner(session), 1)  # not selected
    batch = submit_batch(client, admin, userId=str(user.id),
                         settings={"narrativeTone": "poetic", "imagesPerChapter": 1})
    assert batch["input"]["targets"] == 7

    run_queued(session, worker)
    done = client.get(f"/api/v1/batches/{batch['id']}", headers=admin).get_json()
    assert done["status"] == "succeeded", done
    assert done["totals"] == {"queued": 0, "running": 0, "succeeded": 7, "failed": 0,
                              "canceled": 0}
    assert done["total"] == 7 and done["percentDone"] == 100.0
    assert done["estimatedSecondsRemaining"] == 0.0
    # 7 stories and 2 images each, priced from the recorded usage.
    assert done["calls"] == 7 + 14 and done["costUsd"] > 0
    assert len(fake_gemini.requests_of("story")) == 7
    result = batch_row(session, batch["id"]).result
    assert result is not None and result["totals"]["succeeded"] == 7 and result["costUsd"] > 0

    for space in spaces:
        session.refresh(space)
        assert versions(session, space) == {1: "ready", 2: "ready"}
        assert space.current_story_version == 2
    assert versions(session, other[0]) == {1: "ready"}
    # Children: one story job per space, on the batch queue, owned by the space's owner,
    # written with the owner's settings plus the override; their images on the batch queue too.
    children = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))).all()
    assert Counter(c.input["spaceId"] for c in children) == {str(s.id): 1 for s in spaces}
    assert {(c.kind, c.queue, c.owner_id) for c in children} == {("story", "batch", user.id)}
    assert {c.input["settings"]["narrativeTone"] for c in children} == {"poetic"}
    images = session.scalars(select(Job).where(Job.parent_id.in_([c.id for c in children])))
    assert {(i.kind, i.queue) for i in images} == {("illustration", "batch")}
    story = session.scalar(select(Story).where(Story.space_id == spaces[0].id,
                                               Story.version == 2))
    assert story is not None and story.settings["narrativeTone"] == "poetic"
    assert len(story.chapters) == 2

    # The admin lists the children (other users' jobs) by parent; the owner sees their own.
    listed = client.get(f"/api/v1/jobs?parentId={batch['id']}&page_size=100", headers=admin)
    assert {j["id"] for j in listed.get_json()} == {str(c.id) for c in children}


def test_the_cursor_fans_out_in_chunks_within_the_window(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    spaces, batch = text_only_batch(client, session, admin, 5)
    batch_id = uuid.UUID(batch["id"])
    run_job(batch["id"], run_story_batch, context=worker)
    first = session.scalars(select(Job).where(Job.parent_id == batch_id)).all()
    ordered = sorted(spaces, key=lambda s: s.id)
    assert sorted(c.input["spaceId"] for c in first) == [str(s.id) for s in ordered[:WINDOW]]
    state = batch_row(session, batch["id"])
    assert state.status == "queued"  # re-scheduled: it holds no worker while waiting for room
    assert state.result == {"cursor": str(ordered[WINDOW - 1].id), "created": WINDOW,
                            "exhausted": False}
    # The window is full: another run makes nothing.
    run_job(batch["id"], run_story_batch, context=worker)
    assert session.scalar(select(func.count()).where(Job.parent_id == batch_id)) == WINDOW
    run_queued(session, worker)
    assert batch_row(session, batch["id"]).status == "succeeded"
    assert session.scalar(select(func.count()).where(Job.parent_id == batch_id)) == 5


def test_dry_run_counts_and_estimates_and_creates_nothing(
        client: FlaskClient, session: Session, admin: dict[str, str]) -> None:
    user = owner(session)
    spaces_with_a_story(session, user, 4, notes=3)
    empty = Space(owner_id=user.id, title="No moments yet")  # cannot have a story: not counted
    session.add(empty)
    session.commit()
    jobs_before = session.scalar(select(func.count()).select_from(Job))
    response = client.post("/api/v1/batches/story-regenerations", headers=admin, json={
        "userId": str(user.id), "dryRun": True, "settings": {"imagesPerChapter": 2}})
    assert response.status_code == 200, response.get_json()
    estimate = response.get_json()
    assert estimate["dryRun"] is True and estimate["spaces"] == 4
    assert estimate["storyCalls"] == 4
    assert estimate["illustrationCalls"] == 4 * 3 * 2  # chapter mode: one chapter per moment
    assert estimate["geminiCalls"] == 4 + 24
    # 24 images at 1290 output tokens (30 USD/Mtok) dominate: about 0.93 USD.
    assert 0.9 < estimate["estimatedCostUsd"] < 1.0
    assert session.scalar(select(func.count()).select_from(Job)) == jobs_before
    nothing = client.post("/api/v1/batches/story-regenerations", headers=admin,
                          json={"spaceIds": [str(empty.id)]})
    assert_error(nothing, 422, "no space")


def test_cancel_midway_stops_the_rest(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    spaces, batch = text_only_batch(client, session, admin, 8)
    run_job(batch["id"], run_story_batch, context=worker)  # the first chunk: WINDOW children
    children = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))
                               .order_by(Job.created_at)).all()
    run_job(str(children[0].id), build_story, context=worker)  # one story done before

    canceled = client.post(f"/api/v1/batches/{batch['id']}/cancel", headers=admin)
    assert canceled.status_code == 200
    body = canceled.get_json()
    assert body["status"] == "canceled" and body["cancelRequested"] is True
    assert body["totals"] == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0,
                              "canceled": 7}  # 2 queued children + 5 never fanned out
    assert run_queued(session, worker) == 0  # nothing left to run, no fan-out either
    run_job(batch["id"], run_story_batch, context=worker)  # a late message: not claimable
    assert session.scalar(select(func.count())
                          .where(Job.parent_id == uuid.UUID(batch["id"]))) == WINDOW
    new_versions = sum(2 in versions(session, s) for s in spaces)
    assert new_versions == 1
    assert_error(client.post(f"/api/v1/batches/{batch['id']}/retry-failed", headers=admin),
                 409, "canceled")


def test_cancel_while_waiting_stops_running_children_and_ends_with_the_last(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    _, batch = text_only_batch(client, session, admin, 2)
    run_job(batch["id"], run_story_batch, context=worker)  # fans out all: waits for children
    assert batch_row(session, batch["id"]).status == "running"
    children = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))).all()
    claimed = lifecycle.start_job(session, children[0].id, heartbeat_timeout_s=30)
    assert claimed is not None  # a worker is writing this one
    body = client.post(f"/api/v1/batches/{batch['id']}/cancel", headers=admin).get_json()
    assert body["status"] == "running" and body["cancelRequested"] is True
    assert body["totals"]["running"] == 1 and body["totals"]["canceled"] == 1
    # The worker reaches its next safe point and stops; the batch ends with it.
    run = lifecycle.cancel_running_job(session, claimed)
    session.commit()
    assert run
    from workers.parents import on_child_finished

    on_child_finished(session, uuid.UUID(batch["id"]))
    assert batch_row(session, batch["id"]).status == "canceled"


def test_retry_failed_reruns_only_the_failures(
        client: FlaskClient, session: Session, worker: WorkerContext, admin: dict[str, str],
        fake_gemini: FakeGemini) -> None:
    fake_gemini.block_next("story")  # a safety block: fails for good, no retry
    spaces, batch = text_only_batch(client, session, admin, 4)
    run_queued(session, worker)
    first = client.get(f"/api/v1/batches/{batch['id']}", headers=admin).get_json()
    assert first["status"] == "succeeded"
    assert first["totals"]["succeeded"] == 3 and first["totals"]["failed"] == 1
    children = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))).all()
    failed = next(c for c in children if c.status == "failed")
    untouched = {c.id: (c.finished_at, c.attempts) for c in children if c.status == "succeeded"}

    again = client.post(f"/api/v1/batches/{batch['id']}/retry-failed", headers=admin)
    assert again.status_code == 200
    body = again.get_json()
    assert body["status"] == "queued" and body["totals"]["queued"] == 1  # re-opened
    run_queued(session, worker)
    final = client.get(f"/api/v1/batches/{batch['id']}", headers=admin).get_json()
    assert final["status"] == "succeeded"
    assert final["totals"]["succeeded"] == 4 and final["totals"]["failed"] == 0
    assert len(fake_gemini.requests_of("story")) == 5  # 4, then only the failed one again
    retried = session.get(Job, failed.id, populate_existing=True)
    assert retried is not None and retried.status == "succeeded"
    for child in session.scalars(select(Job).where(Job.id.in_(untouched))
                                 .execution_options(populate_existing=True)):
        assert (child.finished_at, child.attempts) == untouched[child.id]
    assert session.scalar(select(func.count())
                          .where(Job.parent_id == uuid.UUID(batch["id"]))) == 4
    for space in spaces:
        ready = [v for v, status in versions(session, space).items() if status == "ready"]
        assert sorted(ready) == [1, 2] or sorted(ready) == [1, 3]


def test_a_crash_mid_batch_loses_nothing_and_duplicates_nothing(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    """The worker running the batch task dies right after a chunk committed (the batch stays
    ``running``, no message re-schedules it), and the one writing a child dies mid-story (its
    half-written version left behind). The reaper and redelivered messages finish the batch
    with exactly one new version per space."""
    spaces, batch = text_only_batch(client, session, admin, 7)
    batch_job = lifecycle.start_job(session, uuid.UUID(batch["id"]), heartbeat_timeout_s=30)
    assert batch_job is not None
    assert fan_out_chunk(session, batch_job, window=WINDOW, story_attempts=4) == "more"
    # ... and the batch worker is gone. A child worker claims a story and dies mid-write.
    child = session.scalars(select(Job).where(Job.parent_id == batch_job.id)).first()
    assert child is not None
    claimed = lifecycle.start_job(session, child.id, heartbeat_timeout_s=30)
    assert claimed is not None
    session.add(Story(space_id=uuid.UUID(child.input["spaceId"]), version=2, job_id=child.id,
                      status="writing", settings={}))
    stale = utcnow() - timedelta(minutes=5)
    session.execute(update(Job).where(Job.id.in_([batch_job.id, child.id]))
                    .values(heartbeat_at=stale))
    session.commit()
    # A redelivered message for the batch cannot take over while it has unfinished children...
    # (the reaper leaves it too); its children run, the lost one once the reaper re-queues it.
    for _ in range(10):
        reap_stale_jobs(session, resend_after_s=0, heartbeat_timeout_s=30)
        run_queued(session, worker)
        if batch_row(session, batch["id"]).status == "succeeded":
            break
        session.execute(update(Job).where(Job.id == batch_job.id, Job.status == "running")
                        .values(heartbeat_at=stale))  # nothing beats for a dead worker
        session.commit()
    final = client.get(f"/api/v1/batches/{batch['id']}", headers=admin).get_json()
    assert final["status"] == "succeeded", final
    assert final["totals"]["succeeded"] == 7
    children = session.scalars(select(Job).where(Job.parent_id == batch_job.id)).all()
    assert sorted(c.input["spaceId"] for c in children) == sorted(str(s.id) for s in spaces)
    for space in spaces:
        session.refresh(space)
        assert versions(session, space) == {1: "ready", 2: "ready"}, space.id
        assert space.current_story_version == 2
    recovered = session.get(Job, child.id, populate_existing=True)
    assert recovered is not None and recovered.attempts == 2


def test_the_report_estimates_the_time_left_from_the_finish_rate(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    _, batch = text_only_batch(client, session, admin, 4)
    queued = client.get(f"/api/v1/batches/{batch['id']}", headers=admin).get_json()
    assert queued["totals"]["queued"] == 4 and queued["fannedOut"] == 0
    assert queued["estimatedSecondsRemaining"] is None and queued["percentDone"] == 0.0
    run_job(batch["id"], run_story_batch, context=worker)
    first = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))).first()
    assert first is not None
    session.execute(update(Job).where(Job.parent_id == uuid.UUID(batch["id"]))
                    .values(created_at=utcnow() - timedelta(seconds=30)))
    session.commit()
    run_job(str(first.id), build_story, context=worker)
    report = batch_report(session, batch_row(session, batch["id"]))
    assert report["percent_done"] == 25.0
    # One finished in ~30 s: three more take ~90 s.
    assert 85 <= report["estimated_seconds_remaining"] <= 100


@pytest.mark.parametrize("method, path", [
    ("POST", "/batches/story-regenerations"), ("GET", "/batches/{id}"),
    ("POST", "/batches/{id}/cancel"), ("POST", "/batches/{id}/retry-failed")])
def test_non_admins_get_403_and_anonymous_401(
        client: FlaskClient, session: Session, admin: dict[str, str], method: str,
        path: str) -> None:
    spaces = spaces_with_a_story(session, owner(session), 1)
    batch = submit_batch(client, admin, spaceIds=[str(spaces[0].id)])
    url = "/api/v1" + path.format(id=batch["id"])
    body: dict[str, Any] = {"json": {"all": True}} if method == "POST" else {}
    before = batch_row(session, batch["id"]).status
    assert_error(client.open(url, method=method, headers=register(client), **body), 403,
                 "admin role")
    assert_error(client.open(url, method=method, **body), 401)
    assert batch_row(session, batch["id"]).status == before
    assert session.scalar(select(func.count()).where(Job.kind == "story_batch")) == 1


def test_request_validation(client: FlaskClient, admin: dict[str, str]) -> None:
    url = "/api/v1/batches/story-regenerations"
    bodies: list[dict[str, Any]] = [
        {}, {"all": False}, {"spaceIds": []}, {"spaceIds": ["x"]},
        {"spaceIds": [str(uuid.uuid4())], "all": True},
        {"all": True, "settings": {"creativity": 9}}, {"updatedBefore": "soon"}]
    for body in bodies:
        assert_error(client.post(url, json=body, headers=admin), 422)
    assert_error(client.get(f"/api/v1/batches/{uuid.uuid4()}", headers=admin), 404, "batch")


def test_user_jobs_listing_stays_the_users_own(
        client: FlaskClient, session: Session, worker: WorkerContext,
        admin: dict[str, str]) -> None:
    spaces = spaces_with_a_story(session, owner(session), 1)
    batch = submit_batch(client, admin, spaceIds=[str(spaces[0].id)])
    run_job(batch["id"], run_story_batch, context=worker)
    someone = register(client)
    assert client.get(f"/api/v1/jobs?parentId={batch['id']}", headers=someone).get_json() == []


@pytest.fixture(params=["redis", "local"])
def share_limiter(request: pytest.FixtureRequest) -> RateLimiter:
    """600 requests a minute (a 1 s burst: 10 calls), half of it reserved for interactive
    calls. Redis keys under a prefix of this test's own."""
    limits = {"gemini-2.5-flash": ModelLimit(requests_per_minute=600, tokens_per_minute=None)}
    if request.param == "local":
        return LocalRateLimiter(limits, burst_seconds=1.0, batch_share=0.5)
    client = redis.Redis.from_url(f"{REDIS_BASE}/12")
    return RedisRateLimiter(client, limits, burst_seconds=1.0, batch_share=0.5,
                            key_prefix=f"test-batch-share:{uuid.uuid4().hex}")


def test_batch_calls_leave_the_reserved_share_to_interactive_ones(
        share_limiter: RateLimiter) -> None:
    batch = [share_limiter.acquire("gemini-2.5-flash", batch=True) for _ in range(20)]
    granted_batch = sum(wait == 0.0 for wait in batch)
    assert 4 <= granted_batch <= 6  # half the burst
    interactive = [share_limiter.acquire("gemini-2.5-flash") for _ in range(20)]
    assert sum(wait == 0.0 for wait in interactive) >= 4  # the reserved half is still there


def test_batch_operations_conform_to_the_openapi_document_as_an_admin(
        app: Flask, client: FlaskClient, session: Session, admin: dict[str, str]) -> None:
    """The fuzz suite runs as a plain user (403 everywhere here): fuzz these as an admin."""
    import schemathesis
    from schemathesis.core.result import Err

    from tests.test_api_fuzz import fuzz

    spaces = spaces_with_a_story(session, owner(session), 1)
    batch = submit_batch(client, admin, spaceIds=[str(spaces[0].id)])
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    ran = 0
    for result in schema.get_all_operations():
        assert not isinstance(result, Err)
        operation = result.ok()
        if "/batches" in operation.path:
            ran += fuzz(operation, {"batch_id": batch["id"]}, admin)
    assert ran >= 4


@pytest.mark.integration
def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
        tmp_path: Path, amqp_url: str | None) -> None:
    """The real processes, on each broker: a worker running the batch and its stories is
    SIGKILLed halfway; a new one (with the reaper) finishes it, one version per space and one
    child per space. The batch waits between chunks with countdown messages."""
    from tests.platform import running_stack

    with FakeGemini() as fake, running_stack(tmp_path, fake, amqp_url) as stack:
        fake.set_latency(1.0, "story")
        fake.set_latency(0.3, "illustration")
        stack.services.platform.env["BATCH_WINDOW"] = "4"  # several chunks from the cursor
        stack.services.start_worker("w1", concurrency=4)
        engine = make_engine(stack.database_url)
        with engine.begin() as conn:
            conn.execute(update(User).values(role="admin"))  # the stack's one user
        engine.dispose()
        spaces = []
        for i in range(12):
            space = stack.client.call("POST", "/spaces", json={"title": f"Trip {i}"}).json()
            stack.client.call("POST", f"/spaces/{space['id']}/notes",
                              json={"textContent": f"Day {i} by the sea."})
            spaces.append(space["id"])
        batch = stack.client.call("POST", "/batches/story-regenerations", expect=202,
                                  json={"spaceIds": spaces}).json()

        def report() -> dict[str, Any]:
            found: dict[str, Any] = stack.client.call("GET", f"/batches/{batch['id']}").json()
            return found

        deadline = time.monotonic() + 60
        while (now := report()["totals"])["succeeded"] < 4 or not now["running"]:
            assert time.monotonic() < deadline, now  # the second chunk is being written
            time.sleep(0.1)
        assert now["succeeded"] < 12
        stack.services.kill("w1")  # mid-batch: stories and the batch's own message in flight
        stack.services.start_worker("w2", concurrency=4)
        deadline = time.monotonic() + 90
        while (final := report())["status"] != "succeeded":
            assert time.monotonic() < deadline, final
            time.sleep(0.5)
        assert final["totals"] == {"queued": 0, "running": 0, "succeeded": 12, "failed": 0,
                                   "canceled": 0}
        children = stack.query("SELECT input->>'spaceId' AS space, attempts FROM jobs "
                               "WHERE parent_id = :id", id=uuid.UUID(batch["id"]))
        assert sorted(row.space for row in children) == sorted(spaces)
        stories = stack.query("SELECT space_id, count(*) AS n, max(version) AS v, "
                              "bool_and(status = 'ready') AS ready FROM stories GROUP BY space_id")
        assert sorted(str(row.space_id) for row in stories) == sorted(spaces)
        assert all(row.n == 1 and row.v == 1 and row.ready for row in stories), stories
        # The kill did interrupt work in flight: some job was claimed again.
        assert stack.query("SELECT count(*) AS n FROM jobs WHERE attempts > 1")[0].n >= 1


def test_a_retried_submit_with_the_same_idempotency_key_returns_the_same_batch(
        client: FlaskClient, session: Session, admin: dict[str, str]) -> None:
    spaces = spaces_with_a_story(session, owner(session), 2)
    body = {"spaceIds": [str(s.id) for s in spaces]}
    headers = {**admin, "Idempotency-Key": "regenerate-after-prompt-v7"}
    first = client.post("/api/v1/batches/story-regenerations", json=body, headers=headers)
    again = client.post("/api/v1/batches/story-regenerations", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json()["id"] == again.get_json()["id"]
    assert session.scalar(select(func.count()).where(Job.kind == "story_batch")) == 1


def test_a_batch_announces_its_end_to_its_webhook_and_takes_no_deadline(
        client: FlaskClient, session: Session, worker: WorkerContext, admin: dict[str, str],
        app: Flask, fake_gemini: FakeGemini) -> None:
    app_state = app.extensions["lifetales"]
    app_state.settings = dataclasses.replace(
        app_state.settings, webhooks=WebhookSettings(allow_http=True, allow_private=True))
    spaces = spaces_with_a_story(session, owner(session), 2)
    ids = [str(s.id) for s in spaces]
    refused = client.post("/api/v1/batches/story-regenerations", headers={
        **admin, "Cancel-After": "60"}, json={"spaceIds": ids})
    assert refused.status_code == 422 and "deadline" in refused.get_json()["message"]
    batch = submit_batch(client, admin, spaceIds=ids, settings={"imagesPerChapter": 0},
                         webhook="http://127.0.0.1:9/hook")
    assert batch["webhook"] == "http://127.0.0.1:9/hook"
    assert batch["webhookEvents"] == ["completed"]
    run_queued(session, worker)
    assert batch_row(session, batch["id"]).status == "succeeded"
    # The outbox holds the batch's one delivery, frozen with the finished batch in it.
    deliveries = session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.job_id == uuid.UUID(batch["id"]))).all()
    assert [d.event for d in deliveries] == ["completed"]
    # Children are ordinary story jobs: they do not inherit the batch's webhook.
    children = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(batch["id"]))).all()
    assert len(children) == 2 and all(child.webhook_url is None for child in children)
