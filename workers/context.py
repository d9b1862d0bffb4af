"""What a worker process needs to run jobs, built lazily once per process (after fork)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import telemetry
from agents.gemini import reset_clients
from agents.media.storage import MediaStorage, build_storage
from agents.provider import Provider, build_provider
from config import Settings
from models.db import make_engine, make_session_factory
from workers.dispatch import install_enqueue_after_commit
from workers.events import Notifier, install_event_notifier
from workers.heartbeat import HeartbeatPump
from workers.ratelimit import RateLimiter, build_rate_limiter


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    provider: Provider
    storage: MediaStorage
    heartbeat: HeartbeatPump | None = None
    limiter: RateLimiter | None = None


_lock = threading.Lock()
_context: WorkerContext | None = None
_pool_size: int | None = None


def set_pool_size(size: int | None) -> None:
    """The database pool size for this process's context (the worker's thread count + spare)."""
    global _pool_size
    _pool_size = size


def build_context(settings: Settings, *, pool_size: int = 20) -> WorkerContext:
    engine = make_engine(settings.database_url, pool_size=pool_size)
    factory = make_session_factory(engine)
    install_enqueue_after_commit(factory)
    install_event_notifier(factory, Notifier(settings.redis_url))
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
    )


def get_context() -> WorkerContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                from celeryconfig import worker_concurrency

                size = _pool_size or worker_concurrency + 2
                _context = build_context(Settings.from_env(), pool_size=size)
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
