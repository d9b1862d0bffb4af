"""Start the platform exactly as ``make run`` does (``lifetales run``) in a subprocess, and talk
to it over HTTP like a client would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Platform:
    """API + worker + beat in child processes; ``stop()`` terminates them all."""

    def __init__(self, env: Mapping[str, str], var_dir: Path, *, concurrency: int = 8) -> None:
        self.port = free_port()
        self.var_dir = var_dir
        self.log_path = var_dir / "platform.log"
        self.base_url = f"http://127.0.0.1:{self.port}"
        var_dir.mkdir(parents=True, exist_ok=True)
        clean = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "DATABASE_URL",
                "CELERY_BROKER_URL",
                "REDIS_URL",
                "GEMINI_API_KEY",
                "GOOGLE_GEMINI_BASE_URL",
                "CLOUDINARY_URL",
                "SECRET_KEY",
            }
        }
        self.env = {
            **clean,
            "LIFETALES_VAR_DIR": str(var_dir),
            "PUBLIC_BASE_URL": self.base_url,
            "REAPER_INTERVAL_SECONDS": "2",
            **env,
        }
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Platform:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "lifetales"),
                "run",
                "--port",
                str(self.port),
                "--concurrency",
                str(self.concurrency),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"platform exited early:\n{self.log()}")
            try:
                ready = requests.get(f"{self.base_url}/ready", timeout=2)
                if ready.status_code == 200 and self._worker_ready():
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"platform not ready in {timeout}s:\n{self.log()}")

    def _worker_ready(self) -> bool:
        return "ready." in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """A tiny API client, as the frontend would use it."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url
        self.http = requests.Session()

    def call(
        self, method: str, path: str, expect: int | tuple[int, ...] = (200, 201, 202), **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        response = self.http.request(method, f"{self.base}/api/v1{path}", **kwargs)
        expected = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in expected, (
            method,
            path,
            response.status_code,
            response.text[:500],
        )
        return response

    def register(self, email: str, password: str = "a long enough password") -> None:
        body = self.call(
            "POST", "/auth/register", json={"email": email, "password": password}, expect=201
        ).json()
        self.http.headers["Authorization"] = f"Bearer {body['accessToken']}"

    def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.call("GET", f"/jobs/{job_id}", expect=200).json()
            if job["status"] in {"succeeded", "failed", "canceled"}:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.2)
