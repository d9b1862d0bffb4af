"""Secrets stay where they belong, over the whole flow on the platform as ``make run`` starts it
(PostgreSQL, Redis, the real google-genai SDK against a fake Gemini): the Gemini key, the user's
password, the access tokens and the audio never appear in any log file, in any job record
(input, result, error, usage, events) or, for the key, in anything the API sends a client."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from models.db import normalize_database_url
from tests.audio import spoken_audio
from tests.fakes.gemini_server import FakeGemini
from tests.platform import Client, Platform
from tests.test_e2e_platform import pg_platform_env, run_story_flow

__all__ = ["pg_platform_env"]  # the fixture, shared with the e2e test


@pytest.fixture
def amqp_url() -> None:
    """What reaches the logs does not depend on the broker: this runs on Redis only."""
    return None

pytestmark = pytest.mark.integration

GEMINI_KEY = "AIzaSy-TEST-" + uuid.uuid4().hex  # shaped like a real key, unique to this run
PASSWORD = "a long enough password"  # run_story_flow's
NOTE_TEXT = "We landed at dawn and walked along the river."  # one of run_story_flow's notes


class RecordingClient(Client):
    """The e2e client, keeping every response (status line, headers, body) it received."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.seen: list[str] = []
        self.http.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *_: Any, **__: Any) -> None:
        body = response.content if "image" not in response.headers.get("Content-Type", "") else b""
        self.seen.append(f"{response.status_code} {dict(response.headers)}\n"
                         f"{body.decode(errors='replace')}")


def job_records(database_url: str) -> str:
    """Everything the platform wrote about its jobs, as one text."""
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as conn:
            jobs = conn.execute(text(
                "SELECT input::text, result::text, error::text, usage::text, idempotency_key, "
                "request_hash FROM jobs")).all()
            events = conn.execute(text("SELECT data::text FROM job_events")).all()
            cache = conn.execute(text("SELECT * FROM cache_entries")).all()
    finally:
        engine.dispose()
    assert jobs and events, "the flow made no jobs: the search below would prove nothing"
    return "\n".join(str(row) for rows in (jobs, events, cache) for row in rows)


def test_keys_passwords_tokens_and_audio_never_leak(
        pg_platform_env: dict[str, str], tmp_path: Path) -> None:
    voice = spoken_audio("The sun sets over the Douro.", tmp_path)
    audio_b64 = base64.b64encode(voice).decode()
    audio_chunk = audio_b64[len(audio_b64) // 2:][:48]
    with FakeGemini(transcription_text="The sun sets over the Douro.") as gemini:
        env = {**pg_platform_env, "GEMINI_API_KEY": GEMINI_KEY,
               "GOOGLE_GEMINI_BASE_URL": gemini.base_url, "LOG_LEVEL": "DEBUG"}
        with Platform(env, tmp_path / "var") as platform:
            client = RecordingClient(platform.base_url)
            run_story_flow(client, voice)
            tokens = [str(client.http.headers["Authorization"]).split()[1]]
            # A failed job too: an upstream error that (carelessly) echoes the key back.
            gemini.fail_next("illustration", status=400, body={"error": {
                "code": 400, "status": "INVALID_ARGUMENT",
                "message": f"API key not valid: {GEMINI_KEY}"}})
            failed = client.call("POST", "/illustrations", json={"prompt": "a kite"}).json()
            assert client.wait_job(failed["id"])["status"] == "failed"
            # Errors a client can cause, and their answers.
            client.call("POST", "/auth/token", expect=401,
                        json={"email": "nobody@example.com", "password": PASSWORD})
            client.call("POST", "/transcriptions", expect=422,
                        json={"audioData": audio_b64[:1000] + "!", "mimeType": "audio/webm"})
            for path in ("/ready", "/api/openapi.json", "/api/docs", "/health"):
                requests.get(platform.base_url + path, timeout=10,
                             hooks={"response": [client._record]})
            assert all(r.headers.get("x-goog-api-key") == GEMINI_KEY for r in gemini.requests)
            events = requests.get(f"{platform.base_url}/api/v1/jobs/{failed['id']}/events",
                                  headers=client.http.headers, timeout=30)
            client._record(events)
        logs = {path.name: path.read_text(errors="replace")
                for path in (tmp_path / "var").rglob("*.log")}
    records = job_records(pg_platform_env["DATABASE_URL"])

    assert '"logger": "api.requests"' in logs["platform.log"], "no API log lines to search"
    secrets = {"the Gemini key": GEMINI_KEY, "the password": PASSWORD,
               "a base64 audio chunk": audio_chunk, **{f"token {i}": t for i, t in
                                                       enumerate(tokens)}}
    for name, log in logs.items():
        for what, secret in {**secrets, "a note's text": NOTE_TEXT}.items():
            assert secret not in log, f"{what} is in {name}"
    for what, secret in secrets.items():
        assert secret not in records, f"{what} is in the job records"
    answers = "\n".join(client.seen)
    assert len(client.seen) > 20
    assert GEMINI_KEY not in answers and GEMINI_KEY[:20] not in answers
    assert "Traceback" not in answers
    assert json.dumps(GEMINI_KEY)[1:-1] not in answers
