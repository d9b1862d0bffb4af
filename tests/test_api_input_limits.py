"""Every input limit answers a clear 4xx that names the field and the limit, changes nothing,
and leaves the server serving: body size, text lengths, moments per space, files per moment,
moments per story, and uploads whose bytes are not what their label says."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.resources.notes import MAX_MEDIA_PER_NOTE, MAX_NOTES_PER_SPACE
from models import Job, Media, Note, Space
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space
from tests.test_api_media import png_bytes


def count(session: Session, model: type) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_30_mb_body_is_413_naming_the_limit_and_the_server_keeps_serving(
        client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    body = b'{"title": "' + b"x" * (30 * 1024 * 1024) + b'"}'
    limit_mb = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
    for url in ("/api/v1/spaces", "/api/v1/transcriptions", "/api/v1/illustrations"):
        response = client.post(url, headers=auth, data=body, content_type="application/json")
        assert_error(response, 413, "request body", f"{limit_mb} MB limit")
    assert client.get("/api/v1/spaces", headers=auth).status_code == 200


@pytest.mark.parametrize(("url", "payload", "field", "limit"), [
    ("/api/v1/spaces", {"title": "x" * 201}, "title", "200"),
    ("/api/v1/spaces", {"title": "t", "description": "x" * 5001}, "description", "5000"),
    ("/api/v1/spaces", {"title": "t", "coverImage": "x" * 1001}, "coverImage", "1000"),
    ("/api/v1/spaces/{space}/notes", {"title": "x" * 201}, "title", "200"),
    ("/api/v1/spaces/{space}/notes", {"textContent": "x" * 20_001}, "textContent", "20000"),
    ("/api/v1/illustrations", {"prompt": "x" * 2001}, "prompt", "2000"),
    ("/api/v1/transcriptions", {"audioData": "UklGRg==", "mimeType": "a/" + "x" * 100},
     "mimeType", "100"),
    ("/api/v1/auth/register", {"email": "a@example.com", "password": "x" * 257},
     "password", "256"),
    ("/api/v1/auth/register", {"email": "a@example.com", "password": "short"},
     "password", "8"),
])
def test_text_fields_over_their_limit_are_422_naming_field_and_limit(
        client: FlaskClient, auth: dict[str, str], session: Session,
        url: str, payload: dict[str, Any], field: str, limit: str) -> None:
    space = make_space(client, auth)
    before = (count(session, Note), count(session, Job))
    response = client.post(url.format(space=space["id"]), headers=auth, json=payload)
    body = assert_error(response, 422, field, limit)
    assert field in body["errors"]["json"]
    assert (count(session, Note), count(session, Job)) == before


def test_idempotency_key_over_255_characters_is_422(client: FlaskClient,
                                                    auth: dict[str, str]) -> None:
    response = client.post("/api/v1/illustrations", json={"prompt": "a kite"},
                           headers={**auth, "Idempotency-Key": "k" * 256})
    assert_error(response, 422, "Idempotency-Key", "255")


def test_a_space_holds_at_most_200_moments(client: FlaskClient, auth: dict[str, str],
                                           session: Session) -> None:
    space = make_space(client, auth)
    session.add_all(Note(space_id=uuid.UUID(space["id"]), type="MOMENT", timestamp_ms=i,
                         media=[]) for i in range(MAX_NOTES_PER_SPACE - 1))
    session.commit()
    make_note(client, auth, space["id"])  # the 200th
    response = client.post(f"/api/v1/spaces/{space['id']}/notes", headers=auth,
                           json={"textContent": "one too many"})
    assert_error(response, 422, "at most 200 moments")
    assert count(session, Note) == MAX_NOTES_PER_SPACE


def test_a_story_takes_at_most_200_moments(client: FlaskClient, auth: dict[str, str],
                                           session: Session) -> None:
    # Spaces filled before the per-space cap existed can hold more: the story says why it won't.
    space = make_space(client, auth)
    session.add_all(Note(space_id=uuid.UUID(space["id"]), type="MOMENT", timestamp_ms=i,
                         media=[]) for i in range(MAX_NOTES_PER_SPACE + 1))
    session.commit()
    response = client.post(f"/api/v1/spaces/{space['id']}/story", headers=auth, json={})
    assert_error(response, 422, "at most 200 moments")
    assert count(session, Job) == 0


def test_a_moment_holds_at_most_20_files(client: FlaskClient, auth: dict[str, str],
                                         session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    user_id = session.scalar(select(Space.owner_id).where(Space.id == uuid.UUID(space["id"])))
    session.add_all(
        Media(owner_id=user_id, note_id=uuid.UUID(note["id"]), kind="image", position=i,
              storage_key=f"image/{uuid.uuid4()}", url="http://x", mime_type="image/png",
              size=1, sha256="0" * 64)
        for i in range(MAX_MEDIA_PER_NOTE))
    session.commit()
    response = client.post(f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media",
                           headers=auth,
                           data={"file": (io.BytesIO(png_bytes()), "p.png", "image/png")})
    assert_error(response, 422, "at most 20 files")
    assert count(session, Media) == MAX_MEDIA_PER_NOTE


def test_a_png_labelled_audio_webm_is_422_everywhere(client: FlaskClient, auth: dict[str, str],
                                                     session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    png = png_bytes()
    as_json = client.post("/api/v1/transcriptions", headers=auth, json={
        "audioData": base64.b64encode(png).decode(), "mimeType": "audio/webm"})
    assert_error(as_json, 422, "audio", "image/png")
    as_form = client.post("/api/v1/transcriptions", headers=auth,
                          data={"file": (io.BytesIO(png), "memo.webm", "audio/webm")})
    assert_error(as_form, 422, "image/png")
    as_media = client.post(f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media",
                           headers=auth, data={"file": (io.BytesIO(png), "m.webm", "audio/webm")})
    assert_error(as_media, 422, "image/png")
    assert (count(session, Media), count(session, Job)) == (0, 0)


def test_photos_are_checked_against_their_bytes_like_audio(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    url = f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media"
    gif = b"GIF89a" + b"\x00" * 32
    for data, label, expected in ((gif, "image/png", "image/gif"),
                                  (wav_tone(0.1), "image/jpeg", "audio/wav"),
                                  (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml",
                                   "not a supported"),
                                  (b"MZ\x90\x00 an executable", "image/png", "file")):
        response = client.post(url, headers=auth,
                               data={"file": (io.BytesIO(data), "photo", label)})
        assert_error(response, 422, expected)
    assert count(session, Media) == 0


def test_not_base64_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    for text in ("not base64!!", "UklGRg", "====", "\u00e9t\u00e9"):
        response = client.post("/api/v1/transcriptions", headers=auth,
                               json={"audioData": text, "mimeType": "audio/webm"})
        body = assert_error(response, 422, "audioData")
        assert "audioData" in body["errors"]["json"]
