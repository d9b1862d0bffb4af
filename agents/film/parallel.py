"""Several ffmpeg runs at once, with progress and stop checks kept in the calling thread.

The caller's ``on_progress`` and ``should_stop`` may touch a database session, which is not
shared between threads: the runs only write their fraction done into a list and read an event,
and the calling thread turns those into reports and stop requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from agents.film.ffmpeg import RenderStopped

_POLL_SECONDS = 0.1
_STOP_POLL_SECONDS = 0.5

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Run:
    """One piece of work: ``start(progress, stopping)`` reports 0..1 and checks ``stopping()``."""

    start: Callable[[Progress, Callable[[], bool]], None]
    weight: float  # its share of the progress reported


def run_all(runs: Sequence[Run], *, workers: int, on_progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> None:
    """Run everything, ``workers`` at a time; the first failure (in order) stops the rest.

    Raises ``RenderStopped`` when ``should_stop()`` said so, else the first run's error.
    """
    fractions = [0.0] * len(runs)
    total = sum(run.weight for run in runs) or 1.0
    stopping = threading.Event()

    def work(index: int) -> None:
        if stopping.is_set():
            raise RenderStopped("stopped before it started")

        def progress(fraction: float) -> None:
            fractions[index] = fraction

        runs[index].start(progress, stopping.is_set)
        fractions[index] = 1.0

    asked_to_stop = False
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="film-run") as pool:
        futures: list[Future[None]] = [pool.submit(work, index) for index in range(len(runs))]
        next_stop_check = time.monotonic()
        reported = -1.0
        try:
            while True:
                done, pending = wait(futures, timeout=_POLL_SECONDS, return_when=FIRST_EXCEPTION)
                if on_progress is not None:
                    fraction = sum(f * run.weight for f, run in zip(fractions, runs, strict=True))
                    if fraction != reported:
                        reported = fraction
                        on_progress(min(1.0, fraction / total))
                if not pending or any(future.exception() for future in done):
                    break
                if should_stop is not None and time.monotonic() >= next_stop_check:
                    next_stop_check = time.monotonic() + _STOP_POLL_SECONDS
                    if should_stop():
                        asked_to_stop = True
                        break
        finally:
            # Whatever ended the loop (a failure, a stop, an exception from a callback), the
            # other runs kill their ffmpeg at their next check; the pool waits for them.
            if not all(future.done() and future.exception() is None for future in futures):
                stopping.set()
    if asked_to_stop:
        raise RenderStopped("the render was asked to stop")
    errors = [future.exception() for future in futures if future.exception() is not None]
    first = next((e for e in errors if not isinstance(e, RenderStopped)), None) or (
        errors[0] if errors else None)
    if first is not None:
        raise first
