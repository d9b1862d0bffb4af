"""Batch regeneration vs interactive users: a story batch runs while a second process submits
transcriptions; their latency is measured without the batch, then with it, in the same run.

    .venv/bin/python bench/batch.py --stories 500

The platform is deployed as the Procfile splits it: an interactive worker (transcription,
illustration, story, maintenance queues; 16 threads) and a batch worker (``batch`` queue only;
4 threads), with a global Gemini limit of ``--rpm`` requests a minute per model of which
INTERACTIVE_RESERVED_SHARE (0.5) is kept from the batch. The fake Gemini answers a
transcription in 0.3 s, a story in 1 s, an image in 0.5 s. ``--stories`` spaces of 2 moments
(10 owners) are regenerated with one image a chapter (3 calls a story) by
``POST /batches/story-regenerations``.

The load process submits ``--rate`` transcriptions a second (open loop, a distinct WAV each so
the cache never answers) with ``Prefer: wait=30``: latency = submit -> final answer. Phase 1:
``--baseline`` seconds with no batch. Phase 2: the same load from the batch's submit until it has
finished. Prints batch throughput (stories/s, submit -> batch succeeded) and p50/p95 of both
phases with the target (p50 and p95 with the batch within 20% of without it); checks that every
space got exactly one new version. Exit status 0 when the targets hold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

TARGET_RATIO = 1.2
INTERACTIVE_QUEUES = "transcription,illustration,story,maintenance"
LATENCIES = {"transcription": 0.3, "story": 1.0, "illustration": 0.5}


def load(url: str, token: str, rate: float, stop_file: Path, out: Path, first: int) -> None:
    """The second process: transcriptions at ``rate``/s until ``stop_file`` exists."""
    from bench.perfstack import audio_b64

    http = requests.Session()
    http.headers.update({"Authorization": f"Bearer {token}", "Prefer": "wait=30"})
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(n: int) -> None:
        nonlocal errors
        started = time.perf_counter()
        try:
            response = http.post(f"{url}/api/v1/transcriptions", timeout=60,
                                 json={"audioData": audio_b64(n), "mimeType": "audio/wav"})
            ok = response.status_code == 200 and response.json()["status"] == "succeeded"
        except requests.RequestException:
            ok = False
        with lock:
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    with ThreadPoolExecutor(max_workers=64) as pool:
        n, start = first, time.monotonic()
        while not stop_file.exists():
            pool.submit(one, n)
            n += 1
            time.sleep(max(0.0, start + (n - first) / rate - time.monotonic()))
    out.write_text(json.dumps({"latencies": latencies, "errors": errors}))


def run_load(stack: Any, args: argparse.Namespace, name: str,
             first: int) -> subprocess.Popen[bytes]:
    stop = stack.var_dir / f"{name}.stop"
    return subprocess.Popen([sys.executable, __file__, "--load", "--url", stack.base_url,  # noqa: S603 - this script
                             "--token", stack.token, "--rate", str(args.rate),
                             "--stop-file", str(stop), "--out", str(stack.var_dir / name),
                             "--first", str(first)])


def stop_load(stack: Any, process: subprocess.Popen[bytes], name: str) -> dict[str, Any]:
    (stack.var_dir / f"{name}.stop").touch()
    process.wait(timeout=120)
    result: dict[str, Any] = json.loads((stack.var_dir / name).read_text())
    return result


def make_spaces(database_url: str, count: int) -> None:
    from models import Note, Space, User
    from models.db import make_engine, make_session_factory

    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        owners = [User(email=f"owner-{i}-{uuid.uuid4().hex[:6]}@example.com",
                       password_hash="x")  # noqa: S106 - no login: they only own spaces
                  for i in range(10)]
        session.add_all(owners)
        session.flush()
        spaces = [Space(owner_id=owners[i % 10].id, title=f"Trip {i}") for i in range(count)]
        session.add_all(spaces)
        session.flush()
        session.add_all(Note(space_id=space.id, timestamp_ms=1_700_000_000_000 + day,
                             title=f"Day {day}", text_content=f"Trip {i}, day {day}: the river.")
                        for i, space in enumerate(spaces) for day in range(2))
        session.commit()
    engine.dispose()


def check_versions(database_url: str, batch_id: str) -> tuple[int, int, int]:
    """(children, spaces with exactly one ready version, spaces with more than one)."""
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    with engine.connect() as conn:
        children = conn.execute(text("select count(*) from jobs where parent_id = :b"),
                                {"b": batch_id}).scalar_one()
        counts = [n for (n,) in conn.execute(text(
            "select count(*) filter (where status = 'ready') from stories group by space_id"))]
    engine.dispose()
    return children, sum(n == 1 for n in counts), sum(n > 1 for n in counts)


def promote(database_url: str) -> None:
    from sqlalchemy import text

    from models.db import make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("update users set role = 'admin' where email like 'batch-%'"))
    engine.dispose()


def summary(values: list[float]) -> tuple[float, float]:
    from bench.perfstack import percentile

    return percentile(values, 50) * 1000, percentile(values, 95) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=500)
    parser.add_argument("--rate", type=float, default=2.0, help="transcriptions/s submitted")
    parser.add_argument("--baseline", type=float, default=30.0, help="seconds without batch")
    parser.add_argument("--rpm", type=int, default=1200, help="Gemini requests/min per model")
    parser.add_argument("--batch-concurrency", type=int, default=4)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load(args.url, args.token, args.rate, args.stop_file, args.out, args.first)
        return 0

    from bench.perfstack import mark, perf_stack

    print(f"{args.stories} stories, {args.rate} transcriptions/s, Gemini {args.rpm} rpm per "
          f"model (half reserved for interactive), fake latencies {LATENCIES}", flush=True)
    env = {"GEMINI_RPM_DEFAULT": str(args.rpm), "INTERACTIVE_RESERVED_SHARE": "0.5",
           "BATCH_WINDOW": str(4 * args.batch_concurrency), "JOB_HEARTBEAT_TIMEOUT_SECONDS": "30"}
    with perf_stack(0.0, "batch", extra_env=env) as stack:
        for kind, seconds in LATENCIES.items():
            stack.gemini.set_latency(seconds, kind)
        stack.services.start_worker("interactive", concurrency=16, queues=INTERACTIVE_QUEUES)
        stack.services.start_worker("batch", concurrency=args.batch_concurrency, queues="batch")
        make_spaces(stack.database_url, args.stories)
        promote(stack.database_url)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {stack.token}"

        baseline_load = run_load(stack, args, "baseline", 0)
        time.sleep(args.baseline)
        baseline = stop_load(stack, baseline_load, "baseline")
        time.sleep(2)  # the last baseline transcriptions finish

        loaded_load = run_load(stack, args, "loaded", 1_000_000)
        time.sleep(2)  # the load runs before the batch starts
        started = time.monotonic()
        submitted = http.post(f"{stack.base_url}/api/v1/batches/story-regenerations",
                              json={"all": True}, timeout=60)
        submitted.raise_for_status()
        batch_id = submitted.json()["id"]
        while True:
            report = http.get(f"{stack.base_url}/api/v1/batches/{batch_id}", timeout=30).json()
            if report["status"] in {"succeeded", "failed", "canceled"}:
                break
            print(f"  batch {report['percentDone']:5.1f}% {report['totals']} "
                  f"ETA {report['estimatedSecondsRemaining']} s", flush=True)
            time.sleep(5)
        elapsed = time.monotonic() - started
        loaded = stop_load(stack, loaded_load, "loaded")

        children, one_version, duplicated = check_versions(stack.database_url, batch_id)
        b50, b95 = summary(baseline["latencies"])
        l50, l95 = summary(loaded["latencies"])
        ok50, ok95 = l50 <= b50 * TARGET_RATIO, l95 <= b95 * TARGET_RATIO
        done = report["totals"]["succeeded"]
        print(f"batch: {report['status']}, {done}/{args.stories} stories in {elapsed:.1f} s: "
              f"{done / elapsed:.2f} stories/s ({3 * done / elapsed:.1f} Gemini calls/s); "
              f"{report['calls']} calls, est. {report['costUsd']:.4f} USD at list prices")
        print(f"  {children} child story jobs, {one_version} spaces with exactly one version, "
              f"{duplicated} with more")
        print(f"transcription latency without batch: p50 {b50:.0f} ms, p95 {b95:.0f} ms "
              f"({len(baseline['latencies'])} jobs, {baseline['errors']} errors)")
        print(f"transcription latency with batch:    p50 {l50:.0f} ms, p95 {l95:.0f} ms "
              f"({len(loaded['latencies'])} jobs, {loaded['errors']} errors)")
        print(f"  ratio p50 {l50 / b50:.2f} (target <= {TARGET_RATIO}) {mark(ok50)}, "
              f"p95 {l95 / b95:.2f} (target <= {TARGET_RATIO}) {mark(ok95)}", flush=True)
        correct = (report["status"] == "succeeded" and done == args.stories
                   and one_version == args.stories and not duplicated)
    return 0 if ok50 and ok95 and correct else 1


if __name__ == "__main__":
    sys.exit(main())
