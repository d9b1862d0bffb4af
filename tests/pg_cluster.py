"""A private PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free port, which a test or a
bench crashes, stops and starts again: the shared server on 5432 must never go down."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from models.db import normalize_database_url
from tests.platform import free_port


def postgres_bin_dir() -> Path:
    """Where initdb and pg_ctl live: ``PG_BIN_DIR``, else the newest /usr/lib/postgresql/*/bin,
    else the directory of ``pg_ctl`` on the PATH."""
    configured = os.environ.get("PG_BIN_DIR")
    if configured:
        return Path(configured)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda path: int(Path(path).parent.name))
    if candidates:
        return Path(candidates[-1])
    found = shutil.which("pg_ctl")
    if found is None:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl not found: install postgresql or set "
                           "PG_BIN_DIR")
    return Path(found).parent


class PostgresCluster:
    """``start()`` the first time runs initdb; ``crash()`` is ``pg_ctl stop -m immediate`` (what a
    crashed server looks like to its clients), ``start()`` brings it back on the same port.

    PostgreSQL refuses to run as root: when the tests run as root, every command runs as the
    ``postgres`` user, which owns the cluster's directory.
    """

    def __init__(self, *, max_connections: int = 100) -> None:
        self.port = free_port()
        self.bin_dir = postgres_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="lifetales-pg-"))
        self.data_dir = self.dir / "data"
        self.max_connections = max_connections
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, user="postgres")

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        # The cluster's commands may not read the caller's working directory (root's).
        subprocess.run([*prefix, str(self.bin_dir / command[0]), *command[1:]], cwd=self.dir,
                       check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def start(self) -> PostgresCluster:
        if not self.data_dir.exists():
            self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   f"-c max_connections={self.max_connections} -c fsync=off")
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options,
                  "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start")
        return self

    def crash(self) -> None:
        """Stop at once, as a crash would: clients' connections are cut mid-transaction."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def restart(self, downtime_s: float) -> float:
        """Crash, stay down ``downtime_s``, start again; returns when it accepts connections."""
        self.crash()
        time.sleep(downtime_s)
        started = time.monotonic()
        self.start()
        return time.monotonic() - started

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists()

    def execute(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser, outside any transaction (CREATE DATABASE & co.)."""
        engine = create_engine(normalize_database_url(self.url(database)),
                               isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop()
            except subprocess.SubprocessError:
                self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
