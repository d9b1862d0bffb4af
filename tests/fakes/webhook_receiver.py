"""A local webhook receiver: a threaded HTTP server on 127.0.0.1 that answers with a scripted
sequence of status codes (then 200) and records every request it gets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic()


class WebhookReceiver:
    """``with WebhookReceiver() as receiver:``; ``receiver.script(500, 500, 200)``."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: list[int] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._arrived:
                    receiver.requests.append(Received(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                        body, time.monotonic()))
                    status = receiver._script.pop(0) if receiver._script else 200
                    receiver._arrived.notify_all()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/lifetales"

    def script(self, *statuses: int) -> None:
        """Answer the next requests with these statuses, in order; 200 afterwards."""
        with self._lock:
            self._script = list(statuses)

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """Block until ``count`` requests have arrived; returns them all."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} webhook requests, got {len(self.requests)}")
                self._arrived.wait(remaining)
            return list(self.requests)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
