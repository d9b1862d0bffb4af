"""What a worker process needs to run jobs, built lazily once per process (after fork)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import telemetry
from agents.gemini import reset_clients
from agents.media.storage import MediaStorage, build_storage
from agents.provider import Provider, build_provider
from config import Settings
from models.db import make_engine, make_session_factory
from workers.answers import AnswerKeeper, build_answer_keeper
from workers.events import Notifier, install_event_notifier
from workers.heartbeat import HeartbeatPump
from workers.job_mirror import build_mirror
from workers.ratelimit import RateLimiter, build_rate_limiter
from workers.sending import install_enqueue_after_commit


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    provider: Provider
    storage: MediaStorage
    heartbeat: HeartbeatPump | None = None
    limiter: RateLimiter | None = None
    answers: AnswerKeeper | None = None


_lock = threading.Lock()
_context: WorkerContext | None = None
_concurrency: int | None = None
# Database connections per worker process, whatever its concurrency: jobs hold a connection
# only for their short transactions (never across a model call), and PostgreSQL allows 100
# connections by default for every process together.
MAX_DB_POOL = 20


def set_concurrency(concurrency: int | None) -> None:
    """The thread count this process runs jobs with: sizes its database and Gemini pools."""
    global _concurrency
    _concurrency = concurrency


def db_pool_size(concurrency: int) -> int:
    return min(concurrency + 2, MAX_DB_POOL)


def build_context(settings: Settings, *, pool_size: int = 20) -> WorkerContext:
    engine = make_engine(settings.database_url, pool_size=pool_size)
    factory = make_session_factory(engine)
    install_enqueue_after_commit(factory)
    install_event_notifier(
        factory, Notifier(settings.redis_url, build_mirror(settings.redis_url, settings.poll)))
    telemetry.install_job_metrics(factory)
    return WorkerContext(
        settings=settings,
        engine=engine,
        session_factory=factory,
        provider=build_provider(settings.agents),
        storage=build_storage(
            settings.cloudinary_url, settings.media_dir, f"{settings.public_base_url}/media"
        ),
        heartbeat=HeartbeatPump(factory, interval_s=max(0.5, settings.heartbeat_timeout_s / 4)),
        limiter=build_rate_limiter(settings.redis_url, os.environ),
        answers=build_answer_keeper(settings.redis_url),
    )


def get_context() -> WorkerContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                from celeryconfig import worker_concurrency

                concurrency = _concurrency or worker_concurrency
                settings = Settings.from_env()
                agents = replace(settings.agents, max_connections=max(
                    settings.agents.max_connections, concurrency))
                _context = build_context(replace(settings, agents=agents),
                                         pool_size=db_pool_size(concurrency))
    return _context


def set_context(context: WorkerContext | None) -> None:
    """Install a ready context (tests run a worker thread against their own database)."""
    global _context
    _context = context


def reset_context() -> None:
    global _context
    if _context is not None:
        if _context.heartbeat is not None:
            _context.heartbeat.stop()
        _context.engine.dispose(close=False)
    _context = None
    reset_clients()
