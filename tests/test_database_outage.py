"""The database away: a private PostgreSQL cluster this module crashes and starts again, while
jobs run (``run_job`` with the worker's real context: engine, pool, heartbeat pump) and the API
answers."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select, text, update
from werkzeug.test import TestResponse

from agents.config import AgentSettings
from agents.provider import build_provider
from config import Settings
from models import Job
from models.base import utcnow
from tests.conftest import alembic_upgrade, assert_error, register
from tests.fakes.gemini_server import FakeGemini
from tests.pg_cluster import PostgresCluster
from tests.test_batches import owner
from workers import lifecycle, outage
from workers.context import WorkerContext, build_context
from workers.dispatch import create_job
from workers.reaper import reap_stale_jobs
from workers.runner import JobRun, run_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with PostgresCluster() as pg:
        yield pg


@pytest.fixture(scope="module")
def outage_database(cluster: PostgresCluster) -> str:
    """The schema, and ``app``: an ordinary role for the API (limits apply to it, not to a
    superuser)."""
    url = cluster.create_database("lifetales")
    alembic_upgrade(url)
    cluster.execute("CREATE ROLE app LOGIN",
                    "GRANT ALL ON ALL TABLES IN SCHEMA public TO app",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app", database="lifetales")
    return url


# Restarts a test asked for, still to come: each test waits for its own before it ends, so that
# none starts the cluster behind the next test's back (or as this fixture starts it too).
_restarts: list[threading.Thread] = []


@pytest.fixture
def pg(cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """The cluster, up at the start and at the end of every test."""
    if not cluster.running:
        cluster.start()
    yield cluster
    while _restarts:
        _restarts.pop().join(timeout=120)
    if not cluster.running:
        cluster.start()


@pytest.fixture
def worker(settings: Settings, outage_database: str, pg: PostgresCluster,
           tmp_path: Path) -> Iterator[WorkerContext]:
    """A worker process's context on the private cluster (3 s heartbeat timeout)."""
    ctx = build_context(dataclasses.replace(settings, database_url=outage_database,
                                            heartbeat_timeout_s=3), pool_size=4)
    yield ctx
    assert ctx.heartbeat is not None
    ctx.heartbeat.stop()
    ctx.engine.dispose()


def new_job(ctx: WorkerContext) -> uuid.UUID:
    with ctx.session_factory() as session:
        user = owner(session)
        job = create_job(session, owner_id=user.id, kind="illustration",
                         input={"prompt": "a lighthouse", "style": "pastel"})
        session.commit()
        return job.id


def load(ctx: WorkerContext, job_id: uuid.UUID) -> Job:
    with ctx.session_factory() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def restart_soon(pg: PostgresCluster, after_s: float) -> threading.Thread:
    def restart() -> None:
        time.sleep(after_s)
        pg.start()

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    _restarts.append(thread)
    return thread


def query(run: JobRun) -> None:
    run.session.execute(text("SELECT 1"))  # raises OperationalError: the server is gone


def crash(_run: JobRun) -> None:
    raise RuntimeError("the handler broke")  # and recording the failure meets the outage


def time_limit(_run: JobRun) -> None:
    raise SoftTimeLimitExceeded


ENDINGS: dict[str, Callable[[JobRun], None]] = {
    "database error": query, "any exception": crash, "soft time limit": time_limit,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_handler_ending_while_the_database_is_gone_leaves_the_pump_and_runs_again(
        worker: WorkerContext, pg: PostgresCluster, ending: str) -> None:
    job_id = new_job(worker)
    runs: list[int] = []

    def handler(run: JobRun) -> None:
        runs.append(run.job.attempts)
        if len(runs) == 1:
            pg.crash()  # mid-job: every connection of the pool is cut
            restart_soon(pg, 1.0)
            ENDINGS[ending](run)
        run.succeed({"drawn": True})

    run_job(str(job_id), handler, context=worker)
    assert worker.heartbeat is not None
    assert worker.heartbeat.running() == set(), "the pump still beats a job no thread runs"
    job = load(worker, job_id)
    assert job.status == "succeeded", (job.status, job.error)
    assert job.result == {"drawn": True}
    assert runs == [1, 1]  # the same attempt, run again once the database was back
    assert job.attempts == 1


def test_a_claim_made_while_the_database_is_gone_is_made_once_it_is_back(
        worker: WorkerContext, pg: PostgresCluster) -> None:
    job_id = new_job(worker)
    pg.crash()
    restart_soon(pg, 1.0)
    run_job(str(job_id), lambda run: run.succeed({"drawn": True}), context=worker)
    job = load(worker, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1)


def test_an_outage_longer_than_the_patience_leaves_the_job_to_the_reaper(
        worker: WorkerContext, pg: PostgresCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outage, "PATIENCE_S", 0.5)
    job_id = new_job(worker)

    def handler(run: JobRun) -> None:
        if run.job.attempts == 1:
            pg.crash()
            query(run)
        run.succeed({"drawn": True})

    run_job(str(job_id), handler, context=worker)  # gives up while the database is down
    assert worker.heartbeat is not None and worker.heartbeat.running() == set()
    pg.start()
    assert load(worker, job_id).status == "running"  # no thread runs it: its beat goes stale
    deadline = time.monotonic() + 20
    while load(worker, job_id).status == "running":
        assert time.monotonic() < deadline, "the reaper never took the job back"
        with worker.session_factory() as session:
            reap_stale_jobs(session, resend_after_s=60, heartbeat_timeout_s=3)
        time.sleep(0.5)
    job = load(worker, job_id)
    assert job.status == "queued" and job.error is not None
    assert job.error["code"] == "worker_lost"
    run_job(str(job_id), handler, context=worker)
    job = load(worker, job_id)
    assert (job.status, job.attempts) == ("succeeded", 2)


def test_a_thread_ended_by_a_base_exception_leaves_the_pump(
        worker: WorkerContext, pg: PostgresCluster) -> None:
    """SystemExit, KeyboardInterrupt, a pool's own ending: nothing settles the job, but it is
    no longer beaten, so the reaper takes it back."""
    job_id = new_job(worker)

    def handler(_run: JobRun) -> None:
        raise SystemExit(1)

    with pytest.raises(SystemExit):
        run_job(str(job_id), handler, context=worker)
    assert worker.heartbeat is not None and worker.heartbeat.running() == set()
    assert load(worker, job_id).status == "running"



def test_the_heartbeat_and_the_reaper_live_through_an_outage_and_catch_up(
        worker: WorkerContext, pg: PostgresCluster, caplog: pytest.LogCaptureFixture) -> None:
    from workers.context import set_context
    from workers.heartbeat import HeartbeatPump
    from workers.tasks.maintenance import reap_stale_jobs_task

    job_id, lost_id = new_job(worker), new_job(worker)
    with worker.session_factory() as session:
        for started in (job_id, lost_id):
            assert lifecycle.start_job(session, started, heartbeat_timeout_s=3) is not None
    pump = HeartbeatPump(worker.session_factory, interval_s=0.2)
    pump.track(job_id, 1)  # this thread runs it, all along; nothing runs the other one
    set_context(worker)
    try:
        pg.crash()
        time.sleep(1)  # beats fail meanwhile
        reap_stale_jobs_task()  # a pass with the database away: skipped, not a crash
        assert "maintenance pass skipped: database unavailable" in caplog.text
        pg.start()
        back = utcnow()
        deadline = time.monotonic() + 10
        while (beat := load(worker, job_id).heartbeat_at) is None or beat < back:
            assert time.monotonic() < deadline, "the heartbeat did not resume"
            time.sleep(0.1)
        time.sleep(max(0.0, 3.5 - (utcnow() - back).total_seconds()))  # the other goes stale
        reap_stale_jobs_task()  # the next pass catches up
        assert load(worker, job_id).status == "running"
        assert load(worker, lost_id).status == "queued"
    finally:
        set_context(None)
        pump.stop()



def test_after_a_restart_the_reaper_gives_workers_a_heartbeat_timeout_to_beat_again(
        worker: WorkerContext, pg: PostgresCluster) -> None:
    """Every heartbeat is stale right after a restart, live workers' too (none could beat while
    the database was down): the reaper takes nothing back until the server has been up for a
    heartbeat timeout, and then only what nobody beat meanwhile."""
    job_id = new_job(worker)
    with worker.session_factory() as session:
        assert lifecycle.start_job(session, job_id, heartbeat_timeout_s=3) is not None
        session.execute(update(Job).where(Job.id == job_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=30)))
        session.commit()
    pg.restart(downtime_s=0.2)
    with worker.session_factory() as session:
        reap_stale_jobs(session, resend_after_s=60, heartbeat_timeout_s=3)
    assert load(worker, job_id).status == "running"
    time.sleep(3.2)
    with worker.session_factory() as session:
        reap_stale_jobs(session, resend_after_s=60, heartbeat_timeout_s=3)
    assert load(worker, job_id).status == "queued"

# --- a paid answer is not paid for twice -----------------------------------------------------


@pytest.fixture
def gemini_worker(worker: WorkerContext, fake_gemini: FakeGemini) -> WorkerContext:
    """The worker with the real Gemini agents, talking to the fake."""
    agents = AgentSettings(gemini_api_key="test-key", transcription_timeout_ms=5000,
                           illustration_timeout_ms=5000, story_timeout_ms=5000)
    return dataclasses.replace(worker, provider=build_provider(agents))


def crash_after(pg: PostgresCluster, call: Callable[..., Any]) -> Callable[..., Any]:
    """``call``, then the database crashes (back a second later): the answer has come, the
    commit that would save it is yet to come."""
    def answered_then_crash(*args: Any, **kwargs: Any) -> Any:
        answer = call(*args, **kwargs)
        pg.crash()
        restart_soon(pg, 1.0)
        return answer

    return answered_then_crash


def test_a_transcription_answered_as_the_database_crashes_is_not_paid_for_twice(
        gemini_worker: WorkerContext, pg: PostgresCluster, fake_gemini: FakeGemini,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_worker_jobs import audio_job
    from workers.tasks.transcription import transcribe_media

    with gemini_worker.session_factory() as session:
        job_id = audio_job(session, gemini_worker, owner(session)).id
    transcriber = gemini_worker.provider.transcriber
    monkeypatch.setattr(transcriber, "transcribe", crash_after(pg, transcriber.transcribe))
    run_job(str(job_id), transcribe_media, context=gemini_worker)
    job = load(gemini_worker, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    assert job.result is not None and job.result["transcription"] == fake_gemini.transcription_text
    assert job.usage is not None and job.usage["calls"] == 1  # the kept answer's usage
    assert len(fake_gemini.requests_of("transcription")) == 1


def test_an_illustration_answered_as_the_database_crashes_is_not_paid_for_twice(
        gemini_worker: WorkerContext, pg: PostgresCluster, fake_gemini: FakeGemini,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.tasks.illustration import illustrate

    job_id = new_job(gemini_worker)
    illustrator = gemini_worker.provider.illustrator
    monkeypatch.setattr(illustrator, "illustrate", crash_after(pg, illustrator.illustrate))
    run_job(str(job_id), illustrate, context=gemini_worker)
    job = load(gemini_worker, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    assert job.result is not None and job.result["imageUrl"].endswith(f"{job_id}.png")
    assert len(fake_gemini.requests_of("illustration")) == 1


def test_a_film_script_answered_as_the_database_crashes_is_not_paid_for_twice(
        gemini_worker: WorkerContext, pg: PostgresCluster, fake_gemini: FakeGemini,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from models import Film
    from tests.test_films import film_job, story_of
    from workers.tasks.film import make_film

    with gemini_worker.session_factory() as session:
        user = owner(session)
        space, story = story_of(session, gemini_worker, user, chapters=2)
        job_id = film_job(session, user, space, story).id
    writer = gemini_worker.provider.script_writer
    monkeypatch.setattr(writer, "write", crash_after(pg, writer.write))
    run_job(str(job_id), make_film, context=gemini_worker)
    job = load(gemini_worker, job_id)
    # The same attempt ran again once the database was back, and now waits on its narrations.
    assert (job.status, job.attempts) == ("running", 1), job.error
    assert job.progress is not None and job.progress["step"] == "narration"
    assert job.usage is not None and job.usage["calls"] == 1  # the kept answer's usage
    assert len(fake_gemini.requests_of("script")) == 1
    with gemini_worker.session_factory() as session:
        film = session.scalars(select(Film).where(Film.job_id == job_id)).one()
        assert film.script is not None and len(film.script["scenes"]) == 2
        narrations = session.scalars(select(Job).where(Job.parent_id == job_id)).all()
        assert sorted(n.kind for n in narrations) == ["narration", "narration"]


def test_a_story_cut_short_by_the_database_is_read_to_the_end_and_not_paid_for_twice(
        gemini_worker: WorkerContext, pg: PostgresCluster, fake_gemini: FakeGemini,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.types import ChapterDraft
    from models import Chapter, Note, Space, Story
    from workers.tasks.story import build_story

    with gemini_worker.session_factory() as session:
        user = owner(session)
        space = Space(owner_id=user.id, title="Porto")
        session.add(space)
        session.flush()
        session.add_all(Note(space_id=space.id, timestamp_ms=1_700_000_000_000 + n,
                             text_content=f"Moment {n}") for n in range(3))
        job = create_job(session, owner_id=user.id, kind="story",
                         input={"spaceId": str(space.id), "settings": {"imagesPerChapter": 0}})
        session.commit()
        job_id, space_id = job.id, space.id
    builder = gemini_worker.provider.story_builder
    stream = builder.stream

    def crash_after_the_first_chapter(*args: Any, **kwargs: Any) -> Iterator[Any]:
        chapters = 0
        for item in stream(*args, **kwargs):
            yield item
            chapters += isinstance(item, ChapterDraft)
            if chapters == 1 and pg.running:
                pg.crash()  # the next chapter's commit fails; the model writes on
                restart_soon(pg, 1.0)

    monkeypatch.setattr(builder, "stream", crash_after_the_first_chapter)
    run_job(str(job_id), build_story, context=gemini_worker)
    job = load(gemini_worker, job_id)
    assert (job.status, job.attempts) == ("succeeded", 1), job.error
    assert len(fake_gemini.requests_of("story")) == 1
    with gemini_worker.session_factory() as session:
        stories = session.scalars(select(Story).where(Story.space_id == space_id)).all()
        assert [(s.version, s.status) for s in stories] == [(1, "ready")]
        chapters = session.scalars(select(Chapter).where(Chapter.story_id == stories[0].id))
        assert len(list(chapters)) == 3

# --- the API ----------------------------------------------------------------------------------


@pytest.fixture
def api(settings: Settings, outage_database: str, pg: PostgresCluster,
        redis_client: object) -> Iterator[Flask]:
    """The API on the private cluster, as the ordinary role ``app``."""
    from api import create_app
    from api.state import EXTENSION

    app = create_app(dataclasses.replace(settings, database_url=pg.url("lifetales", "app")))
    app.testing = True
    yield app
    engine = app.extensions[EXTENSION].engine
    engine.dispose()
    pg.execute("ALTER ROLE app CONNECTION LIMIT -1",
               "ALTER DATABASE lifetales RESET default_transaction_read_only")


def assert_database_unavailable(response: TestResponse) -> None:
    body = assert_error(response, 503, "database is unavailable")
    assert body["errors"] == {"database": ["database_unavailable"]}
    assert int(response.headers["Retry-After"]) > 0


def test_with_the_database_down_requests_are_503_with_retry_after_and_health_stays_200(
        api: Flask, pg: PostgresCluster) -> None:
    client = api.test_client()
    auth = register(client)
    space = client.post("/api/v1/spaces", json={"title": "Porto"}, headers=auth).get_json()
    pg.crash()
    assert_database_unavailable(client.post("/api/v1/spaces", json={"title": "x"},
                                            headers=auth))
    assert_database_unavailable(client.get(f"/api/v1/spaces/{space['id']}", headers=auth))
    assert_database_unavailable(client.post("/api/v1/illustrations", json={"prompt": "a dog"},
                                            headers=auth))
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["down"] == ["database"]
    assert client.get("/health").status_code == 200
    pg.start()
    assert client.get(f"/api/v1/spaces/{space['id']}", headers=auth).status_code == 200
    assert client.get("/ready").get_json()["down"] == []


def test_the_first_request_after_a_crash_restart_succeeds(
        api: Flask, pg: PostgresCluster) -> None:
    """The pooled connection was used a moment before the crash (too recently for the idle
    ping): the server's hang-up is noticed at checkout, and a fresh connection serves."""
    client = api.test_client()
    auth = register(client)
    assert client.get("/api/v1/spaces", headers=auth).status_code == 200
    pg.restart(downtime_s=0.2)
    response = client.get("/api/v1/spaces", headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_a_connection_ended_mid_transaction_is_503_and_the_next_request_succeeds(
        api: Flask, pg: PostgresCluster) -> None:
    """An administrator's ``pg_terminate_backend`` (or a reset) between two statements of one
    request's transaction."""
    from api.state import EXTENSION

    client = api.test_client()
    auth = register(client)
    engine = api.extensions[EXTENSION].engine
    ended: list[int] = []

    def end_after_the_user_lookup(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not ended and statement.lstrip().startswith("SELECT") and "FROM users" in statement:
            pid = conn.connection.dbapi_connection.get_backend_pid()
            ended.append(pid)
            pg.execute(f"SELECT pg_terminate_backend({pid}, 5000)")

    event.listen(engine, "after_cursor_execute", end_after_the_user_lookup)
    try:
        response = client.post("/api/v1/spaces", json={"title": "x"}, headers=auth)
    finally:
        event.remove(engine, "after_cursor_execute", end_after_the_user_lookup)
    assert ended, "the request never looked its user up"
    assert_database_unavailable(response)
    assert client.post("/api/v1/spaces", json={"title": "y"}, headers=auth).status_code == 201


def test_too_many_connections_is_503(api: Flask, pg: PostgresCluster) -> None:
    from api.state import EXTENSION

    client = api.test_client()
    auth = register(client)
    pg.execute("ALTER ROLE app CONNECTION LIMIT 0")
    api.extensions[EXTENSION].engine.dispose()  # the next request must open a connection
    assert_database_unavailable(client.get("/api/v1/spaces", headers=auth))
    pg.execute("ALTER ROLE app CONNECTION LIMIT -1")
    assert client.get("/api/v1/spaces", headers=auth).status_code == 200


def test_a_read_only_database_is_503_and_ready_says_so(api: Flask, pg: PostgresCluster) -> None:
    """A replica after a failover takes reads and refuses writes: the refused write's
    connection (and the pool's others) are dropped, so writes work once a primary is back."""
    from api.state import EXTENSION

    client = api.test_client()
    auth = register(client)
    pg.execute("ALTER DATABASE lifetales SET default_transaction_read_only = on")
    api.extensions[EXTENSION].engine.dispose()  # new sessions pick the setting up
    assert client.get("/api/v1/spaces", headers=auth).status_code == 200
    assert_database_unavailable(client.post("/api/v1/spaces", json={"title": "x"},
                                            headers=auth))
    ready = client.get("/ready").get_json()
    assert ready["down"] == ["database"] and ready["checks"]["database"] == "error: read-only"
    pg.execute("ALTER DATABASE lifetales RESET default_transaction_read_only")
    api.extensions[EXTENSION].engine.dispose()
    assert client.post("/api/v1/spaces", json={"title": "y"}, headers=auth).status_code == 201


def test_the_openapi_document_gives_every_operation_needing_the_database_its_503(
        client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    unavailable = doc["components"]["responses"]["DATABASE_UNAVAILABLE"]
    assert "Retry-After" in unavailable["headers"]
    documented = {f"{method.upper()} {path}": "503" in operation["responses"]
                  for path, operations in doc["paths"].items()
                  for method, operation in operations.items() if method != "parameters"}
    assert documented["POST /api/v1/spaces"] and documented["GET /api/v1/jobs/{job_id}"]
    assert not documented["GET /health"] and not documented["GET /media/{path}"]
    assert sum(documented.values()) == len(documented) - 2  # all but those two (and /ready's own)
