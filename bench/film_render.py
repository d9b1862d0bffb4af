"""Render alone: an 8-scene film with ~20 s of narration per scene, two photos each, music.

    .venv/bin/python bench/film_render.py [--scenes 8] [--seconds 20] [--ffmpeg PATH|bundled]

Prints the render's wall time as a ratio to the film's duration (target ≤ 0.25 on the 2-core
box), where the time went (staging the photos, ffmpeg), the CPU time spent (and the floor it
sets on an idle box), peak RSS, and the load average around the run (the machine may be
shared: a loaded box stretches the wall time, not the CPU time).
Narrations are tones of exact length (the render does not care what is said); photos are
4000x3000 JPEGs, as a phone takes them. Exit status 0 when the target is met.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.film import FilmInput, SceneInput, ffmpeg_info, render_film
from tests.film_media import photo, tone

TARGET_RATIO = 0.25


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="narration per scene")
    parser.add_argument("--images", type=int, default=2, help="photos per scene")
    parser.add_argument("--ffmpeg", default=None, help="a path, or 'bundled' for the wheel's")
    parser.add_argument("--no-music", action="store_true")
    args = parser.parse_args()
    info = ffmpeg_info(args.ffmpeg)
    with tempfile.TemporaryDirectory(prefix="film-bench-") as tmp:
        media = Path(tmp) / "media"
        media.mkdir()
        scenes = []
        for number in range(args.scenes):
            images = tuple(photo(media / f"photo-{number}-{k}.jpg", (4000, 3000),
                                 seed=number * 10 + k) for k in range(args.images))
            narration = media / f"narration-{number}.wav"
            seconds = tone(narration, args.seconds, 300 + 40 * number)
            scenes.append(SceneInput(
                chapter_id=f"chapter-{number + 1}", images=images, narration=narration,
                narration_seconds=seconds,
                text="A day by the sea, told slowly. " * int(args.seconds / 2),
                transition=("fade", "slide", "zoom")[number % 3],
            ))
        music = None if args.no_music else media / "music.wav"
        if music is not None:
            tone(music, 45.0, 220.0)
        film = FilmInput(scenes=tuple(scenes), music=music)
        print(f"ffmpeg: {info.source} {info.version} ({info.path})", flush=True)
        print(f"load before: {_load()}  cores: {os.cpu_count()}", flush=True)
        first_progress: list[float] = []
        started = time.perf_counter()

        def progress(fraction: float) -> None:
            if not first_progress and fraction > 0:
                first_progress.append(time.perf_counter() - started)

        rendered = render_film(film, Path(tmp) / "out", on_progress=progress, ffmpeg=info)
        wall = time.perf_counter() - started
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
    ratio = wall / rendered.duration_seconds
    staging = first_progress[0] if first_progress else float("nan")
    print(f"load after:  {_load()}")
    print(f"film: {rendered.duration_seconds:.1f} s, {rendered.width}x{rendered.height}, "
          f"{rendered.size_bytes / 1e6:.1f} MB, music {rendered.has_music}")
    print(f"render wall: {wall:.1f} s = {ratio:.3f}x the film (target <= {TARGET_RATIO}) "
          f"{'MET' if ratio <= TARGET_RATIO else 'MISSED'}")
    print(f"  staging (photos normalised, files copied) until ffmpeg's first progress: "
          f"{staging:.1f} s")
    cpu = children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime
    cores = os.cpu_count() or 1
    print(f"CPU: ffmpeg {children.ru_utime + children.ru_stime:.1f} s, this process "
          f"{own.ru_utime + own.ru_stime:.1f} s; {cpu / wall:.2f} of {cores} cores busy on average")
    print(f"  the same work on an idle box with every core busy: >= {cpu / cores:.1f} s = "
          f"{cpu / cores / rendered.duration_seconds:.3f}x the film (a floor, not a measurement)")
    print(f"peak RSS: ffmpeg {children.ru_maxrss / 1024:.0f} MiB, "
          f"this process (Pillow staging) {own.ru_maxrss / 1024:.0f} MiB")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
