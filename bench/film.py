"""A whole film as a job, over HTTP, on the platform's own processes: an 8-chapter story with
about 20 s of narration per scene (the fake Gemini speaks at 15 characters a second after
``--speech-seconds`` of latency per narration), against the browser's real-time composition.

    .venv/bin/python bench/film.py [--chapters 8] [--words 50] [--speech-seconds 1.5]
        [--script-seconds 1.0]

Prints, in one run:
- wall time from submit to the finished film, as a ratio to the film's duration (the
  browser's MediaRecorder path is at least 1.0x: it records in real time), target <= 0.4;
- the render job alone, as the same ratio, target <= 0.25;
- time from submit to the first ``narration`` event, target <= 3 s;
- the render worker's peak RSS (the worker process and its ffmpeg), sampled every 0.2 s.

Needs PostgreSQL (127.0.0.1:5432); starts and stops everything else itself. Exit status 0
when every target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.gemini_server import FakeGemini  # noqa: E402 - after the path set-up above
from tests.platform import Client, running_stack  # noqa: E402

TARGETS = {"whole": 0.4, "render": 0.25, "first_narration": 3.0}
NOTE_TEXT = "We walked along the river at dawn and watched the fishing boats come in."


def rss_kib(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopping = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            self.peak = max(self.peak, rss_kib(self.pid))


def make_story(client: Client, chapters: int) -> str:
    space = client.call("POST", "/spaces", json={"title": "Porto"}, expect=201).json()["id"]
    for day in range(chapters):
        client.call("POST", f"/spaces/{space}/notes", expect=201, json={
            "title": f"Day {day + 1}", "textContent": NOTE_TEXT,
            "timestamp": 1_700_000_000_000 + day * 86_400_000})
    story = client.call("POST", f"/spaces/{space}/story", json={}, expect=202).json()
    if client.wait_job(story["id"], timeout=300)["status"] != "succeeded":
        raise SystemExit("the story job did not succeed")
    return space


def first_narration_after(client: Client, job_id: str, started: float) -> float:
    """Seconds from submit to the film's first ``narration`` event (read as a stream)."""
    for event, _ in client.events(job_id, timeout=600):
        if event == "narration":
            return time.monotonic() - started
    return float("nan")


def seconds_between(job: dict, start: str, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--chapters", type=int, default=8)
    parser.add_argument("--words", type=int, default=50, help="narration words per scene")
    parser.add_argument("--speech-seconds", type=float, default=1.5,
                        help="the fake's latency per narration")
    parser.add_argument("--script-seconds", type=float, default=1.0,
                        help="the fake's latency for the script")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with FakeGemini() as gemini, tempfile.TemporaryDirectory(prefix="film-bench-") as tmp, \
            running_stack(Path(tmp), gemini) as stack:
        gemini.script_narration_words = args.words
        gemini.set_latency(args.speech_seconds, "speech")
        gemini.set_latency(args.script_seconds, "script")
        services = stack.services
        services.start_worker("io", concurrency=16,
                              queues="transcription,illustration,story,speech,maintenance")
        renderer = services.start_worker("render", concurrency=1, queues="render")
        space = make_story(stack.client, args.chapters)
        peak = PeakRss(renderer.pid)
        peak.start()
        started = time.monotonic()
        job = stack.client.call("POST", f"/spaces/{space}/film", json={"force": True},
                                expect=202).json()
        first = first_narration_after(stack.client, job["id"], started)
        done = stack.client.wait_job(job["id"], timeout=900)
        whole = time.monotonic() - started
        peak.stopping.set()
        peak.join()
        if done["status"] != "succeeded":
            raise SystemExit(f"the film job ended {done['status']}: {done.get('error')}")
        renders = stack.client.call(
            "GET", f"/jobs?parentId={job['id']}&kind=render").json()
        if len(renders) != 1:
            raise SystemExit("expected one render job: " + json.dumps(
                [(r["id"], r["parentId"], r["status"], r["createdAt"]) for r in renders]))
        (render,) = renders
        render_s = seconds_between(render, "startedAt", "finishedAt")
        narrations = stack.client.call(
            "GET", f"/jobs?parentId={job['id']}&kind=narration").json()
        film_job = stack.client.call("GET", f"/jobs/{job['id']}").json()
    film_s = done["result"]["durationSeconds"]
    spoken = min(narrations, key=lambda n: n["finishedAt"])
    since = {name: seconds_between({"a": film_job["createdAt"], "b": spoken[name]}, "a", "b")
             for name in ("createdAt", "startedAt", "finishedAt")}
    print(f"first narration after the film job was made: script written (narrations created) "
          f"{since['createdAt']:.2f} s, claimed {since['startedAt']:.2f} s, spoken and stored "
          f"{since['finishedAt']:.2f} s")
    figures = {
        "whole": whole / film_s, "render": render_s / film_s, "first_narration": first,
    }
    met = {name: figures[name] <= target for name, target in TARGETS.items()}
    print(f"load before {' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, cores {os.cpu_count()}")
    print(f"film: {args.chapters} scenes, {film_s:.1f} s, "
          f"{done['result']['sizeBytes'] / 1e6:.1f} MB")
    print(f"submit -> finished film   {whole:6.1f} s = {figures['whole']:.3f}x the film "
          f"(browser >= 1.0x; target <= {TARGETS['whole']}) "
          f"{'MET' if met['whole'] else 'MISSED'}")
    print(f"render job alone          {render_s:6.1f} s = {figures['render']:.3f}x the film "
          f"(target <= {TARGETS['render']}) {'MET' if met['render'] else 'MISSED'}")
    print(f"first narration event     {first:6.2f} s (target <= "
          f"{TARGETS['first_narration']}) {'MET' if met['first_narration'] else 'MISSED'}")
    print(f"render worker peak RSS    {peak.peak / 1024:6.0f} MiB (worker + ffmpeg)")
    print(json.dumps({"figures": figures, "peak_rss_mib": round(peak.peak / 1024)}))
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
