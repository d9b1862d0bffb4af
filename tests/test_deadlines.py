"""Deadlines (``Cancel-After`` / ``deadlineSeconds``): a job not started by then ends ``expired``
without waiting for a worker; one running past it stops at its next safe point and ends
``canceled`` with reason ``deadline``; the states clients see are documented in one place."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import JOB_STATUSES, Job, JobEvent, Story, User, WebhookDelivery
from models.base import utcnow
from tests.conftest import assert_error
from tests.fakes.gemini_server import FakeGemini
from tests.test_worker_jobs import ctx, fresh, gemini, user
from workers import lifecycle
from workers.context import WorkerContext
from workers.dispatch import create_job
from workers.heartbeat import HeartbeatPump
from workers.parents import cancel_job
from workers.reaper import reap_stale_jobs
from workers.runner import JobRun, run_job
from workers.tasks.illustration import illustrate

__all__ = ["ctx", "gemini", "user"]  # fixtures shared with the worker tests


def illustration_job(session: Session, user: User, deadline_s: float | None,
                     webhook_url: str | None = None) -> Job:
    job = create_job(
        session, owner_id=user.id, kind="illustration",
        input={"prompt": "a tram", "style": "pastel"}, webhook_url=webhook_url,
        deadline_at=utcnow() + timedelta(seconds=deadline_s) if deadline_s is not None else None)
    session.commit()
    return job


def final_event(session: Session, job: Job) -> dict[str, object]:
    data = session.scalars(select(JobEvent.data).where(JobEvent.job_id == job.id,
                                                       JobEvent.type == "done")).one()
    return dict(data)


# --- the API -----------------------------------------------------------------------------


def test_cancel_after_sets_the_deadline(client: FlaskClient, auth: dict[str, str]) -> None:
    before = utcnow()
    response = client.post("/api/v1/illustrations", headers={**auth, "Cancel-After": "90"},
                           json={"prompt": "x"})
    assert response.status_code == 202, response.get_json()
    at = datetime.fromisoformat(response.get_json()["deadlineAt"])
    assert before + timedelta(seconds=89) < at < utcnow() + timedelta(seconds=91)
    body = client.post("/api/v1/illustrations", headers=auth,
                       json={"prompt": "y", "deadlineSeconds": 30}).get_json()
    assert body["deadlineAt"] is not None
    plain = client.post("/api/v1/illustrations", headers=auth, json={"prompt": "z"}).get_json()
    assert plain["deadlineAt"] is None
    # Header and body may both be sent when they agree.
    agree = client.post("/api/v1/illustrations", headers={**auth, "Cancel-After": "30"},
                        json={"prompt": "w", "deadlineSeconds": 30})
    assert agree.status_code == 202


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1.5", "604801", ""])
def test_a_bad_cancel_after_is_422(client: FlaskClient, auth: dict[str, str],
                                    value: str) -> None:
    body = assert_error(client.post("/api/v1/illustrations",
                                    headers={**auth, "Cancel-After": value},
                                    json={"prompt": "x"}), 422, "Cancel-After")
    assert "headers" in body["errors"]


def test_cancel_after_and_deadline_seconds_must_agree(
        client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_error(client.post("/api/v1/illustrations",
                                    headers={**auth, "Cancel-After": "10"},
                                    json={"prompt": "x", "deadlineSeconds": 20}), 422, "disagree")
    assert list(body["errors"]["json"]) == ["deadlineSeconds"]
    assert_error(client.post("/api/v1/illustrations", headers=auth,
                             json={"prompt": "x", "deadlineSeconds": 0}), 422, "deadlineSeconds")


def test_every_submit_takes_a_deadline(client: FlaskClient, auth: dict[str, str]) -> None:
    space = client.post("/api/v1/spaces", headers=auth, json={"title": "T"}).get_json()
    client.post(f"/api/v1/spaces/{space['id']}/notes", headers=auth,
                json={"textContent": "We walked."})
    story = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth,
                        json={"deadlineSeconds": 60})
    assert story.status_code == 202 and story.get_json()["deadlineAt"]
    import base64

    from tests.audio import wav_tone

    audio = base64.b64encode(wav_tone(0.1)).decode()
    transcription = client.post("/api/v1/transcriptions", headers={**auth, "Cancel-After": "60"},
                                json={"audioData": audio, "mimeType": "audio/wav"})
    assert transcription.status_code == 202 and transcription.get_json()["deadlineAt"]


def test_expired_is_a_state_clients_can_list_and_read_about(
        app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    assert "expired" in JOB_STATUSES
    spec = client.get("/api/openapi.json").get_json()
    job = spec["components"]["schemas"]["Job"]["properties"]
    assert job["status"]["enum"] == list(JOB_STATUSES)
    lifecycle_doc = job["status"]["description"]
    assert "`expired`" in lifecycle_doc and "`deadline`" in lifecycle_doc
    query = next(p for p in spec["paths"]["/api/v1/jobs"]["get"]["parameters"]
                 if p["name"] == "status")
    assert query["schema"]["enum"] == list(JOB_STATUSES)
    assert query["description"] == lifecycle_doc  # the one description, reused
    response = client.get("/api/v1/jobs?status=expired", headers=auth)
    assert response.status_code == 200 and response.get_json() == []


# --- not started in time: expired ----------------------------------------------------------


def test_a_job_whose_deadline_passed_before_it_started_expires_at_claim(
        session: Session, ctx: WorkerContext, user: User, gemini: FakeGemini) -> None:
    job = illustration_job(session, user, deadline_s=-1, webhook_url="https://8.8.8.8/h")
    run_job(str(job.id), illustrate, context=ctx)
    done = fresh(session, job)
    assert done.status == "expired" and done.attempts == 0 and done.started_at is None
    assert done.error == lifecycle.EXPIRED and done.finished_at is not None
    assert gemini.request_count == 0  # no work was started
    assert final_event(session, job)["status"] == "expired"
    # ``completed`` is announced for expired jobs too.
    events = session.scalars(select(WebhookDelivery.event)
                             .where(WebhookDelivery.job_id == job.id)).all()
    assert events == ["completed"]


def test_the_reaper_expires_queued_jobs_without_waiting_for_a_worker(
        session: Session, user: User) -> None:
    overdue = illustration_job(session, user, deadline_s=-1)
    in_time = illustration_job(session, user, deadline_s=600)
    no_deadline = illustration_job(session, user, deadline_s=None)
    # One that had started and waits to be retried is stopped by its deadline, not expired.
    retried = illustration_job(session, user, deadline_s=-1)
    session.execute(update(Job).where(Job.id == retried.id).values(started_at=utcnow(),
                                                                    attempts=1))
    session.commit()

    report = reap_stale_jobs(session, resend_after_s=3600, heartbeat_timeout_s=30)

    assert report.past_deadline == 2
    assert fresh(session, overdue).status == "expired"
    assert fresh(session, in_time).status == "queued"
    assert fresh(session, no_deadline).status == "queued"
    stopped = fresh(session, retried)
    assert stopped.status == "canceled" and (stopped.error or {})["reason"] == "deadline"


# --- running past it: canceled, reason deadline -------------------------------------------


def test_a_running_job_past_its_deadline_stops_at_its_next_safe_point(
        session: Session, ctx: WorkerContext, user: User, client: FlaskClient,
        session_factory: sessionmaker[Session]) -> None:
    job = illustration_job(session, user, deadline_s=0.4, webhook_url="https://8.8.8.8/h")
    steps: list[str] = []

    def slow_handler(run: JobRun) -> None:
        run.progress("first")
        steps.append("first")
        time.sleep(0.5)  # the deadline passes during the work
        run.progress("second")
        steps.append("second")  # never reached
        run.succeed({"never": True})

    run_job(str(job.id), slow_handler, context=ctx)

    done = fresh(session, job)
    assert steps == ["first"]
    assert done.status == "canceled" and done.result is None
    assert done.error == {"code": "canceled", "message": "the job ran past its deadline",
                          "retryable": False, "reason": "deadline"}
    assert final_event(session, job)["error"] == done.error
    events = session.scalars(select(WebhookDelivery.event)
                             .where(WebhookDelivery.job_id == job.id)).all()
    assert events == ["completed"]


def test_check_cancel_stops_a_job_past_its_deadline(
        session: Session, ctx: WorkerContext, user: User) -> None:
    job = illustration_job(session, user, deadline_s=0.2)

    def handler(run: JobRun) -> None:
        time.sleep(0.3)
        run.check_cancel()
        run.succeed({"never": True})

    run_job(str(job.id), handler, context=ctx)
    assert (fresh(session, job).error or {}).get("reason") == "deadline"


def test_a_user_cancel_has_no_deadline_reason(
        session: Session, ctx: WorkerContext, user: User) -> None:
    job = illustration_job(session, user, deadline_s=600)

    def handler(run: JobRun) -> None:
        cancel_job(run.session, run.job)
        run.check_cancel()

    run_job(str(job.id), handler, context=ctx)
    done = fresh(session, job)
    assert done.status == "canceled" and done.error == lifecycle.CANCELED


def test_the_heartbeat_asks_a_job_past_its_deadline_to_stop(
        session: Session, user: User, session_factory: sessionmaker[Session]) -> None:
    late = illustration_job(session, user, deadline_s=600)
    other = illustration_job(session, user, deadline_s=None)
    for job in (late, other):
        assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=30) is not None
    session.execute(update(Job).where(Job.id == late.id)
                    .values(deadline_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    pump = HeartbeatPump(session_factory, interval_s=60)
    pump.track(late.id, 1)
    pump.track(other.id, 1)
    assert pump.beat() == 2
    assert fresh(session, late).cancel_requested is True
    assert fresh(session, other).cancel_requested is False


def test_the_reaper_asks_running_jobs_past_their_deadline_to_stop(
        session: Session, user: User) -> None:
    job = illustration_job(session, user, deadline_s=600)
    assert lifecycle.start_job(session, job.id, heartbeat_timeout_s=30) is not None
    session.execute(update(Job).where(Job.id == job.id)
                    .values(deadline_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    reap_stale_jobs(session, resend_after_s=3600, heartbeat_timeout_s=30)
    running = fresh(session, job)
    assert running.status == "running" and running.cancel_requested is True


def test_a_story_waiting_on_illustrations_past_its_deadline_ends_with_them(
        session: Session, user: User) -> None:
    story_job = create_job(session, owner_id=user.id, kind="story", input={},
                           deadline_at=utcnow() + timedelta(seconds=600))
    session.commit()
    assert lifecycle.start_job(session, story_job.id, heartbeat_timeout_s=30) is not None
    from models import Space

    space = Space(owner_id=user.id, title="T")
    session.add(space)
    session.flush()
    session.add(Story(space_id=space.id, version=1, job_id=story_job.id, status="illustrating",
                      settings={}))
    children = [create_job(session, owner_id=user.id, kind="illustration", input={},
                           parent_id=story_job.id) for _ in range(2)]
    session.commit()
    assert lifecycle.start_job(session, children[0].id, heartbeat_timeout_s=30) is not None
    session.execute(update(Job).where(Job.id == story_job.id)
                    .values(deadline_at=utcnow() - timedelta(seconds=1)))
    session.commit()

    reap_stale_jobs(session, resend_after_s=3600, heartbeat_timeout_s=30)

    parent = fresh(session, story_job)
    assert parent.status == "canceled" and (parent.error or {})["reason"] == "deadline"
    assert fresh(session, children[1]).status == "canceled"  # was queued: canceled now
    assert fresh(session, children[0]).cancel_requested is True  # running: asked to stop
    story = session.scalars(select(Story).where(Story.job_id == story_job.id)).one()
    session.refresh(story)
    assert story.status == "canceled"


def test_no_deadline_changes_nothing(session: Session, ctx: WorkerContext, user: User,
                                     gemini: FakeGemini) -> None:
    job = illustration_job(session, user, deadline_s=None)
    run_job(str(job.id), illustrate, context=ctx)
    assert fresh(session, job).status == "succeeded"
