"""Start the platform exactly as ``make run`` does (``lifetales run``) in a subprocess, and talk
to it over HTTP like a client would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from models import TERMINAL_STATUSES
from tests.tcp_proxy import TcpProxy

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

    def events(self, job_id: str, timeout: float = 120) -> Iterator[tuple[str, dict[str, Any]]]:
        """The job's server-sent events as ``(event, data)``, read as they come, until ``done``
        (the last one) or the stream ends."""
        with self.http.get(f"{self.base}/api/v1/jobs/{job_id}/events", stream=True,
                           timeout=timeout) as response:
            event = None
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event:
                    yield event, json.loads(line.removeprefix("data: "))
                    if event == "done":
                        return

    def wait_job(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.call("GET", f"/jobs/{job_id}", expect=200).json()
            if job["status"] in TERMINAL_STATUSES:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.2)


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None
        work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.work_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class Services:
    """The platform's processes started one by one (API, workers, beat), so a test can kill
    and replace any of them."""

    def __init__(self, env: Mapping[str, str], var_dir: Path) -> None:
        self.platform = Platform(env, var_dir)
        self.base_url = self.platform.base_url
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._bin = Path(sys.executable).parent

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = (self.platform.var_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.platform.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def migrate(self) -> None:
        subprocess.run(
            [str(self._bin / "lifetales"), "migrate"],
            cwd=ROOT,
            env=self.platform.env,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start_api(self, workers: int = 1, *, app: str = "api:create_app()", name: str = "api",
                  port: int | None = None) -> str:
        """Start gunicorn serving ``app`` (the API unless told otherwise: the benchmarks'
        floor app runs under the same settings); returns its base URL once it answers."""
        port = port or self.platform.port
        base_url = f"http://127.0.0.1:{port}"
        self._spawn(
            name,
            [
                str(self._bin / "gunicorn"),
                app,
                "--config",
                "python:gunicorn_conf",
                "--bind",
                f"127.0.0.1:{port}",
                "--worker-class",
                "gthread",
                "--threads",
                "16",
                "--workers",
                str(workers),
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base_url}/health", timeout=1).status_code == 200:
                    return base_url
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"API did not start:\n{self.log(name)}")

    def start_worker(self, name: str, concurrency: int = 4,
                     queues: str = "transcription,illustration,story,batch,maintenance",
                     extra_args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        process = self._spawn(
            name,
            [
                str(self._bin / "celery"),
                "-A",
                "workers.app",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--queues",
                queues,
                "--hostname",
                f"{name}@%h",
                "--without-mingle",
                "--without-gossip",
                "--loglevel",
                "INFO",
                *extra_args,
            ],
        )
        deadline = time.monotonic() + 30
        while "ready." not in self.log(name):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"worker {name} did not start:\n{self.log(name)}")
            time.sleep(0.1)
        return process

    def start_beat(self) -> None:
        self._spawn(
            "beat",
            [
                str(self._bin / "celery"),
                "-A",
                "workers.app",
                "beat",
                "--schedule",
                str(self.platform.var_dir / "beat-schedule"),
                "--loglevel",
                "INFO",
            ],
        )

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def log(self, name: str) -> str:
        path = self.platform.var_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_process(self, name: str, timeout: float = 15) -> None:
        """Stop one process gracefully (SIGTERM), killing it if it does not exit in time."""
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)


@dataclass
class Stack:
    """API + beat on a throwaway PostgreSQL database and a private Redis, a fake Gemini, and a
    registered client; workers are started by the test (``services.start_worker``). The broker
    is the private Redis, or RabbitMQ reached through a proxy the test can cut."""

    services: Services
    redis: RedisServer
    gemini: Any
    database_url: str
    client: Client
    broker_proxy: TcpProxy | None = None

    @property
    def broker(self) -> str:
        return "amqp" if self.broker_proxy is not None else "redis"

    def stop_broker(self) -> None:
        """The broker goes away: Redis stops (and loses every message); RabbitMQ becomes
        unreachable (connections dropped and refused; its durable queues keep their messages)."""
        if self.broker_proxy is not None:
            self.broker_proxy.cut()
        else:
            self.redis.stop()

    def start_broker(self) -> None:
        if self.broker_proxy is not None:
            self.broker_proxy.restore()
        else:
            self.redis.start()

    def query(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import create_engine, text

        from models.db import normalize_database_url

        engine = create_engine(normalize_database_url(self.database_url))
        try:
            with engine.connect() as conn:
                return list(conn.execute(text(sql), params))
        finally:
            engine.dispose()


@contextmanager
def running_stack(tmp_path: Path, gemini: Any, amqp_url: str | None = None,
                  extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """The stack on its private Redis as broker, or on the RabbitMQ vhost ``amqp_url``."""
    from tests.conftest import create_database, drop_database

    database = create_database("lt_stack")
    redis_server = RedisServer(tmp_path / "redis").start()
    proxy = None
    broker_url = redis_server.url
    if amqp_url is not None:
        from tests.rabbitmq import delete_platform_queues

        delete_platform_queues(amqp_url)
        proxy, broker_url = proxied(amqp_url)
    env = {
        "DATABASE_URL": database,
        "CELERY_BROKER_URL": broker_url,
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": "stack-" + uuid.uuid4().hex,
        "GEMINI_API_KEY": "fake-key",
        "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
        "MEDIA_DIR": str(tmp_path / "media"),
        "REAPER_INTERVAL_SECONDS": "1",
        "JOB_HEARTBEAT_TIMEOUT_SECONDS": "3",
        "JOB_QUEUED_RESEND_AFTER_SECONDS": "2",
        **(extra_env or {}),
    }
    services = Services(env, tmp_path / "var")
    try:
        services.migrate()
        services.start_api()
        services.start_beat()
        client = Client(services.base_url)
        client.register(f"stack-{uuid.uuid4().hex[:8]}@example.com")
        yield Stack(services, redis_server, gemini, database, client, proxy)
    finally:
        services.stop()
        redis_server.stop()
        if proxy is not None:
            proxy.cut()
        drop_database(database)


def proxied(url: str) -> tuple[TcpProxy, str]:
    """A started proxy to the URL's host and port, and the URL pointed at the proxy."""
    parts = urlsplit(url)
    proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5672)).start()
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return proxy, urlunsplit(parts._replace(netloc=netloc))
