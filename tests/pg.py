"""A real, throwaway PostgreSQL server for tests, from the Debian `postgresql` package's binaries."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Below 32768: Linux hands out ports from 32768 up to outgoing connections.
FIRST_PORT = int(os.environ.get("EDUHUB_TEST_PG_PORT", "25432"))
DATABASE = "eduhub"


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)  # in CI a missing service is a failure, never a skip
    pytest.skip(message)


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if not found:
        return None
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)


def _free_port(first: int) -> int:
    for port in range(first, first + 100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {first}..{first + 99} for PostgreSQL")


@contextmanager
def postgres_server(tmp_dir: Path | None = None) -> Iterator[str]:
    """Run a PostgreSQL server on 127.0.0.1 for the duration; yields the SQLAlchemy URL of its `eduhub` database.

    The server runs as the `postgres` OS user when we are root (PostgreSQL refuses root), with
    trust authentication, and is stopped with `pg_ctl stop -m fast` on its own data directory.
    Its files live in a fresh folder under /tmp (pytest's tmp dirs are private to root, out of
    the postgres user's reach); when `tmp_dir` is given the server log is copied there at the end.
    Missing binaries skip the test, or fail it in CI (CI=true).

    Example::

        with postgres_server() as url:
            engine = sqlalchemy.create_engine(url)
    """
    bindir = postgres_bin()
    if bindir is None:
        _unavailable("PostgreSQL is not installed (apt-get install -y postgresql): the PostgreSQL tests need "
                     "/usr/lib/postgresql/<version>/bin/initdb")
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="eduhub-pg-"))
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            _unavailable("the postgres OS user does not exist: PostgreSQL refuses to run as root")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = base / "data", base / "server.log"
    port = _free_port(FIRST_PORT)

    def run(*args: str) -> None:
        result = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C.UTF-8", "--no-sync")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
        started = True
        import psycopg  # noqa: PLC0415 — only the PostgreSQL tests need it

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if started:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        if tmp_dir is not None and log.exists():
            shutil.copy(log, Path(tmp_dir) / "postgresql.log")
        shutil.rmtree(base, ignore_errors=True)
