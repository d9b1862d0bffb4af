"""The poll fast path: each job's document kept in Redis after every commit that changes it,
served by ``GET /jobs/{id}`` with no database read, and the same bytes as the database path
in every state a job can be in. Real PostgreSQL, Redis, the fake Gemini and the webhook
receiver; the transitions are the platform's own (API, ``run_job``, lifecycle, reaper,
retention)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from config import PollSettings, RetentionSettings, Settings
from models import Job, WebhookDelivery
from models.base import utcnow
from tests.conftest import assert_error, register
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.platform import RedisServer
from tests.test_webhooks import LOCAL, deliver_until_settled, local_webhooks, receiver
from tests.test_worker_jobs import ctx, gemini
from workers import job_mirror, lifecycle
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.events import Notifier
from workers.job_mirror import JobMirror
from workers.job_resource import JobDocument, render_job
from workers.reaper import reap_stale_jobs
from workers.retention import prune_retention
from workers.runner import run_job
from workers.tasks.illustration import illustrate

__all__ = ["ctx", "gemini", "local_webhooks", "receiver"]  # shared fixtures, not redefined


def mirror_of(app: Flask) -> JobMirror:
    mirror = app.extensions["lifetales"].mirror
    assert mirror is not None
    return mirror


def submit(client: FlaskClient, auth: dict[str, str], **fields: Any) -> str:
    response = client.post("/api/v1/illustrations", headers=auth,
                           json={"prompt": "a tram at dusk", **fields})
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def assert_same_answer(client: FlaskClient, app: Flask, auth: dict[str, str], session: Session,
                       job_id: str, status: str) -> dict[str, Any]:
    """The poll answered from Redis and the one answered from the database (its entry
    deleted first) are the same bytes and headers, and both are the job as the database has
    it now. Returns the document."""
    mirror = mirror_of(app)
    url = f"/api/v1/jobs/{job_id}"
    assert mirror.owner(uuid.UUID(job_id)) is not None, "no document in Redis to serve"
    fast = client.get(url, headers=auth)
    mirror.client().delete(job_mirror.key(job_id))
    slow = client.get(url, headers=auth)
    assert fast.status_code == slow.status_code == 200
    assert fast.get_data() == slow.get_data()
    for header in ("ETag", "Retry-After", "Cache-Control", "Content-Type"):
        assert fast.headers.get(header) == slow.headers.get(header), header
    row = session.get(Job, uuid.UUID(job_id), populate_existing=True)
    assert row is not None and row.status == status
    assert fast.get_data() == render_job(session, row).body
    session.commit()
    # The database path put the document back for the next poll.
    assert mirror.owner(uuid.UUID(job_id)) == str(row.owner_id)
    body: dict[str, Any] = json.loads(fast.get_data())
    assert body["status"] == status
    return body


def test_every_state_answers_the_same_bytes_from_redis_and_from_the_database(
    client: FlaskClient, app: Flask, auth: dict[str, str], session: Session,
    ctx: WorkerContext,
) -> None:
    def same(job_id: str, status: str) -> dict[str, Any]:
        return assert_same_answer(client, app, auth, session, job_id, status)

    # queued -> running -> progress -> retry queued -> running -> succeeded (a real attempt)
    job_id = submit(client, auth)
    same(job_id, "queued")
    job = lifecycle.start_job(session, uuid.UUID(job_id), heartbeat_timeout_s=30)
    assert job is not None
    session.commit()
    same(job_id, "running")
    assert lifecycle.set_progress(session, job, "drawing", 0, 1)
    session.commit()
    assert same(job_id, "running")["progress"] == {"step": "drawing", "current": 0, "total": 1}
    assert lifecycle.requeue_for_retry(session, job, "upstream_unavailable", "503", delay_s=0)
    session.commit()
    assert same(job_id, "queued")["error"]["code"] == "upstream_unavailable"
    run_job(job_id, illustrate, context=ctx)
    done = same(job_id, "succeeded")
    assert done["attempts"] == 2 and done["result"]["imageUrl"]

    # waiting for quota, then failed for good
    job_id = submit(client, auth)
    job = lifecycle.start_job(session, uuid.UUID(job_id), heartbeat_timeout_s=30)
    assert job is not None
    assert lifecycle.requeue_waiting(session, job, step="waiting_for_quota", delay_s=1)
    session.commit()
    assert same(job_id, "queued")["progress"]["step"] == "waiting_for_quota"
    job = lifecycle.start_job(session, uuid.UUID(job_id), heartbeat_timeout_s=30)
    assert job is not None
    assert lifecycle.fail_job(session, job, "blocked", "the model refused")
    session.commit()
    assert same(job_id, "failed")["error"]["code"] == "blocked"

    # canceled while queued (the API's cancel)
    job_id = submit(client, auth)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    assert same(job_id, "canceled")["cancelRequested"] is True

    # running and asked to stop (no transition: cancelRequested alone changes), then canceled
    job_id = submit(client, auth)
    job = lifecycle.start_job(session, uuid.UUID(job_id), heartbeat_timeout_s=30)
    assert job is not None
    session.commit()
    same(job_id, "running")
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    assert same(job_id, "running")["cancelRequested"] is True
    assert lifecycle.cancel_running_job(session, job)
    session.commit()
    same(job_id, "canceled")

    # a worker that died: the reaper re-queues the job
    job_id = submit(client, auth)
    job = lifecycle.start_job(session, uuid.UUID(job_id), heartbeat_timeout_s=30)
    assert job is not None
    session.commit()
    session.execute(update(Job).where(Job.id == job.id)
                    .values(heartbeat_at=utcnow() - timedelta(minutes=5)))
    session.commit()  # the heartbeat stopped: nothing a client sees changed
    assert reap_stale_jobs(session, heartbeat_timeout_s=30, resend_after_s=3600).requeued == 1
    assert same(job_id, "queued")["error"]["code"] == "worker_lost"

    # its deadline passed before it started (created by the platform's create_job)
    owner = client.get("/api/v1/me", headers=auth).get_json()["id"]
    overdue = create_job(session, owner_id=uuid.UUID(owner), kind="illustration",
                         input={"prompt": "late", "style": "pastel"},
                         deadline_at=utcnow() - timedelta(seconds=1))
    session.commit()
    same(str(overdue.id), "queued")
    reap_stale_jobs(session, heartbeat_timeout_s=30, resend_after_s=3600)
    assert same(str(overdue.id), "expired")["error"]["code"] == "expired"

    # retention turns an old finished job into a tombstone
    old = submit(client, auth)
    run_job(old, illustrate, context=ctx)
    session.execute(update(Job).where(Job.id == uuid.UUID(old))
                    .values(finished_at=utcnow() - timedelta(days=2)))
    session.commit()
    retention = RetentionSettings(job_ttl_s=3600, audio_ttl_s=3600, orphan_grace_s=3600)
    assert prune_retention(session, ctx.storage, retention).jobs_pruned >= 1
    session.commit()
    assert same(old, "succeeded")["dataRemoved"] is True


@pytest.mark.usefixtures("local_webhooks")
def test_webhook_deliveries_show_in_the_document_as_they_are_attempted(
    client: FlaskClient, app: Flask, auth: dict[str, str], session: Session,
    session_factory: sessionmaker[Session], receiver: WebhookReceiver,
) -> None:
    receiver.script(500)
    job_id = submit(client, auth, webhook=receiver.url)
    assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200
    body = assert_same_answer(client, app, auth, session, job_id, "canceled")
    [pending] = body["webhookDeliveries"]
    assert pending["status"] == "pending" and not pending["attempts"]
    delivery_id = session.scalar(select(WebhookDelivery.id)
                                 .where(WebhookDelivery.job_id == uuid.UUID(job_id)))
    assert delivery_id is not None
    deliver_until_settled(session_factory, delivery_id, LOCAL)
    body = assert_same_answer(client, app, auth, session, job_id, "canceled")
    [delivered] = body["webhookDeliveries"]
    assert delivered["status"] == "delivered"
    assert [a["statusCode"] for a in delivered["attempts"]] == [500, 200]


def document(job_id: uuid.UUID, owner: uuid.UUID, version: int, status: str) -> JobDocument:
    body = json.dumps({"id": str(job_id), "status": status, "v": version}).encode()
    return JobDocument(job_id, owner, version, status, body, f"etag-{version}")


def test_a_late_writer_never_replaces_a_newer_document(app: Flask) -> None:
    mirror = mirror_of(app)
    job_id, owner = uuid.uuid4(), uuid.uuid4()
    mirror.write(document(job_id, owner, 3, "running"))
    mirror.write(document(job_id, owner, 2, "queued"))  # committed first, written last
    entry = mirror.lookup(job_id)
    assert entry is not None and entry.status == "running" and entry.etag == "etag-3"
    mirror.write(document(job_id, owner, 4, "succeeded"))
    entry = mirror.lookup(job_id, frozenset({"etag-4"}))
    assert entry is not None and entry.status == "succeeded" and entry.body is None
    # Entries expire (each write renews the life): a killed writer's leftovers go too.
    ttl = mirror.client().ttl(job_mirror.key(job_id))
    assert 0 < ttl <= mirror.ttl_s


def test_a_failed_write_is_repaired_by_the_next_one(tmp_path: Path) -> None:
    """Redis refuses writes for a moment (CLIENT PAUSE WRITE) but still answers reads: the
    entry left behind is deleted by the process's next write, so polls read the database."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        mirror = JobMirror(server.url, ttl_s=60)
        notifier = Notifier(server.url, mirror)
        job_id, other, owner = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        notifier.publish({job_id}, [document(job_id, owner, 1, "queued")])
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
        notifier.publish({job_id}, [document(job_id, owner, 2, "running")])  # times out
        time.sleep(1.6)
        entry = mirror.lookup(job_id)
        assert entry is not None and entry.status == "queued"  # older than the database
        notifier.publish({other}, [document(other, owner, 1, "queued")])
        assert mirror.lookup(job_id) is None  # a miss: the next poll reads the database
        assert mirror.lookup(other) is not None
    finally:
        server.stop()


def test_without_redis_polls_read_the_database(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis,
) -> None:
    from api import create_app

    unreachable = dataclasses.replace(settings, redis_url="redis://127.0.0.1:9/0")
    app = create_app(unreachable, session_factory=session_factory)
    client = app.test_client()
    auth = register(client)
    job_id = submit(client, auth)
    first = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert first.status_code == 200 and first.get_json()["status"] == "queued"
    again = client.get(f"/api/v1/jobs/{job_id}",
                       headers={**auth, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_another_users_job_is_404_even_when_its_document_is_in_redis(
    client: FlaskClient, app: Flask, auth: dict[str, str], other_auth: dict[str, str],
) -> None:
    job_id = submit(client, auth)
    assert mirror_of(app).owner(uuid.UUID(job_id)) is not None
    assert_error(client.get(f"/api/v1/jobs/{job_id}", headers=other_auth), 404, "job")
    assert_error(client.get(f"/api/v1/jobs/{job_id}/events", headers=other_auth), 404, "job")


def test_a_password_change_revokes_older_tokens_on_the_poll_path(
    settings: Settings, session_factory: sessionmaker[Session], redis_client: redis.Redis,
) -> None:
    """Two API processes (two apps): the one that changed the password refuses the old token
    at once; the other one within its token-version cache's TTL."""
    from api import create_app

    cached = dataclasses.replace(settings, poll=PollSettings(token_version_cache_s=1))
    first = create_app(cached, session_factory=session_factory).test_client()
    second = create_app(cached, session_factory=session_factory).test_client()
    auth = register(first, password="the old password")
    job_id = submit(first, auth)
    url = f"/api/v1/jobs/{job_id}"
    assert first.get(url, headers=auth).status_code == 200
    assert second.get(url, headers=auth).status_code == 200  # cached there from now on
    changed = first.post("/api/v1/auth/password", headers=auth, json={
        "currentPassword": "the old password", "newPassword": "the new password"})
    assert changed.status_code == 200
    assert_error(first.get(url, headers=auth), 401)
    assert second.get(url, headers=auth).status_code == 200  # within the TTL
    time.sleep(1.1)
    assert_error(second.get(url, headers=auth), 401)
    fresh = {"Authorization": f"Bearer {changed.get_json()['accessToken']}"}
    assert second.get(url, headers=fresh).status_code == 200


def test_prefer_wait_wakes_on_the_notification_and_answers_from_redis(
    client: FlaskClient, app: Flask, auth: dict[str, str],
) -> None:
    """A waiting submit reads the status the notification announced from the job's document
    in Redis, and answers with that document: here one no database row agrees with, which
    shows where the answer came from."""
    key = f"k-{uuid.uuid4()}"
    first = client.post("/api/v1/illustrations", headers={**auth, "Idempotency-Key": key},
                        json={"prompt": "a lighthouse"}).get_json()
    job_id, owner = uuid.UUID(first["id"]), uuid.UUID(client.get(
        "/api/v1/me", headers=auth).get_json()["id"])
    finished = document(job_id, owner, 1000, "succeeded")
    notifier = app.extensions["lifetales"].notifier
    answered = threading.Event()

    def worker_commits() -> None:  # what a worker's commit writes and announces, until heard
        time.sleep(0.2)
        notifier.publish({job_id}, [finished])
        while not answered.wait(0.2):
            notifier.publish({job_id}, [])

    thread = threading.Thread(target=worker_commits)
    thread.start()
    started = time.monotonic()
    try:
        response = client.post("/api/v1/illustrations", json={"prompt": "a lighthouse"},
                               headers={**auth, "Idempotency-Key": key, "Prefer": "wait=5"})
    finally:
        answered.set()
        thread.join()
    assert response.status_code == 200, response.get_data()
    assert response.get_data() == finished.body
    assert response.headers["Preference-Applied"] == "wait=5"
    assert time.monotonic() - started < 3
