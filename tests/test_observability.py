"""Observability: what ops read from the running platform.

The end-to-end test runs the platform's real processes (API under gunicorn with its config, a
Celery worker, beat) on PostgreSQL and a private Redis with the fake Gemini, then scrapes the
API's ``/metrics`` and the worker's exporter, follows one request id from the API's log to the
worker's, and checks the usage report against the job rows. The other tests drive the API in
process (Flask test client) and the log formatter directly.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

import telemetry
from config import MODEL_PRICES_USD_PER_MTOK, ObservabilitySettings, estimated_cost_usd
from models import Job, User
from models.base import utcnow
from tests.audio import wav_tone
from tests.conftest import make_note, make_space
from tests.fakes.gemini_server import FakeGemini
from tests.platform import ROOT, Stack, free_port, running_stack
from workers.usage import format_table, parse_since, total, usage_since

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(text: str) -> Samples:
    """Every sample of an exposition, by sample name (``..._total``, ``..._count``...)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for found, v in samples.get(name, []) if labels.items() <= found.items())


def label_sets(samples: Samples, name: str) -> list[dict[str, str]]:
    return [labels for labels, _ in samples.get(name, [])]


def log_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a process's output, each of which must be one JSON object."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]!r}") from None
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "message"} <= set(entry), entry
        lines.append(entry)
    return lines


# --- the platform end to end -----------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with FakeGemini() as gemini, running_stack(tmp_path, gemini) as running:
        yield running


def transcription_body(frequency: float) -> dict[str, str]:
    audio = wav_tone(0.3, frequency=frequency)
    return {"audioData": base64.b64encode(audio).decode(), "mimeType": "audio/wav"}


@pytest.mark.integration
def test_metrics_logs_and_usage_after_the_end_to_end_flow(stack: Stack) -> None:
    client, services, gemini = stack.client, stack.services, stack.gemini
    exporter_port = free_port()
    # Only the worker reads these: its exporter, and one transcription-model call a second so
    # that two transcriptions arriving together make one of them wait for rate-limit room.
    services.platform.env.update(
        WORKER_METRICS_PORT=str(exporter_port), GEMINI_RPM_GEMINI_3_5_FLASH_LITE="60"
    )
    request_id = f"obs-{uuid.uuid4().hex[:12]}"

    # Submitted before any worker runs: they wait in the queue the API's gauge counts.
    space = client.call("POST", "/spaces", json={"title": "Porto"}, expect=201).json()
    for title, text, ts in (("Arrival", "We landed at dawn.", 1_700_000_000_000),
                            ("Market", "Sardines at the market.", 1_700_040_000_000)):
        client.call("POST", f"/spaces/{space['id']}/notes", expect=201,
                    json={"title": title, "textContent": text, "timestamp": ts})
    first = client.call("POST", "/transcriptions", json=transcription_body(440), expect=202)
    second = client.call("POST", "/transcriptions", json=transcription_body(660), expect=202)
    assert first.headers["X-Request-ID"] and first.headers["X-Request-ID"] != (
        second.headers["X-Request-ID"]
    )
    api_before = scrape(requests.get(f"{services.base_url}/metrics", timeout=5).text)
    assert value(api_before, "lifetales_queue_depth", queue="transcription") == 2
    assert {"queue": "story"} in label_sets(api_before, "lifetales_queue_depth")

    gemini.fail_next("transcription", 1, status=503)  # one attempt fails and is retried
    services.start_worker("w1", concurrency=4)
    for submitted in (first, second):
        assert client.wait_job(submitted.json()["id"])["status"] == "succeeded"

    story = client.call("POST", f"/spaces/{space['id']}/story", json={}, expect=202,
                        headers={"X-Request-ID": request_id})
    assert story.headers["X-Request-ID"] == request_id
    story_job = client.wait_job(story.json()["id"], timeout=90)
    assert story_job["status"] == "succeeded", story_job
    # The same audio again: answered from the cache.
    again = client.call("POST", "/transcriptions", json=transcription_body(440),
                        headers={"Prefer": "wait=30"}, expect=200).json()
    assert again["status"] == "succeeded"

    # --- the API's /metrics
    api = scrape(requests.get(f"{services.base_url}/metrics", timeout=5).text)
    story_route = "/api/v1/spaces/<uuid:space_id>/story"
    assert value(api, "lifetales_http_requests_total",
                 endpoint=story_route, method="POST", status="202") == 1
    assert value(api, "lifetales_http_requests_total",
                 endpoint="/api/v1/jobs/<uuid:job_id>", method="GET", status="200") >= 1
    assert value(api, "lifetales_http_request_duration_seconds_count",
                 endpoint=story_route, method="POST", status="202") == 1
    assert value(api, "lifetales_http_request_duration_seconds_sum", endpoint=story_route) > 0
    assert value(api, "lifetales_jobs_submitted_total", kind="transcription") == 3
    assert value(api, "lifetales_jobs_submitted_total", kind="story") == 1
    assert {labels["queue"] for labels in label_sets(api, "lifetales_queue_depth")} >= {
        "transcription", "story", "illustration"}

    # --- the worker's exporter
    worker = scrape(requests.get(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5).text)
    lite, flash, image = "gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-nano-banana-2.1"
    assert value(worker, "lifetales_jobs_submitted_total", kind="illustration") == 2
    for kind in ("transcription", "story", "illustration"):
        finished = 3 if kind == "transcription" else 2 if kind == "illustration" else 1
        assert value(worker, "lifetales_jobs_finished_total",
                     kind=kind, status="succeeded") == finished, kind
        assert value(worker, "lifetales_job_duration_seconds_count",
                     kind=kind, status="succeeded") == finished
        assert value(worker, "lifetales_job_queue_wait_seconds_count", kind=kind) >= finished
    assert value(worker, "lifetales_job_duration_seconds_sum", kind="story") > 0
    assert value(worker, "lifetales_job_retries_total",
                 kind="transcription", code="upstream_unavailable") == 1
    for agent, model in (("transcription", lite), ("story", flash), ("illustration", image)):
        assert value(worker, "lifetales_model_calls_total",
                     agent=agent, model=model, outcome="ok") >= 1, agent
        assert value(worker, "lifetales_model_call_duration_seconds_count",
                     agent=agent, model=model, outcome="ok") >= 1
        for direction in ("in", "out"):
            assert value(worker, "lifetales_model_tokens_total",
                         agent=agent, model=model, direction=direction) > 0
        assert value(worker, "lifetales_model_cost_usd_total", agent=agent, model=model) > 0
    assert value(worker, "lifetales_model_calls_total", agent="transcription", model=lite,
                 outcome="upstream_unavailable") == 1
    assert value(worker, "lifetales_cache_lookups_total", agent="transcription",
                 result="hit") == 1
    assert value(worker, "lifetales_cache_lookups_total", agent="transcription",
                 result="miss") >= 2
    assert value(worker, "lifetales_ratelimit_wait_seconds_count", model=lite) >= 1
    assert value(worker, "lifetales_ratelimit_wait_seconds_sum", model=lite) > 0

    # --- one request followed from the API to the worker, in JSON lines
    api_log, worker_log = log_lines(services.log("api")), log_lines(services.log("w1"))
    submit_line = [e for e in api_log if e.get("request_id") == request_id]
    assert [(e["method"], e["endpoint"], e["status"]) for e in submit_line] == [
        ("POST", story_route, 202)]
    assert submit_line[0]["service"] == "api" and submit_line[0]["duration_ms"] >= 0
    traced = [e for e in worker_log if e.get("request_id") == request_id]
    story_lines = [e for e in traced if e.get("job_id") == story_job["id"]]
    assert any(e["message"] == "job started" for e in story_lines), traced
    assert all(e.get("task_id") for e in traced)
    children = client.call("GET", f"/jobs?parentId={story_job['id']}").json()
    assert {c["id"] for c in children} <= {e.get("job_id") for e in traced}
    assert any(e.get("metrics_port") == exporter_port for e in worker_log)

    # --- no secret in any line
    secrets = [services.platform.env["GEMINI_API_KEY"], services.platform.env["SECRET_KEY"]]
    for name in ("api", "w1", "beat"):
        text = services.log(name)
        assert text and not any(secret in text for secret in secrets), name

    # --- the usage report matches the job rows, and the worker's token counters
    rows = stack.query("SELECT kind, usage FROM jobs WHERE usage IS NOT NULL")
    expected_in = sum(usage["inputTokens"] for _, usage in rows)
    expected_out = sum(usage["outputTokens"] for _, usage in rows)
    expected_cost = sum(
        estimated_cost_usd(u["model"], u["inputTokens"], u["outputTokens"]) or 0 for _, u in rows
    )
    report = json.loads(run_cli(services.platform.env, "usage", "--since", "1h", "--json"))
    assert report["total"]["jobs"] == len(rows) == 5  # 2 transcriptions, 1 story, 2 images
    assert report["total"]["input_tokens"] == expected_in
    assert report["total"]["output_tokens"] == expected_out
    assert report["total"]["cost_usd"] == pytest.approx(expected_cost)
    assert {(r["agent"], r["model"]) for r in report["rows"]} == {
        ("transcription", lite), ("story", flash), ("illustration", image)}
    assert value(worker, "lifetales_model_tokens_total", direction="in") == expected_in
    assert value(worker, "lifetales_model_tokens_total", direction="out") == expected_out
    assert value(worker, "lifetales_model_cost_usd_total") == pytest.approx(expected_cost)
    table = run_cli(services.platform.env, "usage", "--since", "30m")
    assert f"{expected_in:,}" in table.splitlines()[-3]  # the total line


def run_cli(env: dict[str, str], *args: str) -> str:
    lifetales = Path(sys.executable).parent / "lifetales"
    done = subprocess.run([str(lifetales), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout


# --- /metrics access -------------------------------------------------------------------------


def with_token(app: Flask, token: str | None) -> None:
    state = app.extensions["lifetales"]
    state.settings = dataclasses.replace(
        state.settings, observability=ObservabilitySettings(metrics_token=token)
    )


def test_metrics_are_served_to_loopback_callers_only_without_a_token(client: FlaskClient) -> None:
    local = client.get("/metrics")
    assert local.status_code == 200
    assert b"lifetales_queue_depth" in local.data
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 403
    assert "loopback" in remote.get_json()["message"]
    # Relayed by a proxy on this host: the real caller is elsewhere.
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403
    ipv6 = client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"})
    assert ipv6.status_code == 200


def test_metrics_need_the_bearer_token_when_one_is_set(app: Flask, client: FlaskClient) -> None:
    with_token(app, "a-long-metrics-token")
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/metrics", environ_base=remote).status_code == 401
    assert client.get("/metrics").status_code == 401  # loopback too
    wrong = client.get("/metrics", environ_base=remote,
                       headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    good = client.get("/metrics", environ_base=remote,
                      headers={"Authorization": "Bearer a-long-metrics-token"})
    assert good.status_code == 200
    assert "lifetales_http_requests_total" in good.get_data(as_text=True)


def test_queue_depth_counts_queued_jobs_per_queue(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    before = value(scrape(client.get("/metrics").get_data(as_text=True)),
                   "lifetales_queue_depth", queue="story")
    assert client.post(f"/api/v1/spaces/{space['id']}/story", json={},
                       headers=auth).status_code == 202
    after = scrape(client.get("/metrics").get_data(as_text=True))
    assert value(after, "lifetales_queue_depth", queue="story") == before + 1


# --- request ids -----------------------------------------------------------------------------


def test_a_sane_request_id_is_kept_echoed_and_stored_on_the_job(
    client: FlaskClient, auth: dict[str, str], session: Session
) -> None:
    space = make_space(client, auth)
    make_note(client, auth, space["id"])
    response = client.post(f"/api/v1/spaces/{space['id']}/story", json={},
                           headers={**auth, "X-Request-ID": "req-7f3a.b_c:9"})
    assert response.headers["X-Request-ID"] == "req-7f3a.b_c:9"
    job = session.get(Job, uuid.UUID(response.get_json()["id"]))
    assert job is not None and job.request_id == "req-7f3a.b_c:9"
    assert "requestId" not in response.get_json()  # not part of the client-visible job


@pytest.mark.parametrize("candidate", [
    "has space", "semi;colon", "x" * 65, "", "-starts-with-dash", '{"json": 1}', "é",
])
def test_an_unusable_request_id_is_replaced(client: FlaskClient, candidate: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": candidate})
    echoed = response.headers["X-Request-ID"]
    assert echoed != candidate and len(echoed) == 32 and echoed.isalnum()


def test_every_response_gets_a_request_id(client: FlaskClient) -> None:
    first, second = client.get("/health"), client.get("/nowhere")
    assert second.status_code == 404
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


# --- the JSON formatter ----------------------------------------------------------------------


def format_record(formatter: logging.Formatter, message: str, **extra: Any) -> dict[str, Any]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        raise RuntimeError("boom with the key sk-secret-123456")
    except RuntimeError:
        logger.error(message, extra=extra, exc_info=True)
    line = stream.getvalue()
    assert line.count("\n") == 1  # one line, traceback included
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_json_lines_carry_context_and_extra_fields_and_never_secrets() -> None:
    env = {"GEMINI_API_KEY": "sk-secret-123456", "DATABASE_URL": "postgresql://u:pg-pass-987@db/x"}
    formatter = telemetry.json_formatter("worker", env)
    token = telemetry.bind(request_id="req-1", job_id="job-1")
    try:
        entry = format_record(formatter, "called %s", code="upstream_timeout",
                              access_token="eyJ-visible?", attempt=2,
                              url="postgresql://u:pg-pass-987@db/x")
    finally:
        telemetry.unbind(token)
    assert entry["message"] == "called %s"  # no args given: the message as is
    assert entry["service"] == "worker" and entry["level"] == "ERROR"
    assert (entry["request_id"], entry["job_id"]) == ("req-1", "job-1")
    assert (entry["code"], entry["attempt"]) == ("upstream_timeout", 2)
    assert entry["access_token"] == "[redacted]"
    assert "RuntimeError" in entry["exception"]
    text = json.dumps(entry)
    assert "sk-secret-123456" not in text and "pg-pass-987" not in text
    assert telemetry.current_request_id() is None  # unbound again


def test_secret_values_come_from_the_environment() -> None:
    env = {"SECRET_KEY": "k" * 40, "REDIS_URL": "redis://:r3dis-pass@h:6379/0",
           "CLOUDINARY_URL": "cloudinary://key:cl-secret@cloud", "GEMINI_API_KEY": ""}
    found = telemetry.secret_values(env)
    assert {"k" * 40, "r3dis-pass", "cl-secret", env["CLOUDINARY_URL"]} <= set(found)
    assert "" not in found


# --- the usage report ------------------------------------------------------------------------


def add_job(session: Session, owner: User, kind: str, usage: dict[str, Any] | None,
            created_ago: timedelta = timedelta(minutes=5)) -> None:
    session.add(Job(owner_id=owner.id, kind=kind, queue=kind, status="succeeded", attempts=1,
                    max_attempts=4, input={}, usage=usage, created_at=utcnow() - created_ago))


def test_usage_report_sums_the_job_rows_by_agent_and_model(session: Session) -> None:
    owner = User(email=f"usage-{uuid.uuid4().hex[:8]}@example.com", password_hash="x")
    session.add(owner)
    session.flush()
    flash = {"model": "gemini-2.5-flash", "inputTokens": 1_000_000, "outputTokens": 200_000,
             "calls": 1}
    add_job(session, owner, "story", flash)
    add_job(session, owner, "story", {**flash, "inputTokens": 500_000, "calls": 2})
    add_job(session, owner, "illustration", {"model": "gemini-2.5-flash-image",
                                              "inputTokens": 100, "outputTokens": 1290,
                                              "calls": 1})
    add_job(session, owner, "transcription", None)  # answered from the cache
    add_job(session, owner, "story", flash, created_ago=timedelta(days=8))  # outside the window
    session.flush()

    rows = usage_since(session, utcnow() - parse_since("7d"))
    story = next(r for r in rows if r.agent == "story")
    assert (story.jobs, story.calls, story.input_tokens, story.output_tokens) == (
        2, 3, 1_500_000, 400_000)
    # 1.5 M in at $0.30 + 0.4 M out at $2.50 per million.
    assert Decimal(str(story.cost_usd)).quantize(Decimal("0.0001")) == Decimal("1.4500")
    summed = total(rows)
    assert (summed.jobs, summed.input_tokens, summed.output_tokens) == (3, 1_500_100, 401_290)
    table = format_table(rows, utcnow(), "7d")
    assert "gemini-2.5-flash-image" in table and "1,500,100" in table


def test_usage_windows_and_prices() -> None:
    assert parse_since("30m") == timedelta(minutes=30)
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("7d") == timedelta(days=7)
    for bad in ("7", "d", "0d", "-1h", "7 days"):
        with pytest.raises(ValueError):
            parse_since(bad)
    # Today's list prices (thinking billed as output, image and audio outputs at their rates),
    # and the retired models' so that their old jobs keep a cost.
    assert MODEL_PRICES_USD_PER_MTOK["gemini-3.8-flash"] == (0.75, 3.75)
    assert MODEL_PRICES_USD_PER_MTOK["gemini-3.5-flash-lite"] == (0.30, 2.50)
    assert MODEL_PRICES_USD_PER_MTOK["gemini-nano-banana-2.1"] == (1.50, 30.00)
    assert MODEL_PRICES_USD_PER_MTOK["gemini-3.8-flash-tts"] == (0.50, 9.00)
    assert MODEL_PRICES_USD_PER_MTOK["gemini-2.5-flash"] == (0.30, 2.50)
    assert estimated_cost_usd("offline", 10, 10) is None


def test_usage_command_rejects_a_bad_window() -> None:
    lifetales = Path(sys.executable).parent / "lifetales"
    done = subprocess.run([str(lifetales), "usage", "--since", "soon"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "30m, 24h or 7d" in done.stderr


# --- Sentry ----------------------------------------------------------------------------------


def test_sentry_stays_off_without_a_dsn() -> None:
    assert telemetry.init_sentry(None, service="api") is False
    assert telemetry.init_sentry("", service="worker") is False


def test_worker_exporter_moves_to_the_next_free_port_once_per_process() -> None:
    # In a child process: the exporter is process-wide state.
    code = (
        "import socket, telemetry\n"
        "busy = socket.socket(); busy.bind(('127.0.0.1', 0)); busy.listen()\n"
        "port = busy.getsockname()[1]\n"
        "got = telemetry.start_metrics_exporter('127.0.0.1', port, tries=5)\n"
        "assert got is not None and port < got < port + 5, (port, got)\n"
        "assert telemetry.start_metrics_exporter('127.0.0.1', port) == got\n"
        "assert telemetry.start_metrics_exporter('127.0.0.1', 0) is None\n"
        "import urllib.request\n"
        "body = urllib.request.urlopen(f'http://127.0.0.1:{got}/metrics', timeout=5).read()\n"
        "assert b'# TYPE lifetales_model_calls_total counter' in body, body[:300]\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_sentry_reports_api_errors_with_the_request_id_and_without_payloads(
    tmp_path: Path,
) -> None:
    """A real sentry-sdk against a local endpoint that records what it would have sent."""
    received: list[bytes] = []

    class Intake(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.append(body)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Intake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/1"
    # In a child process: Sentry's client is process-wide.
    script = (
        "import os, sentry_sdk\n"
        "from api import create_app\n"
        "app = create_app()\n"
        "def boom():\n"
        "    raise RuntimeError('boom')\n"
        "app.add_url_rule('/boom', 'boom', boom, methods=['POST'])\n"
        "response = app.test_client().post('/boom', data='SECRET-PAYLOAD-123',\n"
        "    headers={'Authorization': 'Bearer tok-SECRET-456', 'X-Request-ID': 'sentry-req-1'})\n"
        "assert response.status_code == 500, response.status_code\n"
        "sentry_sdk.flush(timeout=10)\n"
    )
    env = {**os.environ, "SENTRY_DSN": dsn, "LIFETALES_VAR_DIR": str(tmp_path / "var"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'sentry.db'}"}
    try:
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True,
                       timeout=60, capture_output=True)
    finally:
        server.shutdown()
    sent = b"\n".join(received).decode(errors="replace")
    assert "RuntimeError" in sent and "boom" in sent
    assert '"request_id":"sentry-req-1"' in sent.replace(" ", "")
    assert "SECRET-PAYLOAD-123" not in sent and "tok-SECRET-456" not in sent
