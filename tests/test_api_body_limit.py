"""Over-cap bodies against the real web server (gunicorn, as the Procfile runs it), sent by a
client that writes its whole body before it reads the answer: Python's ``http.client``."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.body_limit import DISCARD_UP_TO, MAX_CONTENT_LENGTH
from tests.platform import Client, Services

pytestmark = pytest.mark.integration

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The API alone, on the embedded default (SQLite)."""
    var_dir: Path = tmp_path_factory.mktemp("body-limit")
    services = Services({"SECRET_KEY": "body-limit-test-key", "RATE_LIMITS_ENABLED": "false"},
                        var_dir)
    services.migrate()
    services.start_api()
    yield services
    services.stop()


@pytest.fixture(scope="module")
def port(server: Services) -> int:
    return server.platform.port


@pytest.fixture(scope="module")
def auth(server: Services) -> dict[str, str]:
    client = Client(server.base_url)
    client.register("body-limit@example.com")
    return {"Authorization": str(client.http.headers["Authorization"])}


def send(conn: http.client.HTTPConnection, body: bytes | Iterator[bytes],
         **headers: str) -> tuple[int, dict[str, object]]:
    chunked = not isinstance(body, bytes)
    conn.request("POST", "/api/v1/spaces", body=body, encode_chunked=chunked,
                 headers={"Content-Type": "application/json", **headers})
    response = conn.getresponse()  # only once the whole body is written
    return response.status, json.loads(response.read())


def test_an_over_cap_body_gets_a_413_the_client_can_read_and_the_connection_lives_on(
        port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, body = send(conn, b"x" * (MAX_CONTENT_LENGTH + 2 * MB))
    assert status == 413
    assert body["code"] == 413 and "28 MB limit" in str(body["message"])
    # The body was read to its end: the same connection serves the next request.
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_an_over_cap_chunked_body_gets_a_413_the_client_can_read(
        port: int, auth: dict[str, str]) -> None:
    """No length declared: the cap is crossed while the view reads the body."""
    chunks = (b"x" * MB for _ in range(MAX_CONTENT_LENGTH // MB + 8))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    status, body = send(conn, chunks, **auth)
    assert status == 413 and "28 MB limit" in str(body["message"])
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200
    conn.close()


def test_past_the_discard_bound_the_connection_closes(port: int) -> None:
    """Not read at all: the server answers and hangs up (a reverse proxy's body limit is the
    production guard), so this client, still writing, sees its pipe broken."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        send(conn, b"x" * (DISCARD_UP_TO + 64 * MB))
    conn.close()
