"""Every row is scoped to its owner: user B acting on user A's ids gets 404 (never 403, so B
cannot even learn the id exists), and A's data is exactly as it was afterwards."""

from __future__ import annotations

import base64
import io
import re
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import Chapter, Job, Media, Note, Space, Story
from models.base import utcnow
from tests.audio import wav_tone
from tests.conftest import make_note, make_space


@dataclass
class World:
    """User A's space, note (with an audio file), story and job; user B's own space."""

    a: dict[str, str]
    b: dict[str, str]
    space: str
    note: str
    job: str
    b_space: str


@pytest.fixture
def world(client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
          session: Session) -> World:
    space = make_space(client, auth, title="A's trip")
    note = make_note(client, auth, space["id"], timestamp=1_000, title="A's moment")
    upload = client.post(f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media", headers=auth,
                         data={"file": (io.BytesIO(wav_tone(0.1)), "a.wav", "audio/wav")})
    assert upload.status_code == 201
    story = Story(space_id=uuid.UUID(space["id"]), version=1, job_id=uuid.uuid4(),
                  status="ready", settings={}, generated_at=utcnow(),
                  chapters=[Chapter(position=0, title="A's chapter", content="...",
                                    source_note_id=uuid.UUID(note["id"]), user_image_ids=[])])
    session.add(story)
    session.execute(update(Space).where(Space.id == uuid.UUID(space["id"]))
                    .values(current_story_version=1))
    session.commit()
    return World(a=auth, b=other_auth, space=space["id"], note=note["id"],
                 job=upload.get_json()["transcriptionJob"]["id"],
                 b_space=make_space(client, other_auth, title="B's trip")["id"])


def snapshot(client: FlaskClient, world: World, session: Session) -> dict[str, Any]:
    """Everything of A's that B could touch, as A sees it, plus row counts."""
    a = world.a
    counts = {model.__name__: session.scalar(select(func.count()).select_from(model))
              for model in (Space, Note, Media, Job, Story)}
    views: dict[str, Any] = {"counts": counts}
    for name, url in (("space", f"/api/v1/spaces/{world.space}"),
                      ("notes", f"/api/v1/spaces/{world.space}/notes"),
                      ("story", f"/api/v1/spaces/{world.space}/story"),
                      ("job", f"/api/v1/jobs/{world.job}"),
                      ("jobs", "/api/v1/jobs")):
        response = client.get(url, headers=a)
        assert response.status_code == 200, (name, response.get_json())
        views[name] = response.get_json()
    return views


def audio_json(note_id: str) -> dict[str, Any]:
    return {"json": {"audioData": base64.b64encode(wav_tone(0.1)).decode(),
                     "mimeType": "audio/wav", "noteId": note_id}}


def audio_form(note_id: str) -> dict[str, Any]:
    return {"data": {"file": (io.BytesIO(wav_tone(0.1)), "b.wav", "audio/wav"),
                     "noteId": note_id}}


def audio_upload(_note_id: str) -> dict[str, Any]:
    return {"data": {"file": (io.BytesIO(wav_tone(0.1)), "b.wav", "audio/wav")}}


def photo_form(note_id: str) -> dict[str, Any]:
    from tests.test_api_media import png_bytes

    return {"data": {"file": (io.BytesIO(png_bytes()), "b.png", "image/png"),
                     "script": "Hello", "noteId": note_id}}


def body(payload: dict[str, Any]) -> Any:
    def json_body(_note_id: str) -> dict[str, Any]:
        return {"json": payload}

    return json_body


CASES = [
    ("GET", "/spaces/{space}", None),
    ("PATCH", "/spaces/{space}", body({"title": "taken over"})),
    ("DELETE", "/spaces/{space}", None),
    ("GET", "/spaces/{space}/notes", None),
    ("POST", "/spaces/{space}/notes", body({"textContent": "planted"})),
    ("GET", "/spaces/{space}/notes/{note}", None),
    ("PATCH", "/spaces/{space}/notes/{note}", body({"title": "taken over"})),
    ("DELETE", "/spaces/{space}/notes/{note}", None),
    # A's note through B's own space.
    ("GET", "/spaces/{b_space}/notes/{note}", None),
    ("PATCH", "/spaces/{b_space}/notes/{note}", body({"title": "taken over"})),
    ("DELETE", "/spaces/{b_space}/notes/{note}", None),
    ("POST", "/spaces/{space}/notes/{note}/media", audio_upload),
    ("POST", "/spaces/{b_space}/notes/{note}/media", audio_upload),
    ("GET", "/spaces/{space}/story", None),
    ("GET", "/spaces/{space}/story?version=1", None),
    ("POST", "/spaces/{space}/story", body({})),
    ("GET", "/spaces/{space}/stories", None),
    ("POST", "/spaces/{space}/story/illustrations/retry", None),
    ("GET", "/spaces/{space}/film", None),
    ("GET", "/spaces/{space}/film?version=1", None),
    ("POST", "/spaces/{space}/film", body({})),
    ("GET", "/spaces/{space}/films", None),
    ("GET", "/jobs/{job}", None),
    ("POST", "/jobs/{job}/cancel", None),
    ("GET", "/jobs/{job}/events", None),
    ("POST", "/transcriptions", audio_json),
    ("POST", "/transcriptions", audio_form),
    ("GET", "/spaces/{space}/film", None),
    ("POST", "/spaces/{space}/film", body({})),
    ("GET", "/spaces/{space}/films", None),
    # B's photo onto A's moment (A's photos by mediaId: test_api_narrator_clips.py).
    ("POST", "/narrator-clips", photo_form),
]


@pytest.mark.parametrize(("method", "template", "extra"), CASES,
                         ids=[f"{m} {t}{' ' + e.__name__ if e else ''}" for m, t, e in CASES])
def test_other_users_ids_are_404_and_change_nothing(
        client: FlaskClient, world: World, session: Session,
        method: str, template: str, extra: Any) -> None:
    before = snapshot(client, world, session)
    url = "/api/v1" + template.format(space=world.space, note=world.note, job=world.job,
                                      b_space=world.b_space)
    kwargs = extra(world.note) if extra else {}
    response = client.open(url, method=method, headers=world.b, **kwargs)
    assert response.status_code == 404, response.get_data(as_text=True)
    error = response.get_json()
    assert error["code"] == 404 and error["status"] == HTTPStatus.NOT_FOUND.phrase
    assert error["message"].endswith("not found")
    session.expire_all()
    assert snapshot(client, world, session) == before


def test_listings_show_only_the_users_own_rows(client: FlaskClient, world: World) -> None:
    b_spaces = client.get("/api/v1/spaces", headers=world.b).get_json()
    assert [s["id"] for s in b_spaces] == [world.b_space]
    assert client.get("/api/v1/jobs", headers=world.b).get_json() == []
    assert world.job not in {j["id"] for j in
                             client.get("/api/v1/jobs?kind=transcription",
                                        headers=world.b).get_json()}
    a_jobs = client.get("/api/v1/jobs", headers=world.a).get_json()
    assert [j["id"] for j in a_jobs] == [world.job]


def test_same_idempotency_key_does_not_leak_another_users_job(
        client: FlaskClient, world: World) -> None:
    key = "shared-key"
    payload = {"prompt": "a lighthouse", "style": "pastel"}
    a_job = client.post("/api/v1/illustrations", json=payload,
                        headers={**world.a, "Idempotency-Key": key}).get_json()
    b_job = client.post("/api/v1/illustrations", json=payload,
                        headers={**world.b, "Idempotency-Key": key})
    assert b_job.status_code == 202
    assert b_job.get_json()["id"] != a_job["id"]
    assert client.get(f"/api/v1/jobs/{a_job['id']}", headers=world.b).status_code == 404


# Routes that take no id of another user's row: they act on the caller's own account or rows.
NOT_ID_SCOPED = {
    ("POST", "/auth/register"), ("POST", "/auth/token"),  # anonymous
    ("POST", "/auth/password"), ("GET", "/me"),  # the caller's own account
    ("GET", "/settings"), ("PUT", "/settings"),  # the caller's own settings
    ("GET", "/spaces"), ("POST", "/spaces"), ("GET", "/jobs"),  # listings: see the test above
    ("POST", "/illustrations"), ("POST", "/narrations"),  # create the caller's own job
    ("GET", "/webhooks/secret"), ("POST", "/webhooks/secret/rotate"),  # the caller's own secret
    ("GET", "/admin/jobs"),  # the admin role's, 403 to others: test_api_admin.py
}
# The admin role's routes: 403 to every other user before any id is looked at.
ADMIN_ONLY = [
    ("GET", "/admin/jobs"),
    ("POST", "/batches/story-regenerations"),
    ("GET", "/batches/<id>"),
    ("POST", "/batches/<id>/cancel"),
    ("POST", "/batches/<id>/retry-failed"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY, ids=[f"{m} {p}" for m, p in ADMIN_ONLY])
def test_admin_routes_are_403_to_other_users_and_change_nothing(
        client: FlaskClient, world: World, session: Session, method: str, path: str) -> None:
    before = snapshot(client, world, session)
    url = "/api/v1" + path.replace("<id>", world.job)
    kwargs: dict[str, Any] = {"json": {"all": True}} if method == "POST" else {}
    response = client.open(url, method=method, headers=world.b, **kwargs)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["message"] == "this operation requires the admin role"
    session.expire_all()
    assert snapshot(client, world, session) == before


def test_the_matrix_covers_every_route_and_method(app: Any) -> None:
    """A new endpoint taking an id must join CASES (or say here why it needs not)."""
    covered = {(method, re.sub(r"\{\w+\}", "<id>", template.split("?")[0]))
               for method, template, _ in CASES}
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<[^>]+>", "<id>", rule.rule.removeprefix("/api/v1"))
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (method, path) not in covered | NOT_ID_SCOPED | set(ADMIN_ONLY):
                missing.append(f"{method} {path}")
    assert not missing, missing
