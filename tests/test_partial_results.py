"""Partial results are never thrown away: a story whose illustrations partly failed finishes
``succeeded`` with its chapters and a per-chapter error list, and
``POST /spaces/{id}/story/illustrations/retry`` draws only the missing images afterwards.

Jobs run through ``run_job`` against real PostgreSQL and the real SDK talking to the fake Gemini;
the last test does the same over HTTP with the platform's real processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Job
from tests.conftest import assert_error, make_note, make_space
from tests.fakes.gemini_server import FakeGemini
from tests.platform import Stack, running_stack
from tests.test_worker_jobs import ctx, gemini  # noqa: F401 - shared fixtures, not redefined
from workers.context import WorkerContext
from workers.runner import run_job
from workers.tasks.illustration import illustrate
from workers.tasks.story import build_story


def story_space(client: FlaskClient, auth: dict[str, str], notes: int = 3) -> str:
    space: str = make_space(client, auth, title="Alps")["id"]
    for i in range(notes):
        make_note(client, auth, space, title=f"Day {i + 1}", textContent=f"Hike {i + 1}.",
                  timestamp=1_700_000_000_000 + i * 86_400_000)
    return space


def children(session: Session, job_id: str) -> list[Job]:
    """The job's illustration children, in chapter order."""
    session.expire_all()
    found = session.scalars(select(Job).where(Job.parent_id == uuid.UUID(job_id))).all()
    return sorted(found, key=lambda j: (j.created_at, j.input["variant"]))


def run_story(session: Session, ctx: WorkerContext, job_id: str,  # noqa: F811
              gemini: FakeGemini, block: Collection[int] = ()) -> None:  # noqa: F811
    """Run the story job, then its illustrations in order; those at ``block`` are refused."""
    run_job(job_id, build_story, context=ctx)
    for index, child in enumerate(children(session, job_id)):
        if index in block:
            gemini.block_next("illustration")
        run_job(str(child.id), illustrate, context=ctx)


def get_job(client: FlaskClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def get_story(client: FlaskClient, auth: dict[str, str], space: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/spaces/{space}/story", headers=auth)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def retry(client: FlaskClient, auth: dict[str, str], space: str, **headers: str) -> Any:
    return client.post(f"/api/v1/spaces/{space}/story/illustrations/retry",
                       headers={**auth, **headers})


@pytest.fixture
def partial(client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
            gemini: FakeGemini) -> tuple[str, dict[str, Any]]:  # noqa: F811
    """A space whose story was published with chapter 1's illustration refused."""
    space = story_space(client, auth)
    job = client.post(f"/api/v1/spaces/{space}/story", json={}, headers=auth).get_json()
    run_story(session, ctx, job["id"], gemini, block={1})
    return space, get_job(client, auth, job["id"])


def test_a_story_with_failed_illustrations_succeeds_with_its_chapters_and_their_errors(
    client: FlaskClient, auth: dict[str, str], partial: tuple[str, dict[str, Any]]
) -> None:
    space, job = partial
    assert job["status"] == "succeeded" and job["error"] is None
    result = job["result"]
    assert result["chapterCount"] == 3
    assert result["illustrations"] == {"total": 3, "succeeded": 2, "failed": 1, "canceled": 0}
    story = get_story(client, auth, space)
    chapters = story["chapters"]
    assert story["status"] == "ready" and story["version"] == result["version"] == 1
    assert [bool(c["generatedImageUrl"]) for c in chapters] == [True, False, True]
    assert result["illustrationErrors"] == [{
        "chapterId": chapters[1]["id"], "chapterIndex": 1, "variant": 0, "code": "blocked",
        "message": result["illustrationErrors"][0]["message"],
    }]
    assert "SAFETY" in result["illustrationErrors"][0]["message"]
    assert story["missingIllustrations"] == [
        {"chapterId": chapters[1]["id"], "chapterIndex": 1, "variant": 0}]


def test_retry_draws_only_the_missing_illustrations(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    gemini: FakeGemini, partial: tuple[str, dict[str, Any]],  # noqa: F811
) -> None:
    space, first = partial
    before = get_story(client, auth, space)
    drawn_before = len(gemini.requests_of("illustration"))

    response = retry(client, auth, space)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/api/v1/jobs/{response.get_json()['id']}"
    job_id = response.get_json()["id"]
    # A second retry while this one runs is refused: the images would be drawn twice.
    assert_error(retry(client, auth, space), 409, "still running")

    run_story(session, ctx, job_id, gemini)
    assert len(gemini.requests_of("illustration")) == drawn_before + 1
    assert len(gemini.requests_of("story")) == 1  # the text was not written again
    job = get_job(client, auth, job_id)
    assert job["status"] == "succeeded", job
    chapter_id = before["chapters"][1]["id"]
    assert job["result"]["illustrationErrors"] == []
    assert job["result"]["resolved"] == [{"chapterId": chapter_id, "chapterIndex": 1,
                                          "variant": 0}]
    assert job["result"]["storyJobId"] == first["id"]
    assert job["result"]["illustrations"]["succeeded"] == 1

    after = get_story(client, auth, space)
    assert after["missingIllustrations"] == []
    assert after["version"] == before["version"] and after["jobId"] == before["jobId"]
    assert after["chapters"][1]["generatedImageUrl"]
    assert after["chapters"][1]["generatedImageUrls"] == [after["chapters"][1]["generatedImageUrl"]]
    # Everything else is exactly as it was: text, ids, the images that had been drawn.
    for index in (0, 2):
        assert after["chapters"][index] == before["chapters"][index]
    for key in ("id", "title", "content", "illustrationPrompt"):
        assert after["chapters"][1][key] == before["chapters"][1][key]

    assert_error(retry(client, auth, space), 409, "has its illustrations")


def test_a_retry_that_fails_again_keeps_the_error_and_the_chapters(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    gemini: FakeGemini, partial: tuple[str, dict[str, Any]],  # noqa: F811
) -> None:
    space, _ = partial
    before = get_story(client, auth, space)
    job_id = retry(client, auth, space).get_json()["id"]
    run_story(session, ctx, job_id, gemini, block={0})
    job = get_job(client, auth, job_id)
    assert job["status"] == "succeeded"
    assert [e["chapterIndex"] for e in job["result"]["illustrationErrors"]] == [1]
    assert job["result"]["resolved"] == []
    assert get_story(client, auth, space) == before


def test_retry_is_refused_when_there_is_nothing_to_draw_or_a_generation_runs(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    gemini: FakeGemini,  # noqa: F811
) -> None:
    space = story_space(client, auth, notes=2)
    assert_error(retry(client, auth, space), 409, "no story")
    job = client.post(f"/api/v1/spaces/{space}/story", json={}, headers=auth).get_json()
    assert_error(retry(client, auth, space), 409, "still running")
    run_story(session, ctx, job["id"], gemini)
    assert get_job(client, auth, job["id"])["result"]["illustrationErrors"] == []
    assert_error(retry(client, auth, space), 409, "has its illustrations")


def test_a_replayed_retry_returns_the_same_job(
    client: FlaskClient, auth: dict[str, str], session: Session, ctx: WorkerContext,  # noqa: F811
    gemini: FakeGemini, partial: tuple[str, dict[str, Any]],  # noqa: F811
) -> None:
    space, _ = partial
    first = retry(client, auth, space, **{"Idempotency-Key": "retry-1"})
    assert first.status_code == 202
    run_story(session, ctx, first.get_json()["id"], gemini)
    # Nothing is missing any more, but the replay answers with the job that drew it.
    again = retry(client, auth, space, **{"Idempotency-Key": "retry-1"})
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]


def test_another_users_story_cannot_be_retried(
    client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
    partial: tuple[str, dict[str, Any]],
) -> None:
    space, _ = partial
    assert_error(retry(client, other_auth, space), 404, "not found")
    assert retry(client, auth, space).status_code == 202


# -- over HTTP, with the platform's real API and worker processes --------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeGemini() as fake, running_stack(tmp_path, fake) as running:
        running.services.start_worker("w1", concurrency=4)
        yield running


@pytest.mark.integration
def test_partial_story_and_illustration_retry_over_http(stack: Stack) -> None:
    client = stack.client
    space = client.call("POST", "/spaces", json={"title": "Lisbon"}, expect=201).json()["id"]
    for i in range(3):
        client.call("POST", f"/spaces/{space}/notes", expect=201, json={
            "title": f"Day {i + 1}", "textContent": f"We walked up hill number {i + 1}.",
            "timestamp": 1_700_000_000_000 + i * 86_400_000})
    stack.gemini.block_next("illustration")  # whichever chapter is drawn first
    job = client.wait_job(client.call("POST", f"/spaces/{space}/story", json={},
                                      expect=202).json()["id"])
    assert job["status"] == "succeeded", job
    [error] = job["result"]["illustrationErrors"]
    before = client.call("GET", f"/spaces/{space}/story").json()
    missing = [c["id"] for c in before["chapters"] if not c["generatedImageUrl"]]
    assert missing == [error["chapterId"]]

    retried = client.wait_job(client.call(
        "POST", f"/spaces/{space}/story/illustrations/retry", expect=202).json()["id"])
    assert retried["status"] == "succeeded", retried
    assert retried["result"]["illustrationErrors"] == []
    assert [r["chapterId"] for r in retried["result"]["resolved"]] == missing
    after = client.call("GET", f"/spaces/{space}/story").json()
    assert after["missingIllustrations"] == []
    assert all(c["generatedImageUrl"] for c in after["chapters"])
    for old, new in zip(before["chapters"], after["chapters"], strict=True):
        if old["id"] not in missing:
            assert new == old
    assert len(stack.gemini.requests_of("illustration")) == 4
    client.call("POST", f"/spaces/{space}/story/illustrations/retry", expect=409)
