"""The admin role: ``lifetales users promote EMAIL`` grants it; ``GET /admin/jobs`` lists every
user's jobs to admins (filtered and paged in SQL) and answers 403 to everyone else."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, delete, insert, select, update
from sqlalchemy.orm import Session

from models import User
from models.db import normalize_database_url
from tests.conftest import assert_error, register


def make_admin(client: FlaskClient, session: Session) -> dict[str, str]:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    headers = register(client, email)
    session.execute(update(User).where(User.email == email).values(role="admin"))
    session.commit()
    return headers


def submit(client: FlaskClient, headers: dict[str, str], prompt: str) -> dict[str, Any]:
    response = client.post("/api/v1/illustrations", headers=headers, json={"prompt": prompt})
    assert response.status_code == 202
    job: dict[str, Any] = response.get_json()
    return job


def user_id(client: FlaskClient, headers: dict[str, str]) -> str:
    return str(client.get("/api/v1/me", headers=headers).get_json()["id"])


def test_admin_lists_every_users_jobs_with_filters_and_pages(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
        session: Session) -> None:
    admin = make_admin(client, session)
    a_jobs = [submit(client, auth, f"a {n}") for n in range(3)]
    b_job = submit(client, other_auth, "b")
    listed = client.get("/api/v1/admin/jobs", headers=admin)
    assert listed.status_code == 200
    rows = listed.get_json()
    assert [r["id"] for r in rows] == [b_job["id"], *reversed([j["id"] for j in a_jobs])]
    assert {r["ownerId"] for r in rows} == {user_id(client, auth), user_id(client, other_auth)}
    assert rows[0]["queue"] == "illustration"

    mine = client.get(f"/api/v1/admin/jobs?userId={user_id(client, other_auth)}", headers=admin)
    assert [r["id"] for r in mine.get_json()] == [b_job["id"]]
    assert client.get("/api/v1/admin/jobs?status=succeeded", headers=admin).get_json() == []
    assert len(client.get("/api/v1/admin/jobs?kind=illustration&status=queued",
                          headers=admin).get_json()) == 4

    page = client.get("/api/v1/admin/jobs?page=2&page_size=3", headers=admin)
    assert [r["id"] for r in page.get_json()] == [a_jobs[0]["id"]]
    assert '"total": 4' in page.headers["X-Pagination"]
    assert client.get("/api/v1/admin/jobs?page=99999999999999999999",
                      headers=admin).get_json() == []


def test_non_admins_get_403_and_anonymous_401(client: FlaskClient, auth: dict[str, str]) -> None:
    assert_error(client.get("/api/v1/admin/jobs", headers=auth), 403, "admin role")
    assert_error(client.get("/api/v1/admin/jobs"), 401)


def test_admin_query_is_validated(client: FlaskClient, session: Session) -> None:
    admin = make_admin(client, session)
    for query in ("userId=me", "status=lost", "kind=poem", "page=0", "page_size=1000"):
        assert_error(client.get(f"/api/v1/admin/jobs?{query}", headers=admin), 422)


@pytest.fixture
def committed_user(database_url: str) -> Any:
    """A user committed for real: the CLI opens its own connection to the database."""
    engine = create_engine(normalize_database_url(database_url))
    email = f"Ops-{uuid.uuid4().hex[:8]}@Example.com"
    with engine.begin() as conn:
        conn.execute(insert(User).values(
            id=uuid.uuid4(), email=email.lower(), password_hash="x", token_version=0,
            role="user"))
    yield engine, email
    with engine.begin() as conn:
        conn.execute(delete(User).where(User.email == email.lower()))
    engine.dispose()


def test_cli_promotes_a_user_to_admin(committed_user: Any, database_url: str) -> None:
    engine, email = committed_user
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "cli-test-secret"}
    lifetales = str(Path(sys.executable).parent / "lifetales")

    def promote(address: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([lifetales, "users", "promote", address], env=env, text=True,
                              capture_output=True, timeout=60, check=False)

    done = promote(email)
    assert done.returncode == 0, done.stderr
    assert "is now an admin" in done.stdout
    with engine.connect() as conn:
        assert conn.scalar(select(User.role).where(User.email == email.lower())) == "admin"
    missing = promote("nobody@example.com")
    assert missing.returncode == 1 and "no account" in missing.stderr
