"""A throwaway PostgreSQL server for the tests: a temporary data directory, a free port on
127.0.0.1, fsync off; stopped and removed at the end. Run as the ``postgres`` system user when
the tests run as root (the server refuses root)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator


def find_bin() -> str | None:
    """The folder of ``initdb``/``pg_ctl``: Debian's newest, else whatever is on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.base = tempfile.mkdtemp(prefix="pg", dir="/tmp")
        self.data = os.path.join(self.base, "data")
        self.port = 0
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(f"{self.bindir}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                  "--no-sync", "--encoding=UTF8", "--no-locale")
        for _ in range(5):  # another process may take the port between picking and binding
            self.port = _free_port()
            try:
                self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-l",
                          os.path.join(self.base, "log"), "-w", "-t", "60", "-o",
                          f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
                          "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                          "-c max_connections=200", "start")
                return self
            except subprocess.CalledProcessError:
                continue
        raise RuntimeError(f"PostgreSQL did not start; see {self.base}/log")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        from sqlalchemy import create_engine, text

        name = "t" + uuid.uuid4().hex[:12]
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def benchmark_catalog(arg: str | None) -> Iterator[str | None]:
    """For a benchmark's ``--catalog``: None (SQLite only), a PostgreSQL URL as given, or
    ``auto``: a database on a throwaway local server, stopped at the end."""
    if arg != "auto":
        yield arg or None
        return
    bindir = find_bin()
    if bindir is None:
        raise SystemExit("--catalog auto needs PostgreSQL's server binaries")
    server = PostgresServer(bindir).start()
    try:
        yield server.create_database()
    finally:
        server.stop()
