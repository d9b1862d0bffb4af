"""Job webhooks against a local receiver: signed the documented way (Standard Webhooks), retried
with backoff under one ``webhook-id``, never after a final 4xx, never to a private address
unless allowed, every attempt visible on the job; the outbox costs nothing without a webhook.

Deliveries run through ``deliver`` (the task's body) against the test database; the last test
runs the real flow: API, broker, a Celery worker consuming the ``webhooks`` queue.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from config import WebhookSettings
from models import Job, JobEvent, User, WebhookDelivery
from tests.conftest import assert_error
from tests.fakes.gemini_server import FakeGemini
from tests.fakes.webhook_receiver import Received, WebhookReceiver
from tests.test_worker_jobs import ctx, gemini, user
from workers import lifecycle
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.parents import cancel_job
from workers.runner import run_job
from workers.tasks.illustration import illustrate
from workers.webhooks import Outcome, deliver, resend_due_deliveries

__all__ = ["ctx", "gemini", "user"]  # fixtures shared with the worker tests

# The receiver listens on 127.0.0.1 over http: allowed here only, as for local development.
LOCAL = WebhookSettings(allow_http=True, allow_private=True, connect_timeout_s=2,
                        read_timeout_s=2, max_attempts=4, retry_base_s=0.02, retry_max_s=0.1)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def local_webhooks(app: Flask) -> None:
    """The API accepts webhooks to the local receiver (WEBHOOK_ALLOW_HTTP/PRIVATE)."""
    app_state = app.extensions["lifetales"]
    app_state.settings = dataclasses.replace(app_state.settings, webhooks=LOCAL)


def verify(secret: str, request: Received) -> dict[str, Any]:
    """The README's verification, written out again: the body if the signature is valid."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = (f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}."
              .encode() + request.body)
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = [s.partition(",")[2] for s in request.headers["webhook-signature"].split()]
    assert any(hmac.compare_digest(expected, sig) for sig in signatures), request.headers
    assert abs(time.time() - int(request.headers["webhook-timestamp"])) < 60
    body: dict[str, Any] = json.loads(request.body)
    return body


def secret_of(client: FlaskClient, auth: dict[str, str]) -> str:
    response = client.get("/api/v1/webhooks/secret", headers=auth)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret: str = response.get_json()["secret"]
    return secret


def submit_illustration(client: FlaskClient, auth: dict[str, str], receiver: WebhookReceiver,
                        **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/illustrations", headers=auth, json={
        "prompt": "a tram at dusk", "webhook": receiver.url, **fields})
    assert response.status_code == 202, response.get_json()
    job: dict[str, Any] = response.get_json()
    return job


def finish(client: FlaskClient, auth: dict[str, str], job: dict[str, Any]) -> None:
    """End the (queued) job: canceling it is a terminal transition like any other."""
    assert client.post(f"/api/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200


def ended_job(client: FlaskClient, auth: dict[str, str], session: Session,
              receiver: WebhookReceiver) -> tuple[dict[str, Any], WebhookDelivery]:
    """A job with a webhook, ended: its ``completed`` delivery, written and not yet sent."""
    job = submit_illustration(client, auth, receiver)
    finish(client, auth, job)
    [delivery] = deliveries(session, job["id"])
    return job, delivery


def deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    return list(session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.job_id == uuid.UUID(job_id))
        .order_by(WebhookDelivery.created_at).execution_options(populate_existing=True)))


def deliver_until_settled(factory: sessionmaker[Session], delivery_id: uuid.UUID,
                          settings: WebhookSettings = LOCAL) -> list[Outcome]:
    """Run the delivery's attempts as the worker would (each when due) until it settles."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        outcome = deliver(factory, settings, delivery_id)
        if outcome is not None:
            outcomes.append(outcome)
        with factory() as session:
            status = session.scalar(select(WebhookDelivery.status)
                                    .where(WebhookDelivery.id == delivery_id))
        if status != "pending":
            return outcomes
        time.sleep(0.01)
    raise AssertionError(f"delivery still pending after {len(outcomes)} attempts")


# --- signing, retries, final answers -------------------------------------------------------


def test_completed_delivery_is_signed_and_carries_the_job_resource(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None, caplog: pytest.LogCaptureFixture) -> None:
    secret = secret_of(client, auth)
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    job = submit_illustration(client, auth, receiver)
    assert job["webhook"] == receiver.url and job["webhookEvents"] == ["completed"]
    finish(client, auth, job)
    [delivery] = deliveries(session, job["id"])
    assert delivery.event == "completed" and delivery.status == "pending"

    with caplog.at_level(logging.DEBUG):
        [outcome] = deliver_until_settled(session_factory, delivery.id)
    assert outcome.status_code == 200
    [request] = receiver.requests
    assert request.headers["webhook-id"] == str(delivery.id)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["lifetales-event"] == "completed"
    assert request.path == "/hooks/lifetales"
    payload = verify(secret, request)
    polled = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()
    assert payload == {k: v for k, v in polled.items() if k != "webhookDeliveries"}
    assert payload["status"] == "canceled"
    assert secret not in caplog.text  # the secret is never logged
    # The attempt is visible on the job.
    [shown] = polled["webhookDeliveries"]
    assert shown["id"] == str(delivery.id) and shown["event"] == "completed"
    assert shown["status"] == "delivered"
    assert [(a["attempt"], a["statusCode"], a["error"]) for a in shown["attempts"]] == [
        (1, 200, None)]


def test_500_twice_then_200_is_three_attempts_under_one_webhook_id(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None) -> None:
    secret = secret_of(client, auth)
    job, delivery = ended_job(client, auth, session, receiver)
    receiver.script(500, 500, 200)

    outcomes = deliver_until_settled(session_factory, delivery.id)

    assert [o.status_code for o in outcomes] == [500, 500, 200]
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(delivery.id)}
    bodies = {r.body for r in receiver.requests}
    assert len(bodies) == 1  # retries send the very same payload
    for request in receiver.requests:
        verify(secret, request)
    # Backed off between attempts.
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    assert all(gap >= LOCAL.retry_base_s / 2 for gap in gaps), gaps
    [row] = deliveries(session, job["id"])
    assert row.status == "delivered" and row.attempts == 3 and row.last_status_code == 200
    shown = client.get(f"/api/v1/jobs/{job['id']}", headers=auth).get_json()
    attempts = shown["webhookDeliveries"][0]["attempts"]
    assert [(a["attempt"], a["statusCode"]) for a in attempts] == [(1, 500), (2, 500), (3, 200)]
    assert all(a["at"] for a in attempts)


def test_a_410_stops_the_retries(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None) -> None:
    job, delivery = ended_job(client, auth, session, receiver)
    receiver.script(410)

    outcomes = deliver_until_settled(session_factory, delivery.id)

    assert [o.status_code for o in outcomes] == [410]
    assert deliver(session_factory, LOCAL, delivery.id) is None  # a late message: nothing
    assert len(receiver.requests) == 1
    [row] = deliveries(session, job["id"])
    assert row.status == "failed" and row.attempts == 1 and row.last_status_code == 410


@pytest.mark.parametrize(("script", "codes", "status"), [
    ((429, 200), [429, 200], "delivered"),  # 408 and 429 mean "later": retried
    ((408, 200), [408, 200], "delivered"),
    ((400,), [400], "failed"),  # any other 4xx is final
    ((302, 200), [302, 200], "delivered"),  # a redirect is a failed attempt, never followed
    ((503, 503, 503, 503), [503, 503, 503, 503], "failed"),  # LOCAL.max_attempts
])
def test_which_answers_are_retried(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None, script: tuple[int, ...], codes: list[int], status: str) -> None:
    job, delivery = ended_job(client, auth, session, receiver)
    receiver.script(*script)
    outcomes = deliver_until_settled(session_factory, delivery.id)
    assert [o.status_code for o in outcomes] == codes
    assert [r.path for r in receiver.requests] == ["/hooks/lifetales"] * len(codes)
    assert deliveries(session, job["id"])[0].status == status


def test_an_unreachable_receiver_is_retried_and_recorded(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], local_webhooks: None) -> None:
    with WebhookReceiver() as gone:
        url = gone.url  # a port nobody listens on once it is closed
    job = client.post("/api/v1/illustrations", headers=auth,
                      json={"prompt": "x", "webhook": url}).get_json()
    finish(client, auth, job)
    [delivery] = deliveries(session, job["id"])
    outcomes = deliver_until_settled(session_factory, delivery.id,
                                     dataclasses.replace(LOCAL, max_attempts=2))
    assert [o.status_code for o in outcomes] == [None, None]
    assert all(o.error and o.error.startswith("connection_error") for o in outcomes)
    [row] = deliveries(session, job["id"])
    assert row.status == "failed" and [a["error"] for a in row.attempt_log or []] == [
        o.error for o in outcomes]


# --- the SSRF guard --------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "https://127.0.0.1/hook",
    "https://localhost/hook",
    "https://10.1.2.3/hook",
    "https://192.168.0.10:8443/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://100.64.0.1/hook",
    "https://0.0.0.0/hook",
])
def test_a_private_address_is_refused_at_submit(
        client: FlaskClient, auth: dict[str, str], session: Session, url: str) -> None:
    before = session.scalar(select(func.count()).select_from(Job))
    body = assert_error(client.post("/api/v1/illustrations", headers=auth,
                                    json={"prompt": "x", "webhook": url}), 422, "webhook")
    assert list(body["errors"]["json"]) == ["webhook"]
    assert "private" in body["message"] or "loopback" in body["message"]
    assert session.scalar(select(func.count()).select_from(Job)) == before


@pytest.mark.parametrize(("url", "fragment"), [
    ("http://8.8.8.8/hook", "https"),  # plain http only when allowed
    ("ftp://8.8.8.8/hook", "https"),
    ("https:///nohost", "host"),
    ("https://user:pw@8.8.8.8/hook", "credentials"),
    ("https://8.8.8.8:99999/hook", "valid URL"),
])
def test_webhook_urls_are_checked(client: FlaskClient, auth: dict[str, str], url: str,
                                  fragment: str) -> None:
    body = assert_error(client.post("/api/v1/illustrations", headers=auth,
                                    json={"prompt": "x", "webhook": url}), 422, fragment)
    assert list(body["errors"]["json"]) == ["webhook"]


def test_a_public_address_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    # An IP literal: accepted without a DNS lookup, and nothing is sent before the job ends.
    response = client.post("/api/v1/illustrations", headers=auth, json={
        "prompt": "x", "webhook": "https://8.8.8.8/hook", "webhookEvents": ["progress"]})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["webhookEvents"] == ["progress", "completed"]


def test_webhook_fields_are_validated(client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_error(client.post("/api/v1/illustrations", headers=auth, json={
        "prompt": "x", "webhook": "https://8.8.8.8/h", "webhookEvents": ["finished"]}), 422)
    assert list(body["errors"]["json"]) == ["webhookEvents"]
    body = assert_error(client.post("/api/v1/illustrations", headers=auth, json={
        "prompt": "x", "webhookEvents": ["start"]}), 422, "webhook")
    assert list(body["errors"]["json"]) == ["webhookEvents"]


def test_the_address_is_checked_again_at_delivery(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None) -> None:
    job, delivery = ended_job(client, auth, session, receiver)
    strict = dataclasses.replace(LOCAL, allow_private=False)
    outcomes = deliver_until_settled(session_factory, delivery.id, strict)
    assert [(o.status_code, (o.error or "").split(":")[0]) for o in outcomes] == [
        (None, "refused")]
    assert receiver.requests == []
    assert deliveries(session, job["id"])[0].status == "failed"


# --- the secret --------------------------------------------------------------------------------


def test_the_secret_is_per_user_stable_and_rotatable(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    first = secret_of(client, auth)
    assert secret_of(client, auth) == first
    assert secret_of(client, other_auth) != first
    rotated = client.post("/api/v1/webhooks/secret/rotate", headers=auth)
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    assert rotated.get_json()["algorithm"] == "HMAC-SHA256"
    new = rotated.get_json()["secret"]
    assert new != first and new.startswith("whsec_") and secret_of(client, auth) == new
    assert client.get("/api/v1/webhooks/secret").status_code == 401
    assert client.post("/api/v1/webhooks/secret/rotate").status_code == 401


def test_retries_after_a_rotation_are_signed_with_the_new_secret(
        client: FlaskClient, auth: dict[str, str], session: Session,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver,
        local_webhooks: None) -> None:
    _, delivery = ended_job(client, auth, session, receiver)
    receiver.script(500)
    assert deliver(session_factory, LOCAL, delivery.id) is not None  # first use: secret made
    old = secret_of(client, auth)
    verify(old, receiver.requests[0])
    new = client.post("/api/v1/webhooks/secret/rotate", headers=auth).get_json()["secret"]
    deliver_until_settled(session_factory, delivery.id)
    verify(new, receiver.requests[1])


# --- the outbox, through the worker -----------------------------------------------------------


def test_events_become_deliveries_with_the_transition_and_children_do_not_inherit(
        session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini,
        session_factory: sessionmaker[Session], receiver: WebhookReceiver) -> None:
    job = create_job(session, owner_id=user.id, kind="illustration",
                     input={"prompt": "a tram", "style": "pastel"}, webhook_url=receiver.url,
                     webhook_events=["start", "progress", "completed"])
    child = create_job(session, owner_id=user.id, kind="illustration",
                       input={"prompt": "a bird", "style": "pastel"}, parent_id=job.id)
    session.commit()

    run_job(str(job.id), illustrate, context=ctx)

    rows = deliveries(session, str(job.id))
    events = [row.event for row in rows]
    assert events[0] == "start" and events[-1] == "completed", events
    assert set(events) <= {"start", "progress", "completed"} and events.count("completed") == 1
    start = rows[0].payload or {}
    assert start["status"] == "running" and start["id"] == str(job.id)
    for row in rows:
        deliver_until_settled(session_factory, row.id)
    payloads = {r.headers["lifetales-event"]: json.loads(r.body) for r in receiver.requests}
    assert payloads["completed"]["status"] == "succeeded"
    assert payloads["completed"]["result"]["imageUrl"]
    assert session.scalar(select(func.count()).select_from(WebhookDelivery)
                          .where(WebhookDelivery.job_id == child.id)) == 0


def test_progress_deliveries_not_yet_sent_are_coalesced(
        session: Session, user: User, receiver: WebhookReceiver) -> None:
    job = create_job(session, owner_id=user.id, kind="illustration", input={"prompt": "x"},
                     webhook_url=receiver.url, webhook_events=["progress", "completed"])
    session.commit()
    claimed = lifecycle.start_job(session, job.id, heartbeat_timeout_s=30)
    assert claimed is not None
    for step in range(5):
        assert lifecycle.set_progress(session, claimed, "drawing", step, 5)
        session.commit()
    [progress] = deliveries(session, str(job.id))
    assert progress.event == "progress"
    assert (progress.payload or {})["progress"] == {"step": "drawing", "current": 4, "total": 5}


def test_a_job_without_webhook_writes_no_delivery_and_costs_no_query(
        session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini) -> None:
    job = create_job(session, owner_id=user.id, kind="illustration",
                     input={"prompt": "a tram", "style": "pastel"})
    session.commit()
    statements: list[str] = []

    from sqlalchemy import event

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", record)
    try:
        run_job(str(job.id), illustrate, context=ctx)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert session.get(Job, job.id, populate_existing=True).status == "succeeded"  # type: ignore[union-attr]
    assert not any("webhook_deliveries" in s for s in statements), statements
    assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0


def test_a_terminal_event_of_a_job_the_session_does_not_hold_still_announces_it(
        session: Session, user: User, receiver: WebhookReceiver) -> None:
    # Queued children are canceled by id with their parent: the session never loads them.
    parent = create_job(session, owner_id=user.id, kind="story", input={})
    with_hook = create_job(session, owner_id=user.id, kind="illustration", input={},
                           parent_id=parent.id, webhook_url=receiver.url)
    without = create_job(session, owner_id=user.id, kind="illustration", input={},
                         parent_id=parent.id)
    session.commit()
    session.expunge(with_hook)
    session.expunge(without)
    cancel_job(session, parent)
    [delivery] = session.scalars(select(WebhookDelivery)).all()
    assert delivery.job_id == with_hook.id and delivery.event == "completed"
    assert delivery.payload is None  # taken on the first attempt: the job no longer changes
    done = session.scalars(select(JobEvent.data).where(JobEvent.job_id == without.id,
                                                       JobEvent.type == "done")).one()
    assert done["status"] == "canceled"


def test_the_reaper_resends_deliveries_whose_message_was_lost(
        session: Session, user: User, receiver: WebhookReceiver) -> None:
    job = create_job(session, owner_id=user.id, kind="illustration", input={},
                     webhook_url=receiver.url)
    session.commit()
    cancel_job(session, job)
    assert resend_due_deliveries(session, overdue_s=3600) == 0  # not overdue yet
    assert resend_due_deliveries(session, overdue_s=-1) == 1


# --- the real flow ---------------------------------------------------------------------------


@pytest.mark.integration
def test_submit_over_http_worker_runs_job_receiver_gets_signed_retried_delivery(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver) -> None:
    from tests.platform import Client, running_stack

    for name, value in (("WEBHOOK_ALLOW_HTTP", "true"), ("WEBHOOK_ALLOW_PRIVATE", "true"),
                        ("WEBHOOK_RETRY_BASE_SECONDS", "0.2")):
        monkeypatch.setenv(name, value)
    with FakeGemini() as fake, running_stack(tmp_path, fake) as stack:
        stack.services.start_worker(
            "w1", queues="transcription,illustration,story,batch,maintenance,webhooks")
        client: Client = stack.client
        secret = client.call("GET", "/webhooks/secret").json()["secret"]
        receiver.script(500)
        job = client.call("POST", "/illustrations", expect=202, json={
            "prompt": "a tram at dusk", "webhook": receiver.url,
            "webhookEvents": ["start"]}).json()
        requests = receiver.wait_for(3, timeout=40)  # start + completed (answered 500, then 200)
        by_event: dict[str, list[Received]] = {}
        for request in requests:
            by_event.setdefault(request.headers["lifetales-event"], []).append(request)
        assert set(by_event) == {"start", "completed"}, by_event
        payloads = [verify(secret, r) for r in requests]
        assert all(p["id"] == job["id"] for p in payloads)
        # The first request was answered 500: that delivery was tried twice, under one id.
        [retried] = [tries for tries in by_event.values() if len(tries) == 2]
        assert len({r.headers["webhook-id"] for r in retried}) == 1
        final = verify(secret, by_event["completed"][-1])
        assert final["status"] == "succeeded" and final["result"]["imageUrl"]
        deadline = time.monotonic() + 10
        while True:
            shown = client.call("GET", f"/jobs/{job['id']}").json()["webhookDeliveries"]
            if all(d["status"] == "delivered" for d in shown) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sorted(d["event"] for d in shown) == ["completed", "start"]
        assert all(d["status"] == "delivered" for d in shown), shown
        assert sum(len(d["attempts"]) for d in shown) == 3
