"""Where the CPU of a poll and of a job goes, measured in one process (no gunicorn, no Celery
consumer): the numbers behind the before/after tables of bench/README.md.

    .venv/bin/python bench/cpu_profile.py --polls 3000 --jobs 300

Real PostgreSQL (a throwaway database), a private redis-server, the fake Gemini in-process at
zero latency. Three measurements, each timed without the profiler (thread CPU time), then
profiled (cProfile) for the top functions and the share of each package:

1. ``poll``: ``GET /api/v1/jobs/{id}`` of a running job through the API's WSGI app (the same
   app gunicorn serves, every request hook included), with and without ``If-None-Match``;
2. ``submit``: ``POST /api/v1/transcriptions`` (base64 WAV) through the same app;
3. ``job``: the worker's part of a transcription job, ``run_job`` with the real handler (claim,
   cache lease, model call through google-genai, result), as a Celery thread runs it.

Thread CPU time on a shared box still counts cache misses and frequency changes: compare
figures of one run, and print ``uptime`` with them. The profiled round also counts Python
function calls per operation, which other load does not change.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import flame


def package_of(filename: str) -> str:
    if filename.startswith(("~", "<")):
        return "builtins (C)"
    return flame.package_of(filename)


def report(profile: cProfile.Profile, label: str, count: int, top: int) -> None:
    """Package shares (own time) and the top functions by own time, per operation."""
    stats = pstats.Stats(profile)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-9
    # Python function calls do not depend on what else runs on the box: a before/after figure
    # that holds on a shared machine, where CPU time swings by a third from run to run.
    calls = sum(entry[1] for entry in raw.values())
    print(f"  {label}: {calls / count:.0f} Python function calls per operation")
    by_package: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), entry in raw.items():
        by_package[package_of(filename)] += entry[2]
    print(f"  {label}: own time by package (profiled, {total / count * 1e6:.0f} us per op)")
    for name, seconds in sorted(by_package.items(), key=lambda item: -item[1])[:14]:
        print(f"    {name:<20} {seconds / total * 100:5.1f}%  {seconds / count * 1e6:7.1f} us")
    print(f"  {label}: top {top} functions by own time")
    rows = sorted(raw.items(), key=lambda item: -item[1][2])[:top]
    for (filename, line, name), entry in rows:
        where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}" if line else filename
        print(f"    {entry[2] / total * 100:5.1f}%  {entry[1] / count:6.1f} calls  "
              f"{name} ({where})")


ROUNDS = 3


def timed(label: str, count: int, run: Callable[[int], object], *, profile_top: int) -> float:
    """CPU per operation without the profiler (the least of ``ROUNDS`` rounds of ``count``:
    other load on the box only ever adds), then a profiled round for the breakdown."""
    rounds = []
    for r in range(ROUNDS):
        t0 = time.thread_time()
        for i in range(r * count, (r + 1) * count):
            run(i)
        rounds.append((time.thread_time() - t0) / count)
    per_op = min(rounds)
    print(f"{label}: {per_op * 1e3:.3f} ms CPU per operation (least of {ROUNDS} rounds of "
          f"{count}; rounds {', '.join(f'{x * 1e3:.3f}' for x in rounds)})", flush=True)
    if profile_top:
        # On the thread's CPU clock: time spent waiting on PostgreSQL or Redis is not counted.
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        for i in range(ROUNDS * count, (ROUNDS + 1) * count):
            run(i)
        profile.disable()
        report(profile, label, count, profile_top)
    return per_op


class Wsgi:
    """Calls the WSGI app as gunicorn does, with a prepared environ (no client in the way)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.base = {
            "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "3000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
            "HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_HOST": "127.0.0.1:3000",
        }

    def __call__(self, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        environ = {**self.base, "REQUEST_METHOD": method, "PATH_INFO": path,
                   "QUERY_STRING": "", "wsgi.input": io.BytesIO(body),
                   "CONTENT_LENGTH": str(len(body)), **(headers or {})}
        if body:
            environ["CONTENT_TYPE"] = "application/json"
        status: list[str] = []
        response_headers: list[tuple[str, str]] = []

        def start_response(line: str, hdrs: list[tuple[str, str]], *_: Any) -> None:
            status.append(line)
            response_headers.extend(hdrs)

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return int(status[0].split()[0]), dict(response_headers), data


@contextmanager
def stack(tmp: Path) -> Iterator[dict[str, str]]:
    from tests.conftest import alembic_upgrade, create_database, drop_database
    from tests.fakes.gemini_server import FakeGemini
    from tests.platform import RedisServer

    with ExitStack() as exits:
        gemini = exits.enter_context(FakeGemini(latency=0.0, max_recorded=10))
        database = create_database("lt_cpuprof")
        exits.callback(drop_database, database)
        alembic_upgrade(database)
        redis_server = RedisServer(tmp / "redis").start()
        exits.callback(redis_server.stop)
        yield {
            "DATABASE_URL": database, "REDIS_URL": redis_server.url,
            "CELERY_BROKER_URL": redis_server.url, "SECRET_KEY": "cpu-" + uuid.uuid4().hex,
            "GEMINI_API_KEY": "fake-key", "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
            "MEDIA_DIR": str(tmp / "media"), "RATE_LIMITS_ENABLED": "false",
            "LOG_LEVEL": "INFO", "WORKER_METRICS_PORT": "0",
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--top", type=int, default=20, help="functions listed (0: no profile)")
    parser.add_argument("--only", choices=("poll", "submit", "job"), action="append")
    args = parser.parse_args()
    only = set(args.only or ("poll", "submit", "job"))
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 min)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="lt-cpuprof-"))
    with stack(tmp) as env:
        os.environ.update(env)
        import logging

        import telemetry
        from api import create_app
        from bench.perfstack import audio_b64
        from config import Settings
        from workers.app import celery_app
        from workers.context import build_context
        from workers.runner import run_job
        from workers.tasks.transcription import transcribe_media

        # Log lines are part of the cost (one per request, a few per job): to a file, as JSON.
        handler = telemetry.configure_logging("api", "INFO", os.environ)
        log_file = (tmp / "log.jsonl").open("w")
        handler.setStream(log_file)  # type: ignore[attr-defined]
        logging.getLogger().setLevel(logging.INFO)
        celery_app.conf.broker_url = env["CELERY_BROKER_URL"]
        settings = Settings.from_env()
        app = create_app(settings)
        register = Wsgi(app, "none")("POST", "/api/v1/auth/register", json.dumps(
            {"email": f"cpu-{uuid.uuid4().hex[:8]}@example.com",
             "password": "a long enough password"}).encode())
        token = json.loads(register[2])["accessToken"]
        call = Wsgi(app, token)
        bodies = [json.dumps({"audioData": audio_b64(n), "mimeType": "audio/wav"}).encode()
                  for n in range(2 * (ROUNDS + 1) * args.jobs + 10)]

        def submit(i: int) -> str:
            status, _, data = call("POST", "/api/v1/transcriptions", bodies[i])
            assert status == 202, data[:300]
            return str(json.loads(data)["id"])

        if "submit" in only:
            timed("submit POST /transcriptions", args.jobs, submit, profile_top=args.top)
        if "poll" in only:
            job_id = submit(len(bodies) - 1)
            path = f"/api/v1/jobs/{job_id}"
            _, headers, _ = call("GET", path)
            etag = headers["ETag"]

            def poll(_i: int) -> None:
                code, _, _ = call("GET", path)
                assert code == 200

            def poll_304(_i: int) -> None:
                code, _, _ = call("GET", path, headers={"HTTP_IF_NONE_MATCH": etag})
                assert code == 304

            timed("poll GET /jobs/{id} (200)", args.polls, poll, profile_top=args.top)
            timed("poll GET /jobs/{id} (304)", args.polls, poll_304, profile_top=args.top)
        if "job" in only:
            context = build_context(settings, pool_size=4)
            ids = [submit(len(bodies) - 2 - i) for i in range((ROUNDS + 1) * args.jobs)]

            def job(i: int) -> None:
                run_job(ids[i], transcribe_media, context=context)

            timed("worker: one transcription job (run_job)", args.jobs, job,
                  profile_top=args.top)
            context.engine.dispose()
        log_file.close()
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} (1 and 5 min)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
