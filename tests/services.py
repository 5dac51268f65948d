"""
Real services for the tests, started by the suite itself on 127.0.0.1 and stopped afterwards:
a PostgreSQL server (initdb + pg_ctl on a private data directory and a free port) and a Redis
server (`redis-server --save ''` on a free port). Each is session-scoped (one per xdist worker)
and protected by a password, so the tests can check that no report ever shows it.

Neither is a descendant of the test that first needs it: PostgreSQL detaches from `pg_ctl` and
Redis daemonizes, both reparented to init, so the suite's `no_orphans` check (a test's own
descendants) never takes a server shared by the session for a process the test leaked. Each is
stopped by its fixture at the end of the session, through its data directory or pid file.
When the binaries are missing the tests that need them are skipped with the reason (CI
installs them: Debian's `postgresql-15` and `redis-server`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from chaos.target import free_port

POSTGRES_PASSWORD = "pg-secret-for-tests"
REDIS_PASSWORD = "redis-secret-for-tests"
POSTGRES_DATABASE = "shop"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Service:
    """A running server: its URL (with its password) and where it listens."""

    url: str
    host: str
    port: int
    password: str


def postgres_bindir() -> Path | None:
    """`DRAINSPEC_PG_BIN`, else the newest /usr/lib/postgresql/*/bin, else pg_ctl on PATH."""
    candidates: list[Path] = []
    if os.environ.get("DRAINSPEC_PG_BIN"):
        candidates.append(Path(os.environ["DRAINSPEC_PG_BIN"]))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "pg_ctl").exists() and (bindir / "initdb").exists():
            return bindir
    return None


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    if runuser is None:
        pytest.skip("running as root and runuser is missing: PostgreSQL cannot be started")
    return [runuser, "-u", "postgres", "--"]


def _run(argv: list[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Service]:
    """A PostgreSQL server of our own, with a database `shop` and the password `POSTGRES_PASSWORD`."""
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl in /usr/lib/postgresql/*/bin; set DRAINSPEC_PG_BIN)")
    prefix = _as_postgres_user()
    home = Path(tempfile.mkdtemp(prefix="drainspec-pg-"))
    data, log, pwfile = home / "data", home / "server.log", home / "password"
    pwfile.write_text(POSTGRES_PASSWORD + "\n")
    if prefix:
        for path in (home, pwfile):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        _run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
            "initdb",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c shared_buffers=16MB -c max_connections=60"
        )
        _run([*pg_ctl, "-l", str(log), "-w", "-t", str(int(START_TIMEOUT)), "-o", options, "start"], "pg_ctl start")
        started = True
        env = {**os.environ, "PGPASSWORD": POSTGRES_PASSWORD}
        _run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", POSTGRES_DATABASE],
            "createdb",
            env=env,
        )
        url = f"postgresql://postgres:{POSTGRES_PASSWORD}@127.0.0.1:{port}/{POSTGRES_DATABASE}"
        yield Service(url=url, host="127.0.0.1", port=port, password=POSTGRES_PASSWORD)
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([*pg_ctl, "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Service]:
    """A Redis server of our own (no persistence), with the password `REDIS_PASSWORD`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    home = Path(tempfile.mkdtemp(prefix="drainspec-redis-"))
    pidfile = home / "redis.pid"
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "yes", "--pidfile", str(pidfile), "--logfile", str(home / "redis.log"),
            "--dir", str(home), "--requirepass", REDIS_PASSWORD, "--loglevel", "warning"]  # fmt: skip
    try:
        _run(argv, "redis-server")
        _wait_for_redis(port, home / "redis.log")
        yield Service(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", "127.0.0.1", port, REDIS_PASSWORD)
    finally:
        _stop(pidfile)
        shutil.rmtree(home, ignore_errors=True)


def _stop(pidfile: Path) -> None:
    """SIGTERM the daemon named by its pid file, and wait until it is gone (SIGKILL after 10 s)."""
    try:
        process = psutil.Process(int(pidfile.read_text().strip()))
    except (OSError, ValueError, psutil.Error):
        return
    with contextlib.suppress(psutil.Error):
        process.terminate()
        _, alive = psutil.wait_procs([process], timeout=10)
        for left in alive:
            left.kill()


def _wait_for_redis(port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"AUTH {REDIS_PASSWORD}\r\nPING\r\n".encode())
            if b"+PONG" in _read_some(sock):
                return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
    raise RuntimeError(f"redis-server did not answer on port {port} within {START_TIMEOUT:g}s: {tail.strip()}")


def _read_some(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while b"PONG" not in data and b"ERR" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
    return data
