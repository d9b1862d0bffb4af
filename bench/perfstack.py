"""Shared set-up for the performance benchmarks (throughput, overhead, cache).

``perf_stack`` starts a throwaway PostgreSQL database, a private ``redis-server``, the fake
Gemini in-process, ``lifetales migrate``, the API (gunicorn gthread) and beat, with the per-user
API rate limits off (the benchmarks flood one user's submits on purpose). ``bare_app`` is a
tiny Celery app on the same broker with the platform's delivery settings (threads pool,
acks late, prefetch 1, JSON, no results) whose tasks only sleep or record their finish time.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent

# --- the bare Celery app (imported by the worker as bench.perfstack:bare_app) -------------------

bare_app = Celery("bare")
bare_app.conf.update(
    broker_url=os.environ.get("BARE_BROKER_URL", "redis://127.0.0.1:6379/0"),
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue="bare",
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
_redis: redis.Redis | None = None


def _r() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["BARE_BROKER_URL"], max_connections=1000)
    return _redis


@bare_app.task(name="bare.sleep")
def bare_sleep(seconds: float) -> None:
    time.sleep(seconds)
    _r().rpush("bare:finished", repr(time.time()))


@bare_app.task(name="bare.finish")
def bare_finish(token: str) -> None:
    _r().rpush(f"bare:done:{token}", repr(time.time()))


# --- helpers ---------------------------------------------------------------------------------


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc/<pid>/stat fields after the command name) of every live process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            yield int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds of every live process in a process group (gunicorn master + workers)."""
    return sum((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
               for _, fields in _proc_stats() if int(fields[2]) == pgid)


def child_pids(ppid: int) -> list[int]:
    """The live processes whose parent is ``ppid`` (a gunicorn master's workers)."""
    return sorted(pid for pid, fields in _proc_stats() if int(fields[1]) == ppid)


def postgres_cpu_seconds() -> float:
    """CPU seconds of the local PostgreSQL server's processes (backends included)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1: raw.rindex(")")]
        if name.startswith("postgres"):
            fields = raw.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def busy_cores() -> tuple[float, float]:
    """(busy, total) jiffies from /proc/stat, for the machine's CPU use over a window."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def audio_b64(n: int) -> str:
    """A distinct short WAV per n (the transcription cache keys on audio bytes)."""
    from tests.audio import wav_tone

    seconds = 0.05 + (n // 7000) * 0.001
    return base64.b64encode(wav_tone(seconds, 100.0 + (n % 7000), rate=16000)).decode()


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


@dataclass
class PerfStack:
    services: Any
    redis_url: str
    gemini: Any
    database_url: str
    base_url: str
    token: str
    var_dir: Path

    def start_bare_worker(self, name: str, concurrency: int) -> subprocess.Popen[bytes]:
        svc = self.services
        process = svc._spawn(name, [
            str(Path(sys.executable).parent / "celery"), "-A", "bench.perfstack:bare_app",
            "worker", "--pool", "threads", "--concurrency", str(concurrency),
            "--queues", "bare", "--hostname", f"{name}@%h", "--without-mingle",
            "--without-gossip", "--loglevel", "WARNING",
        ])
        # No banner at WARNING: wait until the worker consumes from the queue.
        r = redis.Redis.from_url(self.redis_url)
        probe = uuid.uuid4().hex
        deadline = time.monotonic() + 60
        # A message published before the worker has bound its queue is dropped: send again.
        while bare_finish.apply_async((probe,)) and r.blpop(f"bare:done:{probe}", 1) is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"bare worker did not start:\n{svc.log(name)}")
        r.delete(f"bare:done:{probe}")
        return process

    def stop_process(self, name: str) -> None:
        self.services.stop_process(name, timeout=20)


@contextmanager
def perf_stack(latency: float, label: str, extra_env: dict[str, str] | None = None
               ) -> Iterator[PerfStack]:
    import tempfile

    import requests

    from tests.conftest import create_database, drop_database
    from tests.fakes.gemini_server import FakeGemini
    from tests.platform import RedisServer, Services

    tmp = Path(tempfile.mkdtemp(prefix=f"lt-{label}-"))
    print(f"logs under {tmp}", flush=True)
    with ExitStack() as stack:
        gemini = stack.enter_context(FakeGemini(latency=latency, max_recorded=100_000))
        database = create_database(f"lt_{label}")
        stack.callback(drop_database, database)
        redis_server = RedisServer(tmp / "redis").start()
        stack.callback(redis_server.stop)
        # CELERY_BROKER_URL in the environment (tests.conftest sets one) wins over broker_url.
        bare_app.conf.broker_write_url = bare_app.conf.broker_read_url = redis_server.url
        env = {
            "DATABASE_URL": database,
            "CELERY_BROKER_URL": redis_server.url,
            "REDIS_URL": redis_server.url,
            "BARE_BROKER_URL": redis_server.url,
            "SECRET_KEY": f"{label}-" + uuid.uuid4().hex,
            "GEMINI_API_KEY": "fake-key",
            "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
            "MEDIA_DIR": str(tmp / "media"),
            "RATE_LIMITS_ENABLED": "false",
            **(extra_env or {}),
        }
        services = Services(env, tmp / "var")
        stack.callback(services.stop)
        services.migrate()
        services.start_api(workers=2)  # as the Procfile's web (WEB_CONCURRENCY=2)
        services.start_beat()
        body = requests.post(
            f"{services.base_url}/api/v1/auth/register",
            json={"email": f"{label}-{uuid.uuid4().hex[:8]}@example.com",
                  "password": "a long enough password"},
            timeout=30,
        )
        body.raise_for_status()
        yield PerfStack(services, redis_server.url, gemini, database, services.base_url,
                        body.json()["accessToken"], tmp)
