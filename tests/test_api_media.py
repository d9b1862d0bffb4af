"""Uploading a note's media, serving stored files, and ``POST /transcriptions``."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.media_intake import MAX_MEDIA_BYTES
from models import Job, Media
from tests.audio import wav_tone
from tests.conftest import assert_error, make_note, make_space

# An EBML header is what makes bytes a WebM/Matroska file to the sniffer.
WEBM_BYTES = bytes.fromhex("1A45DFA3") + b"\x9f\x42\x86\x81\x01" + b"\x00" * 64


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def media_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Media)) or 0


def job_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Job)) or 0


@pytest.fixture
def note_url(client: FlaskClient, auth: dict[str, str]) -> str:
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    return f"/api/v1/spaces/{space['id']}/notes/{note['id']}"


def upload(client: FlaskClient, auth: dict[str, str], note_url: str, data: bytes,
           filename: str, mime: str) -> Any:
    return client.post(f"{note_url}/media", headers=auth,
                       data={"file": (io.BytesIO(data), filename, mime)})


# --- POST /spaces/{id}/notes/{id}/media -------------------------------------------------


def test_audio_upload_stores_media_and_queues_transcription(
        client: FlaskClient, auth: dict[str, str], note_url: str, session: Session) -> None:
    audio = wav_tone(0.2)
    response = upload(client, auth, note_url, audio, "memo.wav", "audio/wav")
    assert response.status_code == 201, response.get_json()
    media = response.get_json()
    assert media["kind"] == "audio"
    assert media["mimeType"] == "audio/wav"
    assert media["size"] == len(audio)
    assert media["transcription"] is None
    job = media["transcriptionJob"]
    assert job["kind"] == "transcription" and job["status"] == "queued"
    assert job["input"]["mediaId"] == media["id"]
    assert job["input"]["noteId"] == note_url.rsplit("/", 1)[1]
    assert media["transcriptionJobId"] == job["id"]

    note = client.get(note_url, headers=auth).get_json()
    assert note["audioFileIds"] == [media["id"]]
    assert note["transcriptions"] == [""]
    assert note["imageFileIds"] == []

    row = session.get(Media, uuid.UUID(media["id"]))
    assert row is not None and row.sha256 == media["sha256"]
    job_row = session.get(Job, uuid.UUID(job["id"]))
    assert job_row is not None and job_row.queue == "transcription"

    # The stored file is served back, byte for byte, at the URL the media object gives.
    assert media["url"].startswith("http://localhost/media/")
    served = client.get(media["url"].removeprefix("http://localhost"))
    assert served.status_code == 200
    assert served.get_data() == audio
    assert served.headers["X-Content-Type-Options"] == "nosniff"


def test_second_audio_gets_its_own_transcription_slot(
        client: FlaskClient, auth: dict[str, str], note_url: str) -> None:
    first = upload(client, auth, note_url, wav_tone(0.1), "a.wav", "audio/wav").get_json()
    second = upload(client, auth, note_url, wav_tone(0.1, 660), "b.wav", "audio/wav").get_json()
    note = client.get(note_url, headers=auth).get_json()
    assert note["audioFileIds"] == [first["id"], second["id"]]
    assert note["transcriptions"] == ["", ""]


def test_image_upload_is_a_photo_without_a_job(
        client: FlaskClient, auth: dict[str, str], note_url: str, session: Session) -> None:
    image = png_bytes()
    jobs_before = job_count(session)
    response = upload(client, auth, note_url, image, "photo.png", "image/png")
    assert response.status_code == 201, response.get_json()
    media = response.get_json()
    assert media["kind"] == "image" and media["mimeType"] == "image/png"
    assert media["transcriptionJob"] is None
    assert job_count(session) == jobs_before
    note = client.get(note_url, headers=auth).get_json()
    assert note["imageFileIds"] == [media["id"]]
    assert note["audioFileIds"] == [] and note["transcriptions"] == []
    served = client.get(media["url"].removeprefix("http://localhost"))
    assert served.status_code == 200 and served.get_data() == image
    assert served.mimetype == "image/png"


def test_generic_declared_type_is_sniffed(
        client: FlaskClient, auth: dict[str, str], note_url: str) -> None:
    response = upload(client, auth, note_url, png_bytes(), "photo", "application/octet-stream")
    assert response.status_code == 201
    assert response.get_json()["mimeType"] == "image/png"


def test_text_file_is_rejected_with_a_clear_message(
        client: FlaskClient, auth: dict[str, str], note_url: str, session: Session) -> None:
    before = media_count(session)
    for mime in ("text/plain", "application/octet-stream"):
        response = upload(client, auth, note_url, b"just some notes\n", "notes.txt", mime)
        body = assert_error(response, 422, "not a supported")
        assert "audio" in body["message"] and "image" in body["message"], body
    assert media_count(session) == before
    assert client.get(note_url, headers=auth).get_json()["audioFileIds"] == []


def test_declared_type_not_matching_the_bytes_is_rejected(
        client: FlaskClient, auth: dict[str, str], note_url: str, session: Session) -> None:
    before = media_count(session)
    assert_error(upload(client, auth, note_url, wav_tone(0.1), "memo.webm", "audio/webm"),
                 422, "does not match")
    assert_error(upload(client, auth, note_url, wav_tone(0.1), "photo.png", "image/png"),
                 422, "audio/wav")
    assert_error(upload(client, auth, note_url, png_bytes(), "memo.wav", "audio/wav"),
                 422, "image/png")
    assert media_count(session) == before


def test_empty_and_missing_file_are_422(
        client: FlaskClient, auth: dict[str, str], note_url: str) -> None:
    assert_error(upload(client, auth, note_url, b"", "empty.wav", "audio/wav"), 422, "empty")
    missing = client.post(f"{note_url}/media", headers=auth, data={"other": "x"})
    assert missing.status_code == 422
    assert missing.get_json()["message"]


def test_upload_over_20_mb_is_413(
        client: FlaskClient, auth: dict[str, str], note_url: str, session: Session) -> None:
    before = media_count(session)
    big = wav_tone(0.01) + b"\x00" * MAX_MEDIA_BYTES
    assert_error(upload(client, auth, note_url, big, "long.wav", "audio/wav"), 413, "20 MB")
    assert media_count(session) == before


def test_unknown_media_file_is_404(client: FlaskClient) -> None:
    assert_error(client.get(f"/media/audio/{uuid.uuid4()}.wav"), 404)
    assert_error(client.get("/media/../../etc/passwd"), 404)


# --- POST /transcriptions ------------------------------------------------------------------


def transcribe(client: FlaskClient, auth: dict[str, str], data: bytes,
               mime: str = "audio/wav", **extra: Any) -> Any:
    return client.post("/api/v1/transcriptions", headers=auth, json={
        "audioData": base64.b64encode(data).decode(), "mimeType": mime, **extra,
    })


def test_json_transcription_answers_202_with_location(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    audio = wav_tone(0.2)
    response = transcribe(client, auth, audio)
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["kind"] == "transcription" and job["status"] == "queued"
    assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
    assert int(response.headers["Retry-After"]) >= 1
    media = session.get(Media, uuid.UUID(job["input"]["mediaId"]))
    assert media is not None
    assert media.note_id is None and media.kind == "audio" and media.size == len(audio)
    assert media.transcription_job_id == uuid.UUID(job["id"])
    # The job carries a reference to the stored audio, never the bytes.
    assert "audioData" not in job["input"]
    polled = client.get(response.headers["Location"], headers=auth)
    assert polled.status_code == 200 and polled.get_json()["id"] == job["id"]


def test_mime_parameters_are_stripped(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    response = transcribe(client, auth, WEBM_BYTES, "audio/webm;codecs=opus")
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["input"]["mimeType"] == "audio/webm"
    media = session.get(Media, uuid.UUID(job["input"]["mediaId"]))
    assert media is not None and media.mime_type == "audio/webm"


def test_data_url_from_file_reader_is_accepted(
        client: FlaskClient, auth: dict[str, str]) -> None:
    data_url = "data:audio/wav;base64," + base64.b64encode(wav_tone(0.1)).decode()
    response = client.post("/api/v1/transcriptions", headers=auth,
                           json={"audioData": data_url, "mimeType": "audio/wav"})
    assert response.status_code == 202, response.get_json()


def test_data_url_prefix_does_not_count_towards_the_size_limit(
        client: FlaskClient, auth: dict[str, str]) -> None:
    # Exactly 20 MB of audio is allowed, however the client wraps its base64.
    audio = wav_tone(0.01)
    audio += b"\x00" * (MAX_MEDIA_BYTES - len(audio))
    data_url = "data:audio/wav;base64," + base64.b64encode(audio).decode()
    response = client.post("/api/v1/transcriptions", headers=auth,
                           json={"audioData": data_url, "mimeType": "audio/wav"})
    assert response.status_code == 202, response.get_json()


def test_multipart_transcription(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/transcriptions", headers=auth,
                           data={"file": (io.BytesIO(wav_tone(0.1)), "memo.wav", "audio/wav")})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["kind"] == "transcription"
    assert response.headers["Location"].startswith("/api/v1/jobs/")
    missing = client.post("/api/v1/transcriptions", headers=auth,
                          data={"noteId": str(uuid.uuid4())}, content_type="multipart/form-data")
    assert_error(missing, 422, "file")


def test_transcription_with_own_note_attaches_the_audio(
        client: FlaskClient, auth: dict[str, str], note_url: str) -> None:
    note_id = note_url.rsplit("/", 1)[1]
    response = transcribe(client, auth, wav_tone(0.1), noteId=note_id)
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert job["input"]["noteId"] == note_id
    note = client.get(note_url, headers=auth).get_json()
    assert note["audioFileIds"] == [job["input"]["mediaId"]]
    assert note["transcriptions"] == [""]

    form = client.post("/api/v1/transcriptions", headers=auth, data={
        "file": (io.BytesIO(wav_tone(0.1, 880)), "b.wav", "audio/wav"), "noteId": note_id})
    assert form.status_code == 202, form.get_json()
    assert len(client.get(note_url, headers=auth).get_json()["audioFileIds"]) == 2


def test_transcription_with_foreign_or_unknown_note_is_404(
        client: FlaskClient, auth: dict[str, str], other_auth: dict[str, str],
        note_url: str, session: Session) -> None:
    before = (media_count(session), job_count(session))
    foreign = note_url.rsplit("/", 1)[1]
    for note_id in (foreign, str(uuid.uuid4())):
        assert_error(transcribe(client, other_auth, wav_tone(0.1), noteId=note_id), 404, "note")
    assert (media_count(session), job_count(session)) == before


def test_bad_base64_is_422(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/transcriptions", headers=auth,
                           json={"audioData": "not base64 at all!!", "mimeType": "audio/wav"})
    body = assert_error(response, 422, "base64")
    assert "audioData" in body["errors"]["json"]


def test_not_audio_is_422(client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    before = media_count(session)
    assert_error(transcribe(client, auth, png_bytes(), "image/png"), 422, "audio")
    assert_error(transcribe(client, auth, b"hello", "text/plain"), 422, "text/plain")
    assert_error(transcribe(client, auth, b"hello", "audio/wav"), 422, "not a supported audio")
    assert media_count(session) == before


def test_bytes_not_matching_declared_type_is_422(
        client: FlaskClient, auth: dict[str, str], session: Session) -> None:
    before = media_count(session)
    assert_error(transcribe(client, auth, WEBM_BYTES, "audio/wav"), 422, "does not match")
    assert_error(transcribe(client, auth, wav_tone(0.1), "audio/mpeg"), 422, "does not match")
    assert media_count(session) == before


def test_audio_over_20_mb_is_413(client: FlaskClient, auth: dict[str, str],
                                 session: Session) -> None:
    before = media_count(session)
    big = wav_tone(0.01) + b"\x00" * (MAX_MEDIA_BYTES + 1 - len(wav_tone(0.01)))
    assert len(big) == MAX_MEDIA_BYTES + 1
    assert_error(transcribe(client, auth, big), 413, "20 MB")
    form = client.post("/api/v1/transcriptions", headers=auth,
                       data={"file": (io.BytesIO(big), "long.wav", "audio/wav")})
    assert_error(form, 413, "20 MB")
    assert media_count(session) == before


def test_body_over_the_request_limit_is_413_in_the_error_shape(
        client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = b'{"audioData": "' + b"A" * limit + b'", "mimeType": "audio/wav"}'
    response = client.post("/api/v1/transcriptions", headers=auth, data=body,
                           content_type="application/json")
    assert_error(response, 413)
    form = client.post("/api/v1/transcriptions", headers=auth,
                       data={"file": (io.BytesIO(b"\x00" * (limit + 1)), "x.wav", "audio/wav")})
    assert_error(form, 413)
    note = client.post(f"/api/v1/spaces/{uuid.uuid4()}/notes", headers=auth, data=body,
                       content_type="application/json")
    assert_error(note, 413)


def test_transcription_needs_json_or_multipart(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post("/api/v1/transcriptions", headers=auth, data=b"RIFF....",
                           content_type="audio/wav")
    assert_error(response, 415)
