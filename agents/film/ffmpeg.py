"""Which ffmpeg runs, and running it boxed in: its own process group, limits, no shell.

The binary is, in order: an explicit path (``FFMPEG_BINARY``; ``bundled`` picks the wheel's),
the system's ``ffmpeg`` on PATH, else the one the ``imageio-ffmpeg`` wheel ships (a static build
with libx264 and AAC), so a fresh ``make install`` can render with no system package. ffprobe is
never needed at run time.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO

from agents.errors import AgentError
from agents.film.types import RenderLimits

BUNDLED = "bundled"  # FFMPEG_BINARY's value for "the wheel's, even if the system has one"
_VERSION_TIMEOUT_SECONDS = 15.0
_POLL_SECONDS = 0.1
_STOP_POLL_SECONDS = 0.5
_STDERR_LINES = 60

# Runs between fork and ffmpeg: set the limits, then exec (same pid, so the group is ffmpeg's).
# A separate interpreter rather than ``preexec_fn``, which may deadlock in a threaded worker.
# On Linux the child is also killed when the thread that started it dies (a worker SIGKILLed
# mid-render leaves no ffmpeg behind); the getppid check closes the race with an early death.
_LIMITS_SHIM = (
    "import os, resource, signal, sys\n"
    "parent, mem, fsize = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])\n"
    "if sys.platform.startswith('linux'):\n"
    "    import ctypes\n"
    "    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != parent:\n"
    "        os._exit(137)\n"
    "resource.setrlimit(resource.RLIMIT_AS, (mem, mem))\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


@dataclass(frozen=True)
class FfmpegInfo:
    """The ffmpeg binary in use: where it is, where it came from, which version."""

    path: str
    source: str  # "FFMPEG_BINARY" | "system" | "imageio-ffmpeg"
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "source": self.source, "version": self.version}

    @property
    def major(self) -> int | None:
        """The major version (``5`` of ``5.1.9-0+deb12u1``, ``9`` of ``n9.0.2-17-g...``); None
        for a build from git (``N-113722-g...``), which is newer than any release."""
        match = re.match(r"n?(\d+)\.", self.version)
        return int(match.group(1)) if match else None

    def filter_graph_file(self, name: str) -> list[str]:
        """The option reading a filter graph from a file: ffmpeg 7 brought ``-/filter_complex``
        and later releases dropped ``-filter_complex_script``."""
        if self.major is not None and self.major < 7:
            return ["-filter_complex_script", name]
        return ["-/filter_complex", name]


class RenderStopped(Exception):
    """``should_stop()`` said stop: ffmpeg was killed (whole group) and its files removed."""


def _bundled_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # a platform the wheel has no binary for
        return None


def _version(path: str) -> str:
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [path, "-hide_banner", "-version"], capture_output=True, text=True,
            timeout=_VERSION_TIMEOUT_SECONDS, check=False, env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AgentError("render_unavailable", f"ffmpeg at {path} does not run.",
                         retryable=False, detail=type(exc).__name__) from exc
    match = re.match(r"ffmpeg version (\S+)", done.stdout)
    if done.returncode != 0 or not match:
        raise AgentError("render_unavailable", f"{path} is not a working ffmpeg.", retryable=False)
    return match.group(1)


@lru_cache(maxsize=8)
def ffmpeg_info(configured: str | None = None) -> FfmpegInfo:
    """The ffmpeg to use and its version: ``configured`` (a path, or ``bundled`` for the wheel's),
    else the system's, else the wheel's."""
    if configured and configured != BUNDLED:
        path = shutil.which(configured) or configured  # exec needs a path, not a bare name
        return FfmpegInfo(path, "FFMPEG_BINARY", _version(path))
    system = None if configured == BUNDLED else shutil.which("ffmpeg")
    if system:
        return FfmpegInfo(system, "system", _version(system))
    bundled = _bundled_ffmpeg()
    if bundled:
        return FfmpegInfo(bundled, "imageio-ffmpeg", _version(bundled))
    raise AgentError("render_unavailable",
                     "No ffmpeg: install the system package or imageio-ffmpeg.", retryable=False)


def _child_env() -> dict[str, str]:
    # Nothing of the worker's environment (API keys, database URLs) reaches ffmpeg, which is
    # always started by its full path. Two malloc
    # arenas keep its address space, which RLIMIT_AS counts, close to what it really uses.
    return {"PATH": os.defpath, "LC_ALL": "C", "MALLOC_ARENA_MAX": "2"}


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class _Progress:
    """The latest ``out_time`` ffmpeg's ``-progress pipe:1`` stream reported, in seconds."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.ended = False

    def read(self, stream: IO[str]) -> None:
        for line in stream:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.isdigit():
                self.seconds = int(value) / 1_000_000
            elif key == "progress" and value == "end":
                self.ended = True


def _keep_tail(stream: IO[str], tail: collections.deque[str]) -> None:
    for line in stream:
        tail.append(line.rstrip()[:500])


def run_ffmpeg(
    ffmpeg: str,
    args: Sequence[str],
    *,
    cwd: Path,
    limits: RenderLimits,
    wall_seconds: float | None = None,
    total_seconds: float | None = None,
    on_progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    loglevel: str = "error",
    check: bool = True,
) -> list[str]:
    """Run ffmpeg ``args`` in ``cwd`` under ``limits``; the last lines it wrote to stderr.

    ``on_progress`` (0..1 of ``total_seconds``) and ``should_stop`` are called from the calling
    thread, ``should_stop`` about twice a second. Raises ``RenderStopped`` when asked to stop,
    ``AgentError`` ``render_timeout`` past ``wall_seconds`` (default: the limits') and, with
    ``check``, ``render_failed`` on a non-zero exit. No ffmpeg process is ever left running.
    """
    wall_seconds = limits.wall_seconds if wall_seconds is None else wall_seconds
    command = [
        sys.executable, "-I", "-S", "-c", _LIMITS_SHIM,
        str(os.getpid()), str(limits.memory_bytes), str(limits.max_output_bytes),
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", loglevel,
        *(["-nostats", "-progress", "pipe:1"] if on_progress else []), *args,
    ]
    progress = _Progress()
    tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    proc = subprocess.Popen(  # noqa: S603 - a fixed argument list, never a shell
        command, cwd=cwd, env=_child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    readers = [
        threading.Thread(target=progress.read, args=(proc.stdout,), daemon=True),
        threading.Thread(target=_keep_tail, args=(proc.stderr, tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    started = time.monotonic()
    next_stop_check = started
    reported = -1.0
    try:
        while True:
            try:
                code = proc.wait(timeout=_POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if on_progress and total_seconds and progress.seconds != reported:
                reported = progress.seconds
                on_progress(min(1.0, reported / total_seconds))
            if should_stop and now >= next_stop_check:
                next_stop_check = now + _STOP_POLL_SECONDS
                if should_stop():
                    _kill_group(proc)
                    raise RenderStopped("the render was asked to stop")
            if now - started > wall_seconds:
                _kill_group(proc)
                raise AgentError(
                    "render_timeout",
                    f"The render ran out of time (ffmpeg stopped after {wall_seconds:.0f} s).",
                    retryable=False,
                )
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        for reader in readers:
            reader.join(timeout=5)
    if check and code != 0:
        # RLIMIT_AS shows up as an allocation failure (or a signal) rather than a clear message.
        last = tail[-1] if tail else f"exit status {code}"
        raise AgentError("render_failed", "ffmpeg could not render the film.", retryable=False,
                         detail=last)
    if on_progress and total_seconds:
        on_progress(1.0)
    return list(tail)
