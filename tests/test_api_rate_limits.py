"""Request rate limits: the per-user budgets of the model calls, the general per-user and per-IP
limits, polling's own budget, the strict limit on sign-in, and how a refusal reads (429 in the
one error shape, Retry-After, RateLimit-*). Each test builds an app with small limits; the
shared fixtures run with limits off (see conftest)."""

from __future__ import annotations

import base64
import dataclasses
import io
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from api import create_app
from config import RateLimitSettings, Settings
from tests.audio import wav_tone
from tests.conftest import REDIS_BASE, assert_error, make_note, make_space, register
from tests.test_api_media import png_bytes

AppFactory = Callable[..., Flask]


@pytest.fixture
def limited_app(settings: Settings, session_factory: sessionmaker[Session]) -> AppFactory:
    """An app with these rate limits (memory storage unless ``redis_url`` is given)."""

    def build(redis_url: str | None = None, **limits: Any) -> Flask:
        rate_limits = dataclasses.replace(RateLimitSettings(), **limits)
        configured = dataclasses.replace(settings, rate_limits=rate_limits, redis_url=redis_url)
        app = create_app(configured, session_factory=session_factory)
        app.testing = True
        return app

    return build


def audio_body() -> dict[str, Any]:
    return {"audioData": base64.b64encode(wav_tone(0.1)).decode(), "mimeType": "audio/wav"}


def assert_refused(response: Any, *fragments: str) -> dict[str, Any]:
    body = assert_error(response, 429, "rate limit exceeded", *fragments)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 3600
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) == retry_after
    return body


def test_transcriptions_past_the_limit_are_429_and_the_server_keeps_serving(
        limited_app: AppFactory) -> None:
    client = limited_app(transcription="3/minute").test_client()
    auth = register(client)
    for n in range(3):
        response = client.post("/api/v1/transcriptions", headers=auth, json=audio_body())
        assert response.status_code == 202, response.get_json()
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(2 - n)
        assert response.headers["RateLimit-Policy"] == "3;w=60"
    refused = client.post("/api/v1/transcriptions", headers=auth, json=audio_body())
    assert_refused(refused, "3/minute transcriptions per user")
    # Other users, and this user's other requests, are unaffected.
    assert client.post("/api/v1/transcriptions", headers=register(client),
                       json=audio_body()).status_code == 202
    assert client.get("/api/v1/spaces", headers=auth).status_code == 200


def test_a_media_upload_spends_the_transcription_budget_only_for_audio(
        limited_app: AppFactory) -> None:
    client = limited_app(transcription="1/minute").test_client()
    auth = register(client)
    space = make_space(client, auth)
    note = make_note(client, auth, space["id"])
    url = f"/api/v1/spaces/{space['id']}/notes/{note['id']}/media"

    def upload(data: bytes, name: str, mime: str) -> Any:
        return client.post(url, headers=auth, data={"file": (io.BytesIO(data), name, mime)})

    assert upload(wav_tone(0.1), "a.wav", "audio/wav").status_code == 201
    assert_refused(upload(wav_tone(0.1), "b.wav", "audio/wav"), "transcriptions")
    assert upload(png_bytes(), "photo.png", "image/png").status_code == 201
    # An invalid upload costs nothing either: it is refused for what it is.
    assert_error(upload(b"not audio", "c.wav", "audio/wav"), 422)


def test_three_stories_an_hour(limited_app: AppFactory) -> None:
    client = limited_app().test_client()  # the defaults: 3 story generations an hour
    auth = register(client)
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    url = f"/api/v1/spaces/{space['id']}/story"
    for _ in range(3):
        assert client.post(url, headers=auth, json={"force": True}).status_code == 202
    body = assert_refused(client.post(url, headers=auth, json={"force": True}),
                          "3/hour story generations")
    assert "retry in" in body["message"]
    # A request the story endpoint refuses anyway (unknown space) costs nothing and says so.
    assert_error(client.post(f"/api/v1/spaces/{uuid.uuid4()}/story", headers=auth, json={}), 404)


def test_illustrations_have_their_own_budget(limited_app: AppFactory) -> None:
    client = limited_app(illustration="2/hour").test_client()
    auth = register(client)
    for _ in range(2):
        assert client.post("/api/v1/illustrations", headers=auth,
                           json={"prompt": "a kite"}).status_code == 202
    assert_refused(client.post("/api/v1/illustrations", headers=auth, json={"prompt": "a kite"}),
                   "illustrations")


def test_general_limit_per_user_spares_polling(limited_app: AppFactory) -> None:
    client = limited_app(per_user="5/hour", polling="8/minute").test_client()
    auth = register(client)  # anonymous: counted against the address, not the user
    job = client.post("/api/v1/illustrations", headers=auth, json={"prompt": "a boat"})
    job_id = job.get_json()["id"]
    for _ in range(4):
        assert client.get("/api/v1/spaces", headers=auth).status_code == 200
    assert_refused(client.get("/api/v1/spaces", headers=auth), "API requests per user")
    # Polling the job (and its event stream) has its own budget: never starved by the rest.
    for _ in range(8):
        response = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
        assert response.status_code == 200
    assert_refused(client.get(f"/api/v1/jobs/{job_id}", headers=auth), "job status reads")
    # Probes are never limited.
    for _ in range(10):
        assert client.get("/health").status_code == 200


def test_per_ip_ceiling_counts_every_user_of_the_address(limited_app: AppFactory) -> None:
    client = limited_app(per_ip="6/hour").test_client()
    users = [register(client), register(client)]  # 2 requests
    for headers in users * 2:  # 4 more
        assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert_refused(client.get("/api/v1/me", headers=users[0]), "requests per address")
    assert_refused(client.get("/api/v1/me"), "requests per address")
    # Another address is another budget (REMOTE_ADDR is what the limiter sees; behind a proxy,
    # ProxyFix makes it the client's address).
    other = client.get("/api/v1/me", headers=users[0], environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


def test_sign_in_is_strictly_limited_per_address(limited_app: AppFactory) -> None:
    client = limited_app(auth="3/minute").test_client()
    register(client, "ana@example.com", "the right password")
    for _ in range(2):
        wrong = client.post("/api/v1/auth/token",
                            json={"email": "ana@example.com", "password": "guess"})
        assert wrong.status_code == 401
    assert_refused(client.post("/api/v1/auth/token", json={"email": "ana@example.com",
                                                           "password": "the right password"}),
                   "sign-in")
    assert_refused(client.post("/api/v1/auth/register", json={
        "email": "bot@example.com", "password": "long enough password"}), "sign-in")


def test_limits_off_means_no_headers_and_no_refusals(client: FlaskClient,
                                                     auth: dict[str, str]) -> None:
    for _ in range(15):
        response = client.post("/api/v1/transcriptions", headers=auth, json=audio_body())
        assert response.status_code == 202
        assert "RateLimit-Limit" not in response.headers


def test_counts_are_shared_through_redis(limited_app: AppFactory) -> None:
    """Two API processes (two apps here) share one budget when REDIS_URL is set."""
    redis.Redis.from_url(f"{REDIS_BASE}/13").flushdb()
    first = limited_app(redis_url=f"{REDIS_BASE}/13", transcription="2/minute").test_client()
    second = limited_app(redis_url=f"{REDIS_BASE}/13", transcription="2/minute").test_client()
    auth = register(first)
    assert first.post("/api/v1/transcriptions", headers=auth, json=audio_body()).status_code == 202
    assert second.post("/api/v1/transcriptions", headers=auth,
                       json=audio_body()).status_code == 202
    assert_refused(first.post("/api/v1/transcriptions", headers=auth, json=audio_body()))
    assert_refused(second.post("/api/v1/transcriptions", headers=auth, json=audio_body()))


def test_redis_down_falls_back_to_memory_not_to_errors(limited_app: AppFactory) -> None:
    client = limited_app(redis_url="redis://127.0.0.1:1/0", per_user="3/hour").test_client()
    # Unreachable storage: the request is served and counted in this process instead.
    headers = {"Authorization": "Bearer none"}
    statuses = [client.get("/api/v1/me", headers=headers).status_code for _ in range(4)]
    assert statuses[:3] == [401, 401, 401]
    assert statuses[3] == 429


def test_rate_limit_settings_from_env() -> None:
    limits = RateLimitSettings.from_env({"RATE_LIMIT_STORIES": "5 per day",
                                         "RATE_LIMITS_ENABLED": "false"})
    assert limits.story == "5 per day" and limits.enabled is False
    assert limits.transcription == "10/minute" and limits.per_user == "1000/hour"
    for bad in ({"RATE_LIMIT_PER_USER": "lots"}, {"RATE_LIMITS_ENABLED": "maybe"}):
        with pytest.raises(RuntimeError, match=next(iter(bad))):
            RateLimitSettings.from_env(bad)


def test_a_retried_submit_with_its_idempotency_key_spends_nothing(
        limited_app: AppFactory) -> None:
    client = limited_app(transcription="1/minute").test_client()
    auth = {**register(client), "Idempotency-Key": "upload-1"}
    first = client.post("/api/v1/transcriptions", headers=auth, json=audio_body())
    again = client.post("/api/v1/transcriptions", headers=auth, json=audio_body())
    assert first.status_code == again.status_code == 202
    assert again.get_json()["id"] == first.get_json()["id"]
    assert_refused(client.post("/api/v1/transcriptions", headers={**auth, "Idempotency-Key": "2"},
                               json=audio_body()))
