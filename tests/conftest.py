"""Test fixtures: a real PostgreSQL database built by ``alembic upgrade head``, per-test
isolation by an outer transaction + savepoints, a real Redis broker, the Flask test client.
Tests that run the platform's processes take ``amqp_url`` and run once per broker: Redis and
RabbitMQ (a private vhost of the server at 127.0.0.1:5672).

PostgreSQL, Redis and RabbitMQ must be running (see README); a test that needs them fails
loudly when they are not, rather than skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask, Response, request_finished
from flask.testing import FlaskClient
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from agents.config import AgentSettings
from config import RateLimitSettings, Settings
from models.db import make_engine, normalize_database_url
from tests.fakes.gemini_server import FakeGemini

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
# The in-process API publishes here; no worker consumes this database.
API_BROKER_URL = f"{REDIS_BASE}/15"

# Tests never see a developer's real keys or services.
for _name in (
    "GEMINI_API_KEY",
    "CLOUDINARY_URL",
    "GOOGLE_GEMINI_BASE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
):
    os.environ.pop(_name, None)
os.environ["CELERY_BROKER_URL"] = API_BROKER_URL


FAKE_GEMINI_KEY = "test-key-never-logged"


@pytest.fixture(scope="session")
def fake_gemini_server() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def fake_gemini(
    fake_gemini_server: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGemini]:
    """The session's fake Gemini, reset, with the real SDK pointed at it (fresh clients)."""
    from agents.gemini import reset_clients

    fake_gemini_server.reset()
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_gemini_server.base_url)
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_GEMINI_KEY)
    monkeypatch.delenv("GOOGLE_GENAI_API_VERSION", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    reset_clients()
    yield fake_gemini_server
    reset_clients()


def create_database(prefix: str) -> str:
    """A fresh, empty PostgreSQL database; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_database_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL}: the tests need it ({exc})"
        ) from exc
    finally:
        admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = create_engine(normalize_database_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def alembic_upgrade(url: str) -> None:
    from alembic import command

    from migrations import alembic_config

    command.upgrade(alembic_config(url), "head")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_database("lt_test")
    alembic_upgrade(url)
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """This run's own RabbitMQ vhost (other runs on the machine never see its queues)."""
    from tests.rabbitmq import private_vhost

    with private_vhost() as url:
        yield url


@pytest.fixture(params=["redis", "amqp"])
def amqp_url(request: pytest.FixtureRequest) -> str | None:
    """The broker of a platform test, which runs once per broker: None for the stack's own
    Redis, else the AMQP URL of this run's RabbitMQ vhost."""
    if request.param == "redis":
        return None
    url: str = request.getfixturevalue("rabbitmq_vhost")
    return url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(API_BROKER_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_BASE}: the tests need it") from exc
    client.flushdb()
    return client


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    """One outer transaction per test, rolled back at the end: tests never see each other."""
    conn = engine.connect()
    outer = conn.begin()
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=API_BROKER_URL,
        redis_url=REDIS_BASE,
        secret_key="test-secret-key-not-for-production",
        media_dir=tmp_path / "media",
        public_base_url="http://localhost",
        port=3000,
        agents=AgentSettings(gemini_api_key=None),
        # Tests register many users from one address and submit freely; the limits themselves
        # are tested in test_api_rate_limits.py with settings of their own.
        rate_limits=RateLimitSettings(enabled=False),
    )


@pytest.fixture
def app(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis
) -> Flask:
    from api import create_app

    flask_app = create_app(settings, session_factory=session_factory)
    flask_app.testing = True
    return flask_app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """The test client; any test during which the API answered a 5xx fails."""
    server_errors: list[str] = []

    def record(_sender: Flask, response: Response, **_: Any) -> None:
        if response.status_code >= 500:
            server_errors.append(f"{response.status_code} {response.get_data(as_text=True)[:200]}")

    request_finished.connect(record, app)
    yield app.test_client()
    request_finished.disconnect(record, app)
    assert not server_errors, server_errors


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing() -> Iterator[None]:
    """Argon2 at its cheapest: tests register many users; the production cost is not under test."""
    from argon2 import PasswordHasher

    from api import auth

    production = auth._hasher
    auth._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    yield
    auth._hasher = production


def assert_error(response: TestResponse, status: int, *fragments: str) -> dict[str, Any]:
    """The one error shape: ``{code, status, message[, errors]}``; the message says why."""
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.get_json()
    assert body["code"] == status
    assert body["status"] == HTTPStatus(status).phrase
    assert isinstance(body["message"], str) and body["message"]
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


def register(
    client: FlaskClient, email: str | None = None, password: str = "correct horse battery"
) -> dict[str, str]:
    """Register a user; returns the Authorization header for it."""
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    response = client.post("/api/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['accessToken']}"}


@pytest.fixture
def auth(client: FlaskClient) -> dict[str, str]:
    return register(client)


@pytest.fixture
def other_auth(client: FlaskClient) -> dict[str, str]:
    return register(client)


def make_space(client: FlaskClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = client.post(
        "/api/v1/spaces", json={"title": "Lisbon trip", **fields}, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def make_note(
    client: FlaskClient, headers: dict[str, str], space_id: str, **fields: Any
) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/spaces/{space_id}/notes",
        json={"textContent": "We walked to the river.", **fields},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()
