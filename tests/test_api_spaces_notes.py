"""Spaces and notes (moments): CRUD, ordering, the frontend's Note shape, cascading deletes."""

from __future__ import annotations

import io
import time
import uuid
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Chapter, Job, Media, Note, Space, Story
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space

# The frontend's Note type, field by field.
NOTE_FIELDS = {"id", "type", "timestamp", "title", "textContent", "audioFileIds",
               "transcriptions", "imageFileIds", "videoFileIds"}


def count(session: Session, model: type, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


# --- spaces -------------------------------------------------------------------------------


def test_create_space_returns_camelcase_with_empty_notes(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    response = client.post("/api/v1/spaces", headers=auth, json={
        "title": "Lisbon", "description": "Five days by the river",
        "coverImage": "https://example.com/cover.jpg", "startDate": "2024-05-01T09:00:00+00:00",
    })
    assert response.status_code == 201
    body = response.get_json()
    assert body["title"] == "Lisbon"
    assert body["description"] == "Five days by the river"
    assert body["coverImage"] == "https://example.com/cover.jpg"
    assert body["startDate"].startswith("2024-05-01T09:00:00")
    assert body["notes"] == []
    assert body["storyVersion"] is None
    assert {"id", "createdAt", "updatedAt"} <= body.keys()
    assert not any("_" in key for key in body)
    row = session.get(Space, uuid.UUID(body["id"]))
    assert row is not None and row.title == "Lisbon"


def test_naive_start_date_is_taken_as_utc(client: FlaskClient, auth: dict[str, str]) -> None:
    created = make_space(client, auth, startDate="2024-05-01T09:00:00")
    fetched = client.get(f"/api/v1/spaces/{created['id']}", headers=auth).get_json()
    assert created["startDate"] == fetched["startDate"] == "2024-05-01T09:00:00+00:00"


def test_list_spaces_is_the_users_own_newest_first(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    first = make_space(client, auth, title="First")
    second = make_space(client, auth, title="Second")
    make_space(client, other_auth, title="Someone else's")
    response = client.get("/api/v1/spaces", headers=auth)
    assert response.status_code == 200
    assert [s["id"] for s in response.get_json()] == [second["id"], first["id"]]


def test_get_space_lists_its_notes_by_timestamp(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    late = make_note(client, auth, space["id"], timestamp=3_000, title="late")
    early = make_note(client, auth, space["id"], timestamp=1_000, title="early")
    middle = make_note(client, auth, space["id"], timestamp=2_000, title="middle")
    response = client.get(f"/api/v1/spaces/{space['id']}", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == space["id"]
    assert [n["id"] for n in body["notes"]] == [early["id"], middle["id"], late["id"]]
    assert body["notes"][0].keys() >= NOTE_FIELDS


def test_patch_space_changes_only_the_given_fields(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth, title="Old", description="kept")
    response = client.patch(f"/api/v1/spaces/{space['id']}", headers=auth,
                            json={"title": "New", "coverImage": None})
    assert response.status_code == 200
    body = response.get_json()
    assert body["title"] == "New"
    assert body["description"] == "kept"
    assert body["coverImage"] is None
    again = client.get(f"/api/v1/spaces/{space['id']}", headers=auth).get_json()
    assert again["title"] == "New" and again["description"] == "kept"


def test_patch_space_rejects_an_empty_title(client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth, title="Keep me")
    body = assert_error(client.patch(f"/api/v1/spaces/{space['id']}", headers=auth,
                                     json={"title": ""}), 422)
    assert "title" in body["errors"]["json"]
    again = client.get(f"/api/v1/spaces/{space['id']}", headers=auth).get_json()
    assert again["title"] == "Keep me"


def test_delete_space_cascades_to_notes_media_and_stories(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    upload = client.post(f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media", headers=auth,
                         data={"file": (io.BytesIO(wav_tone(0.1)), "memo.wav", "audio/wav")})
    assert upload.status_code == 201
    space_id, note_id = uuid.UUID(space["id"]), uuid.UUID(note["id"])
    # A finished story, as a story job would have written it.
    story = Story(space_id=space_id, version=1, job_id=uuid.uuid4(), status="ready",
                  settings={}, chapters=[Chapter(position=0, title="Day one", content="...",
                                                 source_note_id=note_id, user_image_ids=[])])
    session.add(story)
    session.commit()
    story_id = story.id

    response = client.delete(f"/api/v1/spaces/{space['id']}", headers=auth)
    assert response.status_code == 204
    assert response.get_data() == b""
    session.expire_all()
    assert count(session, Space, Space.id == space_id) == 0
    assert count(session, Note, Note.space_id == space_id) == 0
    assert count(session, Media, Media.note_id == note_id) == 0
    assert count(session, Story, Story.space_id == space_id) == 0
    assert count(session, Chapter, Chapter.story_id == story_id) == 0
    # Jobs are the user's history and outlive the space.
    job_id = uuid.UUID(upload.get_json()["transcriptionJob"]["id"])
    assert count(session, Job, Job.id == job_id) == 1
    assert_error(client.get(f"/api/v1/spaces/{space['id']}", headers=auth), 404, "space")
    assert_error(client.delete(f"/api/v1/spaces/{space['id']}", headers=auth), 404)


# --- notes --------------------------------------------------------------------------------


def test_create_note_has_the_frontend_note_shape(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    response = client.post(f"/api/v1/spaces/{space['id']}/notes", headers=auth, json={
        "type": "MOMENT", "timestamp": 1_714_550_400_000, "title": "Tram 28",
        "textContent": "Rattling up the hill.",
    })
    assert response.status_code == 201
    note = response.get_json()
    assert note.keys() >= NOTE_FIELDS
    assert not any("_" in key for key in note)
    assert note["type"] == "MOMENT"
    assert note["timestamp"] == 1_714_550_400_000
    assert note["title"] == "Tram 28"
    assert note["textContent"] == "Rattling up the hill."
    for name in ("audioFileIds", "transcriptions", "imageFileIds", "videoFileIds"):
        assert note[name] == []
    uuid.UUID(note["id"])
    row = session.get(Note, uuid.UUID(note["id"]))
    assert row is not None and row.timestamp_ms == 1_714_550_400_000
    assert row.space_id == uuid.UUID(space["id"])


def test_note_timestamp_defaults_to_now_in_milliseconds(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    before = int(time.time() * 1000)
    note = make_note(client, auth, space["id"])
    after = int(time.time() * 1000)
    assert before <= note["timestamp"] <= after
    assert note["title"] is None


def test_list_notes_ordered_by_timestamp(client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    other_space = make_space(client, auth)
    ids = {ts: make_note(client, auth, space["id"], timestamp=ts)["id"]
           for ts in (5_000, 1_000, 3_000)}
    make_note(client, auth, other_space["id"], timestamp=2_000)
    response = client.get(f"/api/v1/spaces/{space['id']}/notes", headers=auth)
    assert response.status_code == 200
    notes = response.get_json()
    assert [n["id"] for n in notes] == [ids[1_000], ids[3_000], ids[5_000]]
    assert [n["timestamp"] for n in notes] == [1_000, 3_000, 5_000]


def test_get_patch_delete_note(client: FlaskClient, auth: dict[str, str],
                               session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"], timestamp=1_000, title="Before")
    url = f"/api/v1/spaces/{space['id']}/notes/{note['id']}"

    got = client.get(url, headers=auth)
    assert got.status_code == 200 and got.get_json()["title"] == "Before"

    patched = client.patch(url, headers=auth, json={"title": "After", "timestamp": 9_000})
    assert patched.status_code == 200
    body = patched.get_json()
    assert body["title"] == "After" and body["timestamp"] == 9_000
    assert body["textContent"] == note["textContent"]
    row = session.get(Note, uuid.UUID(note["id"]), populate_existing=True)
    assert row is not None and row.title == "After" and row.timestamp_ms == 9_000

    cleared = client.patch(url, headers=auth, json={"textContent": None})
    assert cleared.status_code == 200 and cleared.get_json()["textContent"] is None

    deleted = client.delete(url, headers=auth)
    assert deleted.status_code == 204
    assert count(session, Note, Note.id == uuid.UUID(note["id"])) == 0
    assert_error(client.get(url, headers=auth), 404, "note")
    listed = client.get(f"/api/v1/spaces/{space['id']}/notes", headers=auth).get_json()
    assert listed == []


def test_delete_note_removes_its_media_rows(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    base = f"/api/v1/spaces/{space['id']}/notes/{note['id']}"
    upload = client.post(f"{base}/media", headers=auth,
                         data={"file": (io.BytesIO(wav_tone(0.1)), "memo.wav", "audio/wav")})
    assert upload.status_code == 201
    assert client.delete(base, headers=auth).status_code == 204
    assert count(session, Media, Media.id == uuid.UUID(upload.get_json()["id"])) == 0


def test_note_in_another_space_of_the_same_user_is_404(
        client: FlaskClient, auth: dict[str, str]) -> None:
    first = make_space(client, auth)
    second = make_space(client, auth)
    note = make_note(client, auth, first["id"])
    assert_error(client.get(f"/api/v1/spaces/{second['id']}/notes/{note['id']}", headers=auth),
                 404, "note")


def test_patch_note_rejects_type_and_bad_values(
        client: FlaskClient, auth: dict[str, str]) -> None:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"], timestamp=1_000)
    url = f"/api/v1/spaces/{space['id']}/notes/{note['id']}"
    for payload, field in (({"timestamp": -1}, "timestamp"), ({"timestamp": "soon"}, "timestamp"),
                           ({"title": "x" * 201}, "title"), ({"audioFileIds": []}, "audioFileIds")):
        body = assert_error(client.patch(url, headers=auth, json=payload), 422)
        assert field in body["errors"]["json"], (payload, body)
    assert client.get(url, headers=auth).get_json()["timestamp"] == 1_000
