"""``Prefer`` (RFC 7240) on submits: ``respond-async`` and ``wait=N`` honoured, what was applied
echoed in ``Preference-Applied``, ``Vary: Prefer`` on every submit answer.

No worker consumes the broker here: a new job stays ``queued``; a finished job is made by
canceling one and replaying its Idempotency-Key.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def illustrate(client: FlaskClient, auth: dict[str, str], prefer: str | list[str] | None = None,
               key: str | None = None) -> tuple[TestResponse, float]:
    headers: Any = list(auth.items())
    for value in [prefer] if isinstance(prefer, str) else prefer or []:
        headers.append(("Prefer", value))
    if key:
        headers.append(("Idempotency-Key", key))
    started = time.monotonic()
    response = client.post("/api/v1/illustrations", headers=headers, json={"prompt": "a tram"})
    return response, time.monotonic() - started


def finished_job_key(client: FlaskClient, auth: dict[str, str]) -> str:
    """The Idempotency-Key of a job that has already finished (canceled)."""
    key = f"k-{uuid.uuid4()}"
    response, _ = illustrate(client, auth, key=key)
    client.post(f"/api/v1/jobs/{response.get_json()['id']}/cancel", headers=auth)
    return key


def vary(response: TestResponse) -> set[str]:
    return {v.strip().lower() for v in response.headers.get("Vary", "").split(",")}


def test_respond_async_answers_202_at_once(client: FlaskClient, auth: dict[str, str]) -> None:
    response, elapsed = illustrate(client, auth, "respond-async")
    assert response.status_code == 202 and elapsed < 0.5
    assert response.headers["Preference-Applied"] == "respond-async"
    assert "prefer" in vary(response)
    assert response.headers["Location"] == f"/api/v1/jobs/{response.get_json()['id']}"


def test_no_preference_still_varies_on_prefer(client: FlaskClient,
                                              auth: dict[str, str]) -> None:
    response, _ = illustrate(client, auth)
    assert response.status_code == 202
    assert "Preference-Applied" not in response.headers
    assert "prefer" in vary(response)


def test_wait_that_runs_out_answers_202_without_applying(
        client: FlaskClient, auth: dict[str, str]) -> None:
    response, elapsed = illustrate(client, auth, "wait=1")
    assert response.status_code == 202 and 0.9 <= elapsed < 3
    assert "Preference-Applied" not in response.headers
    assert "prefer" in vary(response)


def test_respond_async_with_wait_waits_then_answers_202(
        client: FlaskClient, auth: dict[str, str]) -> None:
    response, elapsed = illustrate(client, auth, "respond-async, wait=1")
    assert response.status_code == 202 and 0.9 <= elapsed < 3
    assert response.headers["Preference-Applied"] == "respond-async"


def test_wait_for_a_finished_job_is_applied_and_capped(
        client: FlaskClient, auth: dict[str, str]) -> None:
    key = finished_job_key(client, auth)
    response, elapsed = illustrate(client, auth, "wait=1000", key=key)
    assert response.status_code == 200 and elapsed < 1
    assert response.headers["Preference-Applied"] == "wait=60"  # what was honoured
    assert "prefer" in vary(response)  # an Idempotency-Key replay varies too
    both, _ = illustrate(client, auth, "respond-async, wait=5", key=key)
    assert both.status_code == 200 and both.headers["Preference-Applied"] == "wait=5"


def test_a_replay_without_preferences_answers_200_with_vary(
        client: FlaskClient, auth: dict[str, str]) -> None:
    key = finished_job_key(client, auth)
    response, _ = illustrate(client, auth, key=key)
    assert response.status_code == 200 and "Preference-Applied" not in response.headers
    assert "prefer" in vary(response)


@pytest.mark.parametrize(("prefer", "applied"), [
    ("RESPOND-ASYNC", "respond-async"),  # names are case-insensitive
    ("return=minimal, respond-async", "respond-async"),  # return= is ignored
    (["handling=lenient", "respond-async"], "respond-async"),  # several Prefer headers
    ('foo="a, b", respond-async; x=1', "respond-async"),  # quoted commas, parameters
])
def test_preferences_are_parsed_per_rfc_7240(client: FlaskClient, auth: dict[str, str],
                                             prefer: str | list[str], applied: str) -> None:
    response, elapsed = illustrate(client, auth, prefer)
    assert response.status_code == 202 and elapsed < 0.5
    assert response.headers["Preference-Applied"] == applied


@pytest.mark.parametrize("prefer", ["wait=abc", "wait=", "wait=-1", "wait=1.5", "return=minimal"])
def test_preferences_not_understood_are_ignored(client: FlaskClient, auth: dict[str, str],
                                                prefer: str) -> None:
    response, elapsed = illustrate(client, auth, prefer)
    assert response.status_code == 202 and elapsed < 0.5
    assert "Preference-Applied" not in response.headers


def test_the_first_of_a_repeated_preference_wins(
        client: FlaskClient, auth: dict[str, str]) -> None:
    key = finished_job_key(client, auth)
    response, _ = illustrate(client, auth, ["Wait=2", "wait=30"], key=key)
    assert response.headers["Preference-Applied"] == "wait=2"


def test_the_openapi_document_describes_prefer(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").get_json()
    post = spec["paths"]["/api/v1/illustrations"]["post"]
    names = {p["name"] for p in post["parameters"]}
    assert {"Prefer", "Idempotency-Key", "Cancel-After"} <= names
    for code in ("200", "202"):
        assert {"Vary", "Preference-Applied"} <= set(post["responses"][code]["headers"])
