"""Cache: the same audio transcribed N times; upstream calls and submit-to-result latency of the
first (a model call) against the cached ones.

    .venv/bin/python bench/cache.py --repeats 50 --latency 1.0

Every submit is ``POST /api/v1/transcriptions`` of the same WAV with ``Prefer: wait=10``,
one after another; the fake Gemini counts transcription calls. Exit status 0 when the upstream
saw exactly 1 call (0 after the first) and every repeat answered ``cached: true``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests

from bench.perfstack import audio_b64, mark, percentile, perf_stack
from models import TERMINAL_STATUSES

FINAL = TERMINAL_STATUSES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--latency", type=float, default=1.0, help="fake Gemini seconds/call")
    args = parser.parse_args()
    print(f"{args.repeats} sequential transcriptions of one audio, upstream latency "
          f"{args.latency}s, Prefer: wait=10", flush=True)
    with perf_stack(args.latency, "cache") as stack:
        stack.services.start_worker("worker-1", concurrency=16)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {stack.token}"
        url = f"{stack.base_url}/api/v1/transcriptions"
        body = {"audioData": audio_b64(424242), "mimeType": "audio/wav"}
        latencies: list[float] = []
        cached: list[bool] = []
        calls_after: list[int] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            job = http.post(url, json=body, headers={"Prefer": "wait=10"}, timeout=30).json()
            while job.get("status") not in FINAL:
                time.sleep(0.002)
                job = http.get(f"{stack.base_url}/api/v1/jobs/{job['id']}", timeout=10).json()
            latencies.append((time.perf_counter() - t0) * 1000)
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
            cached.append(bool((job.get("result") or {}).get("cached")))
            calls_after.append(len(stack.gemini.requests_of("transcription")))
        stack.stop_process("worker-1")
    calls = calls_after[-1]
    rest = latencies[1:]
    print(f"upstream transcription calls: {calls} (target 1: 0 after the first) "
          f"{mark(calls == 1)}; after the first job: {calls_after[0]}")
    print(f"answers marked cached: {sum(cached[1:])}/{len(cached) - 1} repeats "
          f"{mark(all(cached[1:]))}; first cached: {cached[0]}")
    print(f"first (model call): {latencies[0]:.1f} ms")
    if rest:
        print(f"cached repeats: p50 {percentile(rest, 50):.1f} ms, p99 {percentile(rest, 99):.1f} "
              f"ms, max {max(rest):.1f} ms; first/cached p50 "
              f"{latencies[0] / percentile(rest, 50):.0f}x")
    return 0 if calls == 1 and all(cached[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
