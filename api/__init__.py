"""The Flask app factory: ``create_app()`` wires settings, database, storage and blueprints."""

from __future__ import annotations

import logging

from flask import Flask, Request
from flask.sessions import SessionInterface
from sqlalchemy.orm import Session, sessionmaker

from agents.media.storage import build_storage
from api import docs, resources
from api.auth import CheckedTokens, TokenVersions
from api.body_limit import init_body_limit
from api.errors import DocumentedApi, register_error_handlers
from api.job_watch import JobWatcher
from api.observability import init_observability
from api.ratelimit import init_rate_limits
from api.security import init_security
from api.state import EXTENSION, AppState, close_db
from config import Settings
from models.db import make_engine, make_session_factory
from workers.events import Notifier, install_event_notifier
from workers.job_mirror import build_mirror
from workers.sending import install_enqueue_after_commit

log = logging.getLogger(__name__)


class NoCookieSession(SessionInterface):
    """The API authenticates bearer tokens and keeps no cookie session: opening Flask's signed
    cookie session on every request (it would be empty) is work for nothing."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None

    def save_session(self, *_: object) -> None:
        return None


def create_app(
    settings: Settings | None = None, *, session_factory: sessionmaker[Session] | None = None
) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.session_interface = NoCookieSession()
    app.config.update(
        SECRET_KEY=settings.secret_key,
        JSON_SORT_KEYS=False,
        API_TITLE="LifeTales API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL=docs.SWAGGER_UI_URL,
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        },
    )
    engine = None
    if session_factory is None:
        engine = make_engine(settings.database_url)
        session_factory = make_session_factory(engine)
    install_enqueue_after_commit(session_factory)
    notifier = Notifier(settings.redis_url, build_mirror(settings.redis_url, settings.poll))
    install_event_notifier(session_factory, notifier)
    app.extensions[EXTENSION] = AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        storage=build_storage(
            settings.cloudinary_url, settings.media_dir, f"{settings.public_base_url}/media"
        ),
        provider_mode="gemini" if settings.agents.gemini_api_key else "offline",
        notifier=notifier,
        watcher=JobWatcher(settings.redis_url),
        token_versions=TokenVersions(settings.poll.token_version_cache_s),
        checked_tokens=CheckedTokens(settings.secret_key),
    )
    app.teardown_appcontext(close_db)

    api = DocumentedApi(app)
    for module in resources.ALL:
        api.register_blueprint(module.blp)
    app.register_blueprint(docs.blp)  # not an API operation: no place in the OpenAPI document
    register_error_handlers(app)
    init_security(app, settings.http)
    init_rate_limits(app, settings)
    init_observability(app)
    init_body_limit(app)  # after the request is logged and counted like any other
    log.info("api ready", extra={"provider": app.extensions[EXTENSION].provider_mode,
                                 "database": settings.database_url.split(":", 1)[0]})
    return app
