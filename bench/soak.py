"""Soak: the platform's processes under a steady mixed load for a long while; does anything grow?

    .venv/bin/python bench/soak.py                      # 20 minutes, 3 of them warm-up
    .venv/bin/python bench/soak.py --minutes 4 --warmup 1 --broker amqp

The stack of the other benchmarks (throwaway PostgreSQL database, private Redis, fake Gemini in
this process, API as the Procfile's ``web`` with 2 gunicorn processes, beat) and one worker
process serving every queue but ``batch``; with ``--broker amqp`` Celery's messages go through a
private vhost of the RabbitMQ at 127.0.0.1:5672. The load, each stream paced open-loop:
transcriptions (a distinct WAV each, so no cache hit), stories with illustrations (a new space
of three moments each, so no cache hit either), polls of recent jobs (``GET /jobs/{id}``), and
clients following recent story jobs over SSE until their ``done``.

Every 30 s it samples each process's RSS and open file descriptors, the database's connections
and Redis's memory; every minute it prints the p50/p99 of submit (``POST /transcriptions`` and
``POST /spaces/{id}/story``) and poll. At the end: per process RSS at the end of the warm-up and
at the end, growth and slope; the p99 trend. Targets: no process grows more than 10% after the
warm-up, and no p99 drifts upward (the last third's median p99 within 1.25x the first third's,
after the warm-up). Exit status 0 when they hold.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import requests
from sqlalchemy import text

from bench.api_load import Client
from bench.perfstack import (
    PerfStack,
    audio_b64,
    child_pids,
    mark,
    percentile,
    perf_stack,
    rss_kib,
)
from models.db import make_engine

TARGET_RSS_GROWTH = 0.10
TARGET_P99_DRIFT = 1.25
SAMPLE_EVERY_S = 30.0
RECENT_JOBS = 200
WORKER_QUEUES = "transcription,illustration,story,maintenance,webhooks"


@dataclass
class Minute:
    submit_ms: list[float] = field(default_factory=list)
    poll_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    load: float = 0.0  # the machine's 1-minute load average as the minute ended: a p99 that
    # rises with it is the box's other work, not the platform drifting


class Recorder:
    """Latencies and outcomes per minute since the start, and the jobs to poll and follow."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.minutes: dict[int, Minute] = {}
        self.recent: deque[str] = deque(maxlen=RECENT_JOBS)
        self.stories: deque[str] = deque(maxlen=RECENT_JOBS)
        self.lock = threading.Lock()

    def minute(self) -> Minute:
        index = int((time.monotonic() - self.started) // 60)
        return self.minutes.setdefault(index, Minute())

    def record(self, what: str, ms: float, status: int, expected: int) -> None:
        with self.lock:
            minute = self.minute()
            if what in ("submit", "poll"):
                getattr(minute, f"{what}_ms").append(ms)
            minute.outcomes[f"{what} {status}" if status != expected else f"{what} ok"] += 1

    def count(self, what: str) -> None:
        with self.lock:
            self.minute().outcomes[what] += 1


def paced(rate: float, threads: int, until: float, action: Callable[[Client, int], None],
          make_client: Callable[[], Client]) -> list[threading.Thread]:
    """``threads`` threads doing ``action`` at ``rate`` per second until ``until`` (monotonic),
    action i due at start + i/rate whatever the answers' speed (open loop)."""
    start = time.monotonic() + 0.1
    counter = iter(range(10**9))
    lock = threading.Lock()

    def run() -> None:
        client = make_client()
        while True:
            with lock:
                i = next(counter)
            due = start + i / rate
            if due >= until:
                return
            if (delay := due - time.monotonic()) > 0:
                time.sleep(delay)
            try:
                action(client, i)
            except (OSError, http.client.HTTPException):  # the request is lost; go on afresh
                client = make_client()

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    return workers


class Load:
    """The four streams of requests, as a frontend's users would send them."""

    def __init__(self, stack: PerfStack, recorder: Recorder) -> None:
        self.stack = stack
        self.rec = recorder
        self.followed: set[str] = set()

    def client(self) -> Client:
        return Client(self.stack.base_url, self.stack.token)

    def timed(self, client: Client, what: str, method: str, path: str, body: object = None,
              expected: int = 202) -> dict[str, object] | None:
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        status, _, answer = client.send(method, path, data)
        self.rec.record(what, (time.perf_counter() - started) * 1000, status, expected)
        return json.loads(answer) if status == expected else None

    def transcription(self, client: Client, i: int) -> None:
        job = self.timed(client, "submit", "POST", "/api/v1/transcriptions",
                         {"audioData": audio_b64(i), "mimeType": "audio/wav"})
        if job is not None:
            self.rec.recent.append(str(job["id"]))

    def story(self, client: Client, i: int) -> None:
        space = self.timed(client, "setup", "POST", "/api/v1/spaces",
                           {"title": f"Soak space {i}"}, expected=201)
        if space is None:
            return
        for note in range(3):
            self.timed(client, "setup", "POST", f"/api/v1/spaces/{space['id']}/notes",
                       {"title": f"Moment {note}", "textContent": f"Day {i}, moment {note}.",
                        "timestamp": 1_700_000_000_000 + note * 3_600_000}, expected=201)
        job = self.timed(client, "submit", "POST", f"/api/v1/spaces/{space['id']}/story", {})
        if job is not None:
            self.rec.recent.append(str(job["id"]))
            self.rec.stories.append(str(job["id"]))

    def poll(self, client: Client, i: int) -> None:
        if self.rec.recent:
            job_id = self.rec.recent[i % len(self.rec.recent)]
            self.timed(client, "poll", "GET", f"/api/v1/jobs/{job_id}", expected=200)

    def next_story(self) -> str | None:
        """The newest story job no SSE client has followed yet."""
        with self.rec.lock:
            for job_id in reversed(self.rec.stories):
                if job_id not in self.followed:
                    self.followed.add(job_id)
                    return job_id
        return None

    def follow(self, until: float) -> None:
        """One SSE client: follow a new story job to its ``done``, then the next one."""
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {self.stack.token}"
        while time.monotonic() < until:
            job_id = self.next_story()
            if job_id is None:
                time.sleep(0.5)
                continue
            try:
                with http.get(f"{self.stack.base_url}/api/v1/jobs/{job_id}/events",
                              stream=True, timeout=(5, 90)) as stream:
                    done = any(line == "event: done"
                               for line in stream.iter_lines(decode_unicode=True))
                self.rec.count("sse done" if done else "sse ended without done")
            except requests.RequestException as exc:
                self.rec.count(f"sse {type(exc).__name__}")
                time.sleep(1)


# --- what the processes hold ----------------------------------------------------------------


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Sample:
    at_min: float
    rss_kib: dict[str, int]
    fds: dict[str, int]
    db_connections: int
    redis_used_kib: int
    metric_series: dict[str, int]  # a label that takes a new value per job would grow here


class Watcher:
    """Samples the platform's processes, the database's connections and Redis's memory."""

    def __init__(self, stack: PerfStack, started: float) -> None:
        services = stack.services.processes
        self.pids = {"api master": services["api"].pid, "worker": services["worker"].pid,
                     "beat": services["beat"].pid}
        for n, pid in enumerate(child_pids(services["api"].pid), 1):
            self.pids[f"api {n}"] = pid
        self.redis = redis.Redis.from_url(stack.redis_url)
        self.engine = make_engine(stack.database_url)
        self.database = stack.database_url.rsplit("/", 1)[1]
        self.started = started
        self.samples: list[Sample] = []
        port = re.search(r'"metrics_port": (\d+)', stack.services.log("worker"))
        self.metrics = {"api": f"{stack.base_url}/metrics"}
        if port:
            self.metrics["worker"] = f"http://127.0.0.1:{port.group(1)}/metrics"

    def series(self) -> dict[str, int]:
        counts = {}
        for name, url in self.metrics.items():
            try:
                body = requests.get(url, timeout=10).text
            except requests.RequestException:
                continue
            counts[name] = sum(1 for line in body.splitlines() if line and line[0] != "#")
        return counts

    def sample(self) -> Sample:
        with self.engine.connect() as conn:
            connections = conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"), {"db": self.database})
        sample = Sample(
            at_min=(time.monotonic() - self.started) / 60,
            rss_kib={name: rss_kib(pid) or 0 for name, pid in self.pids.items()},
            fds={name: open_fds(pid) or 0 for name, pid in self.pids.items()},
            db_connections=int(connections or 0) - 1,  # not this one
            redis_used_kib=int(self.redis.info("memory")["used_memory"]) // 1024,
            metric_series=self.series(),
        )
        self.samples.append(sample)
        return sample

    def close(self) -> None:
        self.engine.dispose()


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, value) points."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


# --- the run --------------------------------------------------------------------------------


@contextmanager
def broker_env(broker: str) -> Iterator[dict[str, str]]:
    """Extra environment for the stack: Celery's messages on RabbitMQ with ``amqp``."""
    if broker != "amqp":
        yield {}
        return
    from tests.rabbitmq import private_vhost

    with private_vhost("lt_soak") as url:
        yield {"CELERY_BROKER_URL": url}


def report_minutes(rec: Recorder, warmup: int, minutes: float
                   ) -> tuple[list[float], list[float]]:
    print("\nminute  load  submits  submit p50/p99 ms   polls  poll p50/p99 ms   other outcomes")
    submit_p99, poll_p99 = [], []
    for index in sorted(i for i in rec.minutes if i + 1 <= minutes):  # whole minutes only
        m = rec.minutes[index]
        others = {k: v for k, v in m.outcomes.items() if k not in ("submit ok", "poll ok")}
        print(f"{index + 1:>6}  {m.load:4.1f}  {len(m.submit_ms):>7}  "
              f"{percentile(m.submit_ms, 50):7.1f} / "
              f"{percentile(m.submit_ms, 99):7.1f}  {len(m.poll_ms):>6}  "
              f"{percentile(m.poll_ms, 50):6.1f} / {percentile(m.poll_ms, 99):6.1f}   "
              f"{dict(others) or ''}{'  (warm-up)' if index < warmup else ''}")
        if index >= warmup and m.submit_ms and m.poll_ms:
            submit_p99.append(percentile(m.submit_ms, 99))
            poll_p99.append(percentile(m.poll_ms, 99))
    return submit_p99, poll_p99


def drift_ok(name: str, values: list[float]) -> bool:
    """The last third's median p99 against the first third's (after the warm-up)."""
    if len(values) < 3:
        print(f"{name} p99 drift: too few minutes after the warm-up to tell")
        return True
    third = max(1, len(values) // 3)
    first, last = median(values[:third]), median(values[-third:])
    ratio = last / first if first else float("inf")
    slope = slope_per_min(list(enumerate(values, 1)))
    ok = ratio <= TARGET_P99_DRIFT
    print(f"{name} p99: first third {first:.1f} ms, last third {last:.1f} ms, ratio {ratio:.2f} "
          f"(target <= {TARGET_P99_DRIFT}), slope {slope:+.2f} ms/min  {mark(ok)}")
    return ok


def report_growth(samples: list[Sample], warmup: int) -> bool:
    after = [s for s in samples if s.at_min >= warmup] or samples[-1:]
    base, end = after[0], samples[-1]
    print(f"\nprocesses from minute {base.at_min:.1f} (end of warm-up) to {end.at_min:.1f}:")
    print("process        RSS start   RSS end   growth   slope       fds start/end")
    ok = True
    for name in base.rss_kib:
        start, last = base.rss_kib[name], end.rss_kib[name]
        growth = (last - start) / start if start else 0.0
        slope = slope_per_min([(s.at_min, s.rss_kib[name]) for s in after])
        good = growth <= TARGET_RSS_GROWTH
        ok &= good
        print(f"{name:<13} {start / 1024:8.1f} MiB {last / 1024:7.1f} MiB {growth:+7.1%}  "
              f"{slope:+7.1f} KiB/min  {base.fds[name]:>4} / {end.fds[name]:<4}  {mark(good)}")
    print(f"database connections: {base.db_connections} -> {end.db_connections} "
          f"(max {max(s.db_connections for s in samples)})")
    print(f"Redis used memory: {base.redis_used_kib / 1024:.1f} -> "
          f"{end.redis_used_kib / 1024:.1f} MiB")
    print(f"Prometheus series: {base.metric_series} -> {end.metric_series}")
    return ok


def run(args: argparse.Namespace) -> int:
    load_avg = os.getloadavg()
    print(f"soak: {args.minutes} min ({args.warmup} warm-up), broker {args.broker}; "
          f"transcriptions {args.transcriptions}/s, stories {args.stories}/min, polls "
          f"{args.polls}/s, {args.sse} SSE clients; load average {load_avg[0]:.2f}", flush=True)
    with ExitStack() as stack:
        extra = stack.enter_context(broker_env(args.broker))
        platform = stack.enter_context(perf_stack(0.3, "soak", extra))
        gemini = platform.gemini
        gemini.set_latency(0.3, "transcription")
        gemini.set_latency(1.0, "story")
        gemini.set_latency(0.5, "illustration")
        platform.services.start_worker("worker", concurrency=16, queues=WORKER_QUEUES)
        rec = Recorder()
        watcher = Watcher(platform, rec.started)
        stack.callback(watcher.close)
        load = Load(platform, rec)
        until = rec.started + args.minutes * 60
        threads = paced(args.transcriptions, 4, until, load.transcription, load.client)
        threads += paced(args.stories / 60, 2, until, load.story, load.client)
        threads += paced(args.polls, 4, until, load.poll, load.client)
        for _ in range(args.sse):
            threads.append(threading.Thread(target=load.follow, args=(until,), daemon=True))
            threads[-1].start()
        next_sample = time.monotonic()
        while time.monotonic() < until:
            if time.monotonic() >= next_sample:
                s = watcher.sample()
                print(f"  {s.at_min:5.1f} min  RSS MiB " + ", ".join(
                    f"{k} {v / 1024:.0f}" for k, v in s.rss_kib.items())
                    + f"; db conns {s.db_connections}; redis {s.redis_used_kib / 1024:.1f} MiB; "
                    f"load {os.getloadavg()[0]:.1f}", flush=True)
                next_sample += SAMPLE_EVERY_S
            with rec.lock:
                rec.minute().load = os.getloadavg()[0]
            time.sleep(0.5)
        for thread in threads:
            thread.join(timeout=120)
        watcher.sample()
        ok = report_growth(watcher.samples, args.warmup)
        submit_p99, poll_p99 = report_minutes(rec, args.warmup, args.minutes)
        ok &= drift_ok("submit", submit_p99)
        ok &= drift_ok("poll", poll_p99)
        with watcher.engine.connect() as conn:
            statuses: dict[str, int] = dict(conn.execute(text(
                "SELECT status, count(*) FROM jobs GROUP BY status")).all())
        print(f"jobs at the end: {statuses}; load average {os.getloadavg()[0]:.2f} "
              f"(at the start {load_avg[0]:.2f})")
    print("all targets met" if ok else "MISSED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--minutes", type=float, default=20.0, help="length of the run, warm-up included")
    add("--warmup", type=int, default=3, help="minutes before growth and drift are measured")
    add("--broker", choices=("redis", "amqp"), default="redis")
    add("--transcriptions", type=float, default=2.0, help="submits per second")
    add("--stories", type=float, default=6.0, help="stories per minute (3 illustrations each)")
    add("--polls", type=float, default=20.0, help="GET /jobs/{id} per second")
    add("--sse", type=int, default=4, help="clients following story jobs over SSE")
    args = parser.parse_args()
    if args.warmup >= args.minutes:
        parser.error("--warmup must be shorter than --minutes")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
