"""Throughput: transcription jobs against the fake Gemini (1 s per call) on one worker process,
side by side with bare Celery tasks that only sleep 1 s, same broker, pool and concurrency.

    .venv/bin/python bench/throughput.py                    # 30 s each, concurrency 200

Client threads submit over HTTP (``POST /api/v1/transcriptions``, a distinct WAV per job so the
cache never answers) and keep a backlog of about 2x the concurrency queued, so the worker never
waits for work. Sustained rate = jobs that reached ``succeeded`` (``finished_at``) inside the
measurement window (after a warm-up) / window length. Then the same for ``bare.sleep`` tasks
enqueued with ``apply_async``. Prints the worker's RSS and CPU, and the API's CPU.
Exit status 0 when both targets hold (>= 150 jobs/s, >= 0.8 of bare Celery).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
import requests
from sqlalchemy import text

from bench.flame import record, summarize
from bench.perfstack import (
    bare_sleep,
    busy_cores,
    cpu_seconds,
    group_cpu_seconds,
    mark,
    perf_stack,
    postgres_cpu_seconds,
    rss_kib,
)
from models.db import make_engine

TARGET_RATE = 150.0
TARGET_RATIO = 0.8


class Backlog:
    """Submitters block while submitted - finished >= cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.submitted = 0
        self.finished = 0
        self.errors = 0
        self.cond = threading.Condition()
        self.stop = threading.Event()

    def take(self) -> int | None:
        with self.cond:
            while self.submitted - self.finished >= self.cap and not self.stop.is_set():
                self.cond.wait(0.2)
            if self.stop.is_set():
                return None
            self.submitted += 1
            return self.submitted

    def update_finished(self, finished: int) -> None:
        with self.cond:
            self.finished = finished
            self.cond.notify_all()


def db_transactions(engine) -> int:
    """Committed + rolled-back transactions of the benchmark's database so far."""
    with engine.connect() as conn:
        conn.execute(text("select pg_stat_clear_snapshot()"))
        return int(conn.execute(text(
            "select xact_commit + xact_rollback from pg_stat_database "
            "where datname = current_database()")).scalar_one())


def run_platform(stack, args) -> tuple[float, dict]:
    from bench.perfstack import audio_b64

    # The concurrency split over --worker-procs processes (each its own GIL).
    names = [f"worker-{i + 1}" for i in range(args.worker_procs)]
    prefetch = ("--prefetch-multiplier", str(args.prefetch)) if args.prefetch else ()
    workers = [stack.services.start_worker(name, concurrency=args.concurrency // len(names),
                                           extra_args=prefetch)
               for name in names]

    def worker_cpu() -> float:
        return sum(cpu_seconds(w.pid) for w in workers)

    engine = make_engine(stack.database_url, pool_size=2)
    backlog = Backlog(2 * args.concurrency)
    latencies: list[float] = []
    lock = threading.Lock()

    def submitter() -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {stack.token}"
        url = f"{stack.base_url}/api/v1/transcriptions"
        while (n := backlog.take()) is not None:
            body = {"audioData": audio_b64(n), "mimeType": "audio/wav"}
            t0 = time.perf_counter()
            try:
                resp = http.post(url, json=body, timeout=30)
                ok = resp.status_code == 202
            except requests.RequestException:
                ok = False
            with lock:
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    backlog.errors += 1

    def monitor() -> None:
        while not backlog.stop.is_set():
            with engine.connect() as conn:
                done = conn.execute(text(
                    "select count(*) from jobs where status in "
                    "('succeeded','failed','canceled','expired')")).scalar_one()
            backlog.update_finished(int(done) + backlog.errors)
            time.sleep(0.2)

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(args.clients)]
    threads.append(threading.Thread(target=monitor, daemon=True))
    api_pid = stack.services.processes["api"].pid
    start = time.time()
    for t in threads:
        t.start()
    time.sleep(args.warmup)
    w0 = datetime.now(UTC)
    xact0 = db_transactions(engine)
    cpu_w0 = (worker_cpu(), group_cpu_seconds(api_pid), postgres_cpu_seconds(),
              cpu_seconds(os.getpid()), busy_cores())
    samplers = []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        samplers = record(workers[0].pid, args.seconds, args.profile / "worker")
    time.sleep(args.seconds)
    w1 = datetime.now(UTC)
    xact1 = db_transactions(engine)
    cpu_w1 = (worker_cpu(), group_cpu_seconds(api_pid), postgres_cpu_seconds(),
              cpu_seconds(os.getpid()), busy_cores())
    rss = sum(rss_kib(w.pid) or 0 for w in workers)
    for sampler in samplers:
        sampler.wait(timeout=30)
    backlog.stop.set()
    for t in threads:
        t.join(timeout=35)
    with engine.connect() as conn:
        in_window = conn.execute(text(
            "select count(*) from jobs where status='succeeded' "
            "and finished_at >= :a and finished_at < :b"), {"a": w0, "b": w1}).scalar_one()
        statuses: dict[str, int] = dict(conn.execute(text(
            "select status, count(*) from jobs group by status")).all())
        errors: dict[str, int] = dict(conn.execute(text(
            "select error->>'code', count(*) from jobs where status='failed' group by 1")).all())
    engine.dispose()
    window = (w1 - w0).total_seconds()
    rate = in_window / window
    info = {
        "xact_per_job": (xact1 - xact0 - window * 5) / max(1, in_window),
        "submitted": backlog.submitted, "submit_errors": backlog.errors,
        "statuses": statuses, "fail_codes": errors, "rss_kib": rss,
        "worker_cpu": (cpu_w1[0] - cpu_w0[0]) / window,
        "api_cpu": (cpu_w1[1] - cpu_w0[1]) / window,
        "pg_cpu": (cpu_w1[2] - cpu_w0[2]) / window,
        "bench_cpu": (cpu_w1[3] - cpu_w0[3]) / window,
        "box_busy": (cpu_w1[4][0] - cpu_w0[4][0]) / max(1, cpu_w1[4][1] - cpu_w0[4][1]),
        "submit_p50_ms": sorted(latencies)[len(latencies) // 2] * 1000 if latencies else None,
        "submit_p99_ms": sorted(latencies)[int(len(latencies) * 0.99)] * 1000
        if latencies else None,
        "elapsed": time.time() - start,
    }
    for name in names:
        stack.stop_process(name)
    return rate, info


def run_bare(stack, args) -> tuple[float, dict]:
    worker = stack.start_bare_worker("bare-1", args.concurrency)
    r = redis.Redis.from_url(stack.redis_url)
    r.delete("bare:finished")
    backlog = Backlog(2 * args.concurrency)

    def submitter() -> None:
        while backlog.take() is not None:
            bare_sleep.apply_async((args.latency,))

    def monitor() -> None:
        while not backlog.stop.is_set():
            backlog.update_finished(int(r.llen("bare:finished")))
            time.sleep(0.2)

    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(args.clients)]
    threads.append(threading.Thread(target=monitor, daemon=True))
    for t in threads:
        t.start()
    time.sleep(args.warmup)
    w0 = time.time()
    cpu_w0 = cpu_seconds(worker.pid)
    time.sleep(args.seconds)
    w1 = time.time()
    cpu_w1 = cpu_seconds(worker.pid)
    rss = rss_kib(worker.pid)
    backlog.stop.set()
    for t in threads:
        t.join(timeout=10)
    finished = [float(x) for x in r.lrange("bare:finished", 0, -1)]
    in_window = sum(1 for f in finished if w0 <= f < w1)
    stack.stop_process("bare-1")
    window = w1 - w0
    return in_window / window, {
        "rss_kib": rss, "submitted": backlog.submitted,
        "worker_cpu": (cpu_w1 - cpu_w0) / window,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="submitting threads")
    parser.add_argument("--latency", type=float, default=1.0, help="fake Gemini seconds/call")
    parser.add_argument("--worker-procs", type=int, default=1,
                        help="platform worker processes sharing --concurrency")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--prefetch", type=int, default=0,
                        help="the platform worker's --prefetch-multiplier (0: celeryconfig's)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample the (first) worker during the window into this directory "
                             "(py-spy: worker.raw, worker.svg) and print where its CPU went")
    args = parser.parse_args()
    print(f"threads pool, concurrency {args.concurrency} in {args.worker_procs} platform worker "
          f"process(es), {args.clients} client threads, "
          f"upstream latency {args.latency}s, window {args.seconds}s after {args.warmup}s warm-up",
          flush=True)
    with perf_stack(args.latency, "tput") as stack:
        rate, info = run_platform(stack, args)
        print(f"platform: {rate:.1f} jobs/s sustained (target >= {TARGET_RATE:.0f}) "
              f"{mark(rate >= TARGET_RATE)}", flush=True)
        print(f"  submitted {info['submitted']}, submit errors {info['submit_errors']}, "
              f"statuses {info['statuses']}, failures {info['fail_codes']}")
        print(f"  submit latency under load p50 {info['submit_p50_ms']:.1f} ms, "
              f"p99 {info['submit_p99_ms']:.1f} ms")
        print(f"  CPU in window: worker {info['worker_cpu']:.2f} cores, "
              f"API {info['api_cpu']:.2f}, PostgreSQL {info['pg_cpu']:.2f}, "
              f"bench+fake Gemini {info['bench_cpu']:.2f} cores; box "
              f"{info['box_busy'] * 100:.0f}% busy (2 cores)")
        print(f"  worker CPU per succeeded job: {info['worker_cpu'] / rate * 1000:.1f} ms "
              f"(a threads-pool process runs Python on one core at a time: the GIL)")
        print(f"  PostgreSQL transactions per succeeded job (API + worker + beat, the bench's "
              f"own polling subtracted): {info['xact_per_job']:.1f}")
        print(f"  worker RSS (all processes) at concurrency {args.concurrency}: "
              f"{(info['rss_kib'] or 0) / 1024:.1f} MiB", flush=True)
        if args.profile:
            raw = args.profile / "worker.raw"
            print(f"  worker profile ({raw}, flame graph worker.svg): "
                  + summarize(raw, per=rate * args.seconds).replace("\n", "\n  "), flush=True)
        ok = rate >= TARGET_RATE
        if not args.skip_bare:
            bare, binfo = run_bare(stack, args)
            ratio = rate / bare if bare else float("nan")
            print(f"bare Celery: {bare:.1f} tasks/s sustained (same pool, concurrency, broker); "
                  f"worker CPU {binfo['worker_cpu']:.2f} cores, "
                  f"RSS {(binfo['rss_kib'] or 0) / 1024:.1f} MiB")
            print(f"ratio platform/bare: {ratio:.2f} (target >= {TARGET_RATIO}) "
                  f"{mark(ratio >= TARGET_RATIO)}", flush=True)
            ok = ok and ratio >= TARGET_RATIO
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
