"""``lifetales stories regenerate``: the CLI creates the batch through the same function as the
API, in the database it is pointed at, then follows it with a progress bar until it finishes.
The rows are committed for real (the CLI is another process); a worker runs in this one."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from agents.config import AgentSettings
from agents.media.local import LocalMediaStorage
from agents.provider import build_provider
from config import Settings
from models import CacheEntry, Job, Note, Space, Story, User
from models.base import utcnow
from models.db import make_engine, make_session_factory
from tests.test_batches import run_queued
from workers.context import WorkerContext
from workers.sending import install_enqueue_after_commit

LIFETALES = str(Path(sys.executable).parent / "lifetales")


@dataclass
class World:
    factory: sessionmaker[Session]
    admin_email: str
    owner_email: str
    spaces: list[uuid.UUID]
    env: dict[str, str]


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    """An admin, and an owner with three spaces of two moments each (one more without any)."""
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    install_enqueue_after_commit(factory)
    tag = uuid.uuid4().hex[:8]
    started = utcnow()
    with factory() as session:
        admin = User(email=f"ops-{tag}@example.com", password_hash="x", role="admin")
        owner = User(email=f"Owner-{tag}@example.com".lower(), password_hash="x")
        session.add_all([admin, owner])
        session.flush()
        spaces = [Space(owner_id=owner.id, title=f"Trip {i}") for i in range(3)]
        session.add_all([*spaces, Space(owner_id=owner.id, title="Empty")])
        session.flush()
        for space in spaces:
            session.add_all(Note(space_id=space.id, timestamp_ms=i, text_content=f"Day {i}.")
                            for i in range(2))
        session.commit()
        users = [admin.id, owner.id]
        world = World(factory, admin.email, owner.email, sorted(s.id for s in spaces),
                      {**os.environ, "DATABASE_URL": database_url,
                       "SECRET_KEY": "cli-test-secret"})
    yield world
    with factory() as session:
        session.execute(delete(User).where(User.id.in_(users)))  # cascades to their rows
        # The stories the worker wrote are cached; other tests count the cache's entries.
        session.execute(delete(CacheEntry).where(CacheEntry.created_at >= started))
        session.commit()
    engine.dispose()


def lifetales(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIFETALES, "stories", "regenerate", *args], env=world.env, text=True,
                          capture_output=True, timeout=60, check=False)


def batch_jobs(world: World) -> list[Job]:
    with world.factory() as session:
        return list(session.scalars(select(Job).where(Job.kind == "story_batch")))


def test_dry_run_prints_the_estimate_and_creates_nothing(world: World) -> None:
    done = lifetales(world, "--user", world.owner_email.upper(), "--dry-run")
    assert done.returncode == 0, done.stderr
    # chapter mode, one image a chapter: 3 story calls and 6 illustrations.
    assert "dry run: 3 stories, 9 Gemini calls (3 story, 6 illustration)" in done.stdout
    assert batch_jobs(world) == []


def test_no_wait_prints_the_batch_id_and_leaves_it_queued(world: World) -> None:
    done = lifetales(world, "--all", "--no-wait", "--as", world.admin_email,
                     "--settings", '{"narrativeTone": "funny"}')
    assert done.returncode == 0, done.stderr
    batch_id = uuid.UUID(done.stdout.split()[0])
    [batch] = batch_jobs(world)
    assert batch.id == batch_id and batch.status == "queued" and batch.queue == "batch"
    assert batch.input["settings"] == {"narrativeTone": "funny"}
    assert batch.input["targets"] >= 3  # every space with moments in the database


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "nobody@example.com"], "no account with email"),
    (["--all", "--as", "nobody@example.com"], "no admin account nobody@example.com"),
    (["--all", "--settings", "{not json"], "invalid request"),
    (["--space", str(uuid.uuid4())], "no space with moments"),
])
def test_bad_requests_fail_with_a_reason(world: World, args: list[str], message: str) -> None:
    done = lifetales(world, *args)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert batch_jobs(world) == []


def test_follows_the_batch_to_the_end_with_a_progress_bar(
        world: World, settings: Settings, tmp_path: Path) -> None:
    cli = subprocess.Popen(
        [LIFETALES, "stories", "regenerate", "--space", *map(str, world.spaces[:2]),
         "--settings", '{"imagesPerChapter": 0}', "--interval", "0.2"],
        env=world.env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    offline = AgentSettings(gemini_api_key=None)  # the offline provider: deterministic, local
    worker = WorkerContext(
        settings=dataclasses.replace(settings, agents=offline), engine=None,  # type: ignore[arg-type]
        session_factory=world.factory, provider=build_provider(offline),
        storage=LocalMediaStorage(tmp_path / "media", "http://localhost/media"))
    deadline = time.monotonic() + 60
    with world.factory() as session:
        while cli.poll() is None and time.monotonic() < deadline:
            run_queued(session, worker)
            time.sleep(0.1)
        if cli.poll() is None:
            cli.kill()
        out, err = cli.communicate(timeout=10)
        assert cli.returncode == 0, err
        lines = err.splitlines()
        assert any("0.0% of 2" in line for line in lines), err  # plain lines: not a terminal
        assert "100.0% of 2" in lines[-2] and "ok 2" in lines[-2], err
        assert lines[-1] == "lifetales: batch succeeded: 2 regenerated, 0 failed, 0 canceled"
        [batch] = batch_jobs(world)
        assert out.split()[0] == str(batch.id) and batch.status == "succeeded"
        for space_id in world.spaces:
            stories = session.scalar(select(func.count()).where(Story.space_id == space_id,
                                                                 Story.status == "ready"))
            assert stories == (1 if space_id in world.spaces[:2] else 0)
