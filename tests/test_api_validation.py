"""Bad input answers 4xx in the one error shape, names the offending field, and never 500s."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Job, Note, Space
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space


def rows(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def space(client: FlaskClient, auth: dict[str, str]) -> dict[str, Any]:
    return make_space(client, auth)


# --- body validation: unknown, wrongly typed and missing fields ---------------------------------


def body_cases() -> list[Any]:
    """(method, url template, json, field the errors must name)."""
    space_url = "/api/v1/spaces/{space}"
    notes_url = "/api/v1/spaces/{space}/notes"
    note_url = "/api/v1/spaces/{space}/notes/{note}"
    return [
        pytest.param("post", "/api/v1/spaces", {"title": "T", "colour": "red"}, "colour",
                     id="space-unknown"),
        pytest.param("post", "/api/v1/spaces", {"title": 42}, "title", id="space-title-type"),
        pytest.param("post", "/api/v1/spaces", {"title": "T", "startDate": "last spring"},
                     "startDate", id="space-date-type"),
        pytest.param("post", "/api/v1/spaces", {"description": "no title"}, "title",
                     id="space-missing-title"),
        pytest.param("post", "/api/v1/spaces", {"title": "x" * 201}, "title",
                     id="space-title-long"),
        pytest.param("post", "/api/v1/spaces", {"title": "snake", "cover_image": "x"},
                     "cover_image", id="space-snake-case"),
        pytest.param("patch", space_url, {"title": None}, "title", id="space-patch-null-title"),
        pytest.param("patch", space_url, {"id": str(uuid.uuid4())}, "id",
                     id="space-patch-read-only"),
        pytest.param("post", notes_url, {"timestamp": "yesterday"}, "timestamp",
                     id="note-timestamp-type"),
        pytest.param("post", notes_url, {"timestamp": 1.5}, "timestamp",
                     id="note-timestamp-float"),
        pytest.param("post", notes_url, {"timestamp": 10**20}, "timestamp",
                     id="note-timestamp-huge"),
        pytest.param("post", notes_url, {"type": "REMINDER"}, "type", id="note-type"),
        pytest.param("post", notes_url, {"textContent": ["a", "b"]}, "textContent",
                     id="note-text-type"),
        pytest.param("post", notes_url, {"audioFileIds": [str(uuid.uuid4())]}, "audioFileIds",
                     id="note-file-ids-read-only"),
        pytest.param("patch", note_url, {"mood": "happy"}, "mood", id="note-patch-unknown"),
        pytest.param("post", "/api/v1/transcriptions", {"mimeType": "audio/wav"}, "audioData",
                     id="transcription-missing-audio"),
        pytest.param("post", "/api/v1/transcriptions", {"audioData": "UklGRg=="}, "mimeType",
                     id="transcription-missing-mime"),
        pytest.param("post", "/api/v1/transcriptions",
                     {"audioData": "UklGRg==", "mimeType": "audio/wav", "noteId": "abc"},
                     "noteId", id="transcription-note-id-type"),
        pytest.param("post", "/api/v1/transcriptions",
                     {"audioData": "UklGRg==", "mimeType": "audio/wav", "lang": "pt"},
                     "lang", id="transcription-unknown"),
        pytest.param("post", "/api/v1/illustrations", {"prompt": 7}, "prompt",
                     id="illustration-prompt-type"),
        pytest.param("post", "/api/v1/illustrations", {"prompt": "p", "size": "4k"}, "size",
                     id="illustration-unknown"),
        pytest.param("put", "/api/v1/settings", {"creativity": float("nan")}, "creativity",
                     id="settings-nan"),
        pytest.param("post", "/api/v1/auth/register", {"email": "a@example.com"}, "password",
                     id="register-missing-password"),
    ]


@pytest.mark.parametrize(("method", "template", "payload", "field"), body_cases())
def test_bad_bodies_are_422_naming_the_field(
        client: FlaskClient, auth: dict[str, str], space: dict[str, Any], session: Session,
        method: str, template: str, payload: dict[str, Any], field: str) -> None:
    note = make_note(client, auth, space["id"])
    url = template.format(space=space["id"], note=note["id"])
    before = (rows(session, Space), rows(session, Note), rows(session, Job))
    response = client.open(url, method=method.upper(), headers=auth, json=payload)
    body = assert_error(response, 422)
    assert set(body) == {"code", "status", "message", "errors"}
    assert field in body["errors"]["json"], body
    assert field in body["message"], body
    assert (rows(session, Space), rows(session, Note), rows(session, Job)) == before


def test_patch_with_nothing_wrong_leaves_the_row_unchanged(
        client: FlaskClient, auth: dict[str, str], space: dict[str, Any]) -> None:
    response = client.patch(f"/api/v1/spaces/{space['id']}", headers=auth,
                            json={"title": "ok", "colour": "red"})
    assert_error(response, 422, "colour")
    assert client.get(f"/api/v1/spaces/{space['id']}", headers=auth).get_json()["title"] == \
        space["title"]


@pytest.mark.parametrize("text", ["a\x00b", "\x00"])
def test_nul_characters_are_422_not_500(client: FlaskClient, auth: dict[str, str],
                                        space: dict[str, Any], text: str) -> None:
    # PostgreSQL text cannot hold NUL; the request is invalid, not a server error.
    assert_error(client.post("/api/v1/spaces", headers=auth, json={"title": text}), 422, "title")
    assert_error(client.post(f"/api/v1/spaces/{space['id']}/notes", headers=auth,
                             json={"textContent": text}), 422, "textContent")
    assert_error(client.post("/api/v1/illustrations", headers=auth, json={"prompt": text}),
                 422, "prompt")
    login = client.post("/api/v1/auth/token", json={"email": text, "password": "whatever-pw"})
    assert login.status_code in (401, 422)


# --- malformed and non-JSON bodies ----------------------------------------------------------


@pytest.mark.parametrize(("method", "template"), [
    ("post", "/api/v1/spaces"),
    ("patch", "/api/v1/spaces/{space}"),
    ("post", "/api/v1/spaces/{space}/notes"),
    ("post", "/api/v1/spaces/{space}/story"),
    ("post", "/api/v1/transcriptions"),
    ("post", "/api/v1/illustrations"),
    ("put", "/api/v1/settings"),
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/token"),
])
def test_malformed_json_is_4xx_not_500(
        client: FlaskClient, auth: dict[str, str], space: dict[str, Any],
        method: str, template: str) -> None:
    url = template.format(space=space["id"])
    for raw in ('{"title": ', "[1, 2]", '"just a string"', "null", "\xff\xfe", "{}" * 3):
        response = client.open(url, method=method.upper(), headers=auth,
                               data=raw.encode("latin-1"), content_type="application/json")
        assert 400 <= response.status_code < 500, (raw, response.get_data(as_text=True))
        body = response.get_json()
        assert body["code"] == response.status_code and body["message"], raw


def test_invalid_json_message_says_so(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/spaces", headers=auth, data='{"title": ',
                           content_type="application/json")
    assert_error(response, 400, "JSON")


def test_form_body_on_a_json_endpoint_is_rejected(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    before = rows(session, Space)
    response = client.post("/api/v1/spaces", headers=auth, data={"title": "form"})
    assert 400 <= response.status_code < 500
    assert response.get_json()["message"]
    assert rows(session, Space) == before


# --- unknown ids, routes and methods --------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "word"), [
    ("get", "/api/v1/spaces/{rand}", "space"),
    ("patch", "/api/v1/spaces/{rand}", "space"),
    ("delete", "/api/v1/spaces/{rand}", "space"),
    ("get", "/api/v1/spaces/{rand}/notes", "space"),
    ("post", "/api/v1/spaces/{rand}/notes", "space"),
    ("get", "/api/v1/spaces/{space}/notes/{rand}", "note"),
    ("patch", "/api/v1/spaces/{space}/notes/{rand}", "note"),
    ("delete", "/api/v1/spaces/{space}/notes/{rand}", "note"),
    ("post", "/api/v1/spaces/{space}/notes/{rand}/media", "note"),
    ("get", "/api/v1/spaces/{rand}/story", "space"),
    ("post", "/api/v1/spaces/{rand}/story", "space"),
    ("get", "/api/v1/jobs/{rand}", "job"),
    ("post", "/api/v1/jobs/{rand}/cancel", "job"),
])
def test_unknown_ids_are_404(client: FlaskClient, auth: dict[str, str], space: dict[str, Any],
                             method: str, template: str, word: str) -> None:
    url = template.format(space=space["id"], rand=uuid.uuid4())
    kwargs: dict[str, Any] = {"json": {"title": "x"} if method == "patch" else {}}
    if url.endswith("/media"):
        kwargs = {"data": {"file": (io.BytesIO(wav_tone(0.1)), "a.wav", "audio/wav")}}
    assert_error(client.open(url, method=method.upper(), headers=auth, **kwargs), 404, word)


def test_malformed_ids_are_404(client: FlaskClient, auth: dict[str, str]) -> None:
    for url in ("/api/v1/spaces/123", "/api/v1/jobs/zzz", "/api/v1/spaces/abc/notes"):
        assert_error(client.get(url, headers=auth), 404)


def test_unknown_route_is_404_json(client: FlaskClient, auth: dict[str, str]) -> None:
    for url in ("/api/v1/nothing-here", "/nothing", "/api/v2/spaces"):
        assert_error(client.get(url, headers=auth), 404)
    assert_error(client.get("/api/v1/nothing-here"), 404)


def test_wrong_method_is_405_json(client: FlaskClient, auth: dict[str, str]) -> None:
    body = assert_error(client.delete("/api/v1/spaces", headers=auth), 405)
    assert set(body) == {"code", "status", "message"}
    response = client.put("/api/v1/jobs", headers=auth)
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_bad_query_parameters_are_422(client: FlaskClient, auth: dict[str, str],
                                      space: dict[str, Any]) -> None:
    body = assert_error(client.get(f"/api/v1/spaces/{space['id']}/story?version=first",
                                   headers=auth), 422, "version")
    assert "version" in body["errors"]["query"]
    body = assert_error(client.get("/api/v1/jobs?parentId=nope", headers=auth), 422)
    assert "parentId" in body["errors"]["query"]


def test_prefer_header_garbage_is_ignored(client: FlaskClient, auth: dict[str, str]) -> None:
    for prefer in ("wait=abc", "respond-async", "wait=-1", ""):
        response = client.post("/api/v1/illustrations", headers={**auth, "Prefer": prefer},
                               json={"prompt": "a kite"})
        assert response.status_code == 202, prefer


# --- OpenAPI --------------------------------------------------------------------------------------


def test_openapi_lists_the_paths_with_bearer_auth(client: FlaskClient) -> None:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["info"]["title"] == "LifeTales API"
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    for path in ("/api/v1/auth/register", "/api/v1/auth/token", "/api/v1/me",
                 "/api/v1/spaces", "/api/v1/spaces/{space_id}",
                 "/api/v1/spaces/{space_id}/notes", "/api/v1/spaces/{space_id}/notes/{note_id}",
                 "/api/v1/spaces/{space_id}/notes/{note_id}/media",
                 "/api/v1/spaces/{space_id}/story", "/api/v1/transcriptions",
                 "/api/v1/illustrations", "/api/v1/jobs", "/api/v1/jobs/{job_id}",
                 "/api/v1/jobs/{job_id}/cancel", "/api/v1/settings"):
        assert path in paths, path
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert paths["/api/v1/spaces"]["get"]["security"] == [{"bearerAuth": []}]
    assert "/api/v1/transcriptions" in paths and "post" in paths["/api/v1/transcriptions"]


def test_swagger_ui_is_served(client: FlaskClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert b"swagger" in response.get_data().lower()
    assert b"openapi.json" in response.get_data()
