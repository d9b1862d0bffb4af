"""The database away: a private PostgreSQL cluster this module crashes and starts again, while
jobs run (``run_job`` with the worker's real context: engine, pool, heartbeat pump) and the API
answers."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import text

from config import Settings
from models import Job, User
from tests.conftest import alembic_upgrade
from tests.pg_cluster import PostgresCluster
from workers import outage
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
    url = cluster.create_database("lifetales")
    alembic_upgrade(url)
    return url


@pytest.fixture
def pg(cluster: PostgresCluster) -> Iterator[PostgresCluster]:
    """The cluster, up at the start and at the end of every test."""
    if not cluster.running:
        cluster.start()
    yield cluster
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
        user = User(email=f"o-{uuid.uuid4().hex[:8]}@example.com", password_hash="x",
                    token_version=0, role="user")
        session.add(user)
        session.flush()
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
