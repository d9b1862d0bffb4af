"""Per-app state (settings, database, storage) and the per-request database session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from agents.media.storage import MediaStorage
from api.job_watch import JobWatcher
from config import Settings
from workers.events import Notifier
from workers.job_mirror import JobMirror

if TYPE_CHECKING:
    from api.auth import CheckedTokens, TokenVersions

EXTENSION = "lifetales"


@dataclass
class AppState:
    settings: Settings
    engine: Engine | None
    session_factory: sessionmaker[Session]
    storage: MediaStorage
    provider_mode: str
    notifier: Notifier
    watcher: JobWatcher
    token_versions: TokenVersions
    checked_tokens: CheckedTokens

    @property
    def mirror(self) -> JobMirror | None:
        """The job documents kept in Redis (None without Redis: reads go to the database)."""
        return self.notifier.mirror


def state() -> AppState:
    return current_app.extensions[EXTENSION]


def db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = state().session_factory()
    return g.db_session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
