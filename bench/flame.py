"""Sampling profiles of a running process (py-spy), as a flame graph and a top-N table.

    .venv/bin/python bench/flame.py summarize PROFILE.raw        # the table of a recording

``record`` samples only the threads holding the GIL (``py-spy --gil``): in a threads-pool
worker that is the process's Python CPU, not its threads waiting on sockets. The raw file holds
one collapsed stack per line (``frame;frame;... count``); the table gives each package's share
of the samples (by the innermost frame) and the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Which package a frame belongs to: the first matching fragment of its file names the row.
PACKAGES = (
    ("sqlalchemy", "sqlalchemy"), ("psycopg2", "psycopg2"), ("marshmallow", "marshmallow"),
    ("flask_smorest", "flask-smorest"), ("flask_limiter", "flask-limiter"), ("limits/", "limits"),
    ("flask/", "flask"), ("werkzeug", "werkzeug"), ("gunicorn", "gunicorn"),
    ("google/genai", "google-genai"), ("pydantic", "pydantic"), ("httpx", "httpx"),
    ("httpcore", "httpx"), ("h11", "httpx"), ("redis/", "redis-py"), ("jwt/", "pyjwt"),
    ("prometheus_client", "prometheus-client"), ("kombu", "kombu"), ("celery", "celery"),
    ("billiard", "celery"), ("json/", "json"), ("logging/", "logging"), ("telemetry.py", "ours"),
    ("api/", "ours"), ("workers/", "ours"), ("agents/", "ours"), ("models/", "ours"),
    ("threading.py", "threading"), ("selectors.py", "selectors"), ("socket.py", "socket"),
    ("ssl.py", "ssl"), ("uuid.py", "uuid"), ("base64.py", "base64"),
)


def package_of(frame: str) -> str:
    for fragment, name in PACKAGES:
        if fragment in frame:
            return name
    return "other"


def record(pid: int, seconds: float, out: Path, *, children: bool = False
           ) -> list[subprocess.Popen[bytes]]:
    """Start sampling ``pid`` (and its child processes: gunicorn's workers) for ``seconds``
    into ``out``.raw and ``out``.svg; the caller waits on the returned processes."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    common = ["record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
              "--gil", "--nonblocking", "--function", *(["--subprocesses"] if children else [])]
    return [
        subprocess.Popen([spy, *common, "--format", fmt, "--output", f"{out}.{ext}"],  # noqa: S603 - py-spy on our own process
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fmt, ext in (("raw", "raw"), ("flamegraph", "svg"))
    ]


def summarize(raw: Path, *, top: int = 20, per: float | None = None, unit: str = "job") -> str:
    """The table of a raw recording; with ``per`` (operations in the window), samples are
    also shown per operation."""
    by_package: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        leaf = stack.rsplit(";", 1)[-1]
        total += samples
        by_package[package_of(leaf)] += samples
        by_function[leaf] += samples
    if not total:
        return f"{raw}: no samples"
    lines = [f"{total} samples holding the GIL" + (f" ({total / per:.1f} per {unit})" if per
                                                    else "")]
    lines.append("  by package (innermost frame):")
    for name, samples in by_package.most_common(12):
        lines.append(f"    {name:<18} {samples / total * 100:5.1f}%")
    lines.append(f"  top {top} functions (own samples):")
    for name, samples in by_function.most_common(top):
        lines.append(f"    {samples / total * 100:5.1f}%  {name}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["summarize"])
    parser.add_argument("raw", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print(summarize(args.raw, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
