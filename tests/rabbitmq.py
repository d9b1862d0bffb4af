"""RabbitMQ for the tests and benches: a private vhost on the machine's server (so parallel runs
never share queues), emptied between platforms, and a private node a bench can crash and start.

The machine's server is at 127.0.0.1:5672 (guest/guest); vhosts are made with ``rabbitmqctl``
(root or the rabbitmq user). ``TEST_AMQP_URL`` names a vhost to use instead, as it is.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kombu import Connection
from kombu.transport.native_delayed_delivery import MAX_LEVEL, level_name

from tests.platform import free_port

RABBITMQ_ADDRESS = ("127.0.0.1", 5672)
CTL_TIMEOUT_S = 60


def rabbitmqctl(*args: str) -> None:
    """Run one ``rabbitmqctl`` command against the machine's server, failing loudly."""
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    try:
        subprocess.run([ctl, "-q", *args], check=True, capture_output=True,
                       timeout=CTL_TIMEOUT_S)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise RuntimeError(
            f"rabbitmqctl {' '.join(args)} failed: the tests need RabbitMQ at "
            f"{RABBITMQ_ADDRESS[0]}:{RABBITMQ_ADDRESS[1]} and rabbitmqctl (or TEST_AMQP_URL): "
            f"{exc} {detail.decode(errors='replace')[:300]}") from exc


@contextmanager
def private_vhost(prefix: str = "lt_test") -> Iterator[str]:
    """A fresh vhost for this run, deleted afterwards; yields its AMQP URL."""
    given = os.environ.get("TEST_AMQP_URL")
    if given:
        yield given
        return
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_ADDRESS[0]}:{RABBITMQ_ADDRESS[1]}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def platform_queue_names() -> list[str]:
    """The job queues and Celery's native delayed delivery levels."""
    from celeryconfig import QUEUE_NAMES

    return [*QUEUE_NAMES, *(level_name(level) for level in range(MAX_LEVEL + 1))]


def delete_platform_queues(url: str) -> None:
    """Delete every queue a platform declares, so the next one starts with none of an earlier
    one's messages (workers declare them again)."""
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in platform_queue_names():
            channel.queue_delete(name)  # a missing queue is not an error on RabbitMQ


def delayed_messages(url: str) -> int:
    """Messages waiting out a countdown in the broker (native delayed delivery's levels)."""
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        total = 0
        for level in range(MAX_LEVEL + 1):
            try:
                total += channel.queue_declare(level_name(level), passive=True).message_count
            except Exception:  # not declared (yet): nothing waits there; the channel is closed
                channel = conn.channel()
        return total


def queue_types(vhost_url: str) -> dict[str, str]:
    """``{queue: type}`` of a vhost of the machine's server, as RabbitMQ reports them."""
    vhost = vhost_url.rsplit("/", 1)[1] or "/"
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    out = subprocess.run([ctl, "-q", "list_queues", "-p", vhost, "name", "type", "durable"],
                         check=True, capture_output=True, text=True, timeout=CTL_TIMEOUT_S)
    types = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] != "name":
            types[parts[0]] = f"{parts[1]} durable={parts[2]}"
    return types


class RabbitMQNode:
    """A private RabbitMQ node on free ports with its own data directory; ``kill`` crashes it
    (SIGKILL) and ``start`` brings it back with what its durable queues held."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"lt-{uuid.uuid4().hex[:8]}@localhost"
        self.work_dir = work_dir
        self.process: subprocess.Popen[bytes] | None = None
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> RabbitMQNode:
        server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin") or shutil.which(
            "rabbitmq-server")
        if server is None:
            raise RuntimeError("rabbitmq-server not found: install RabbitMQ (apt rabbitmq-server)")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work_dir),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.work_dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not the machine server's node name
            "RABBITMQ_MNESIA_BASE": str(self.work_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.work_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.work_dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.work_dir / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        log = (self.work_dir / "server.log").open("ab")
        self.process = subprocess.Popen([server], env=env, cwd=self.work_dir, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.work_dir / 'server.log'}")
            try:
                with Connection(self.url, connect_timeout=1) as conn:
                    conn.connect()
                    return self
            except Exception:  # not accepting AMQP yet
                time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"rabbitmq-server not ready in {timeout}s; see {self.work_dir}")

    def kill(self) -> None:
        """Crash the node: SIGKILL, no chance to close connections or flush anything."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None
        # The port is free again once the kernel has let go of the listener.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    time.sleep(0.1)
            except OSError:
                return

    def stop(self) -> None:
        self.kill()
