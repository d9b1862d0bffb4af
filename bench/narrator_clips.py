"""Narrator clips: many long video generations waiting upstream at once, on a worker with few
threads, one of its processes SIGKILLed mid-run.

    .venv/bin/python bench/narrator_clips.py --clips 20 --generation 60 --concurrency 2 \\
        --kill-at 30

Submits ``--clips`` clips over HTTP (``POST /api/v1/narrator-clips``, 8 s each) to the
platform (API, beat, one worker on the ``video`` and ``maintenance`` queues with
``--concurrency`` threads) against the fake Gemini, whose every generation takes
``--generation`` seconds. ``--kill-at`` seconds after the first submit the worker is SIGKILLed
and a new one started in its place (as a supervisor would). Prints the wall time from the first
submit to the last clip, each clip's time, and how many generations the fake saw start.
Targets: every clip succeeds, in about ``generation`` + 10 s (not clips x generation /
concurrency), with exactly one start per clip. Exit status 0 when they are met.

A waiting clip's next look is a Celery message with a countdown, held by the worker that
re-scheduled it: killed, the worker takes those messages with it, and the reaper re-sends them
``JOB_QUEUED_RESEND_AFTER_SECONDS`` after they were due (``--resend-after``).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.perfstack import mark, percentile, perf_stack
from models import TERMINAL_STATUSES
from tests.fakes.gemini_video import mp4_clip

CLIP_SECONDS = 8
PER_MOMENT = 15  # a moment holds 20 files: the photo and its clips


def photo() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (800, 600), (180, 110, 70)).save(buffer, "JPEG")
    return buffer.getvalue()


def moments_with_photos(http: requests.Session, base: str, count: int) -> list[str]:
    space = http.post(f"{base}/spaces", json={"title": "Porto"}, timeout=30).json()
    found = []
    for n in range(count):
        note = http.post(f"{base}/spaces/{space['id']}/notes", timeout=30,
                         json={"textContent": f"moment {n}"}).json()
        media = http.post(f"{base}/spaces/{space['id']}/notes/{note['id']}/media", timeout=30,
                          files={"file": ("me.jpg", photo(), "image/jpeg")})
        media.raise_for_status()
        found.append(media.json()["id"])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--generation", type=float, default=60.0,
                        help="seconds the fake takes per video generation")
    parser.add_argument("--concurrency", type=int, default=2, help="worker threads")
    parser.add_argument("--kill-at", type=float, default=30.0,
                        help="seconds after the first submit to SIGKILL the worker (0: never)")
    parser.add_argument("--resend-after", type=int, default=None,
                        help="JOB_QUEUED_RESEND_AFTER_SECONDS (platform default 30): how soon "
                        "the reaper re-sends a waiting job whose message died with the worker")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(f"{args.clips} narrator clips of {CLIP_SECONDS} s, {args.generation:.0f} s per "
          f"generation upstream, one worker with {args.concurrency} threads"
          + (f", SIGKILLed at {args.kill_at:.0f} s" if args.kill_at else ""), flush=True)
    mp4_clip(CLIP_SECONDS)  # the fake's clip, made before the clock starts
    env = {"RATE_LIMITS_ENABLED": "false"}
    if args.resend_after is not None:
        env["JOB_QUEUED_RESEND_AFTER_SECONDS"] = str(args.resend_after)
    with perf_stack(0.0, "clips", env) as stack:
        stack.gemini.video.generation_seconds = args.generation
        worker: dict[str, str] = {"name": "video-1"}
        stack.services.start_worker("video-1", concurrency=args.concurrency,
                                    queues="video,maintenance")
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {stack.token}"
        base = f"{stack.base_url}/api/v1"
        photos = moments_with_photos(http, base, (args.clips + PER_MOMENT - 1) // PER_MOMENT)

        started = time.monotonic()
        killed_at: list[float] = []

        def kill_and_replace() -> None:
            stack.services.kill(worker["name"])
            killed_at.append(time.monotonic() - started)
            worker["name"] = "video-2"
            stack.services.start_worker("video-2", concurrency=args.concurrency,
                                        queues="video,maintenance")

        killer = threading.Timer(args.kill_at, kill_and_replace) if args.kill_at else None
        if killer is not None:
            killer.start()
        jobs = []
        for n in range(args.clips):
            response = http.post(f"{base}/narrator-clips", timeout=30, json={
                "mediaId": photos[n // PER_MOMENT], "durationSeconds": CLIP_SECONDS,
                "script": f"Hello from the river, clip {n}."})
            response.raise_for_status()
            jobs.append(response.json())
        submitted = time.monotonic() - started
        done: dict[str, float] = {}
        final: dict[str, dict[str, Any]] = {}
        while len(final) < len(jobs) and time.monotonic() - started < args.timeout:
            for job in jobs:
                if job["id"] in final:
                    continue
                now = http.get(f"{base}/jobs/{job['id']}", timeout=30).json()
                if now["status"] in TERMINAL_STATUSES:
                    final[job["id"]] = now
                    done[job["id"]] = time.monotonic() - started
            time.sleep(0.5)
        wall = max(done.values()) if done else float("inf")
        if killer is not None:
            killer.cancel()
        stack.stop_process(worker["name"])
        video = stack.gemini.video
        starts, polls, in_flight = video.starts, video.polls, video.most_in_flight()
    load = os.getloadavg()
    succeeded = [j for j in final.values() if j["status"] == "succeeded"]
    failed = [(j["status"], (j.get("error") or {}).get("code")) for j in final.values()
              if j["status"] != "succeeded"]
    times = sorted(done.values())
    target = args.generation + 10
    print(f"submitted {len(jobs)} in {submitted:.1f} s; worker killed at "
          f"{', '.join(f'{t:.1f} s' for t in killed_at) or 'never'}")
    print(f"succeeded {len(succeeded)}/{len(jobs)} {mark(len(succeeded) == len(jobs))}"
          + (f"; not: {failed}" if failed else ""))
    print(f"wall time, first submit to last clip: {wall:.1f} s (target about {target:.0f} s, "
          f"not {args.clips * args.generation / args.concurrency:.0f} s) "
          f"{mark(wall <= target + 10)}")
    if times:
        print(f"per clip (from the first submit): first {times[0]:.1f} s, p50 "
              f"{percentile(times, 50):.1f} s, last {times[-1]:.1f} s")
    print(f"generations started upstream: {starts} (target exactly {len(jobs)}) "
          f"{mark(starts == len(jobs))}; polls {polls} "
          f"({polls / max(1, len(jobs)):.1f} per clip); most waiting upstream at once "
          f"{in_flight} on {args.concurrency} threads")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    ok = len(succeeded) == len(jobs) and starts == len(jobs) and wall <= target + 10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
