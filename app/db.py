"""
The reference service's connection pool: a SQLAlchemy async engine, and a sync engine on the
same database for `def` endpoints and sync background tasks (they run in threads).

Closing the pool is the teardown that must come after the drain. drainspec's probe sees both
engines by itself (their creation, `dispose()`, every statement and who ran it), so nothing here
reports them. What it cannot see is this app's own rule: once closed, the pool refuses new
checkouts before SQLAlchemy is ever reached. That refusal is recorded with `chaos.record`, so the
verdict sees it even when the error is swallowed somewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator, Mapping

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from chaos import record
from chaos.journal import Kind

DEFAULT_FILE = "reference.db"


class PoolClosedError(RuntimeError):
    """The pool was used after the app closed it."""


def database_url(environ: Mapping[str, str] = os.environ) -> str:
    """`DATABASE_URL`, else a SQLite file in the run's private directory (or the cwd)."""
    url = environ.get("DATABASE_URL")
    if url:
        return url
    directory = environ.get("DRAINSPEC_RUN_DIR", ".")
    return f"sqlite+aiosqlite:///{os.path.join(directory, DEFAULT_FILE)}"


def sync_url(url: str) -> str:
    """The same database through a sync driver."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")


class Database:
    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        self.engine: AsyncEngine | None = None
        self.sync_engine: Engine | None = None
        self.closed = False

    async def open(self) -> None:
        sqlite = self.url.startswith("sqlite")
        connect_args = {"timeout": 30} if sqlite else {}
        self.engine = create_async_engine(self.url, connect_args=connect_args)
        self.sync_engine = create_engine(sync_url(self.url), connect_args=connect_args)
        if sqlite:
            for engine in (self.engine.sync_engine, self.sync_engine):
                event.listen(engine, "connect", _sqlite_pragmas)
        async with _one_worker_at_a_time(self.url), self.engine.begin() as conn:
            await conn.run_sync(create_schema)
        self.closed = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.engine is not None:
            await self.engine.dispose()
        if self.sync_engine is not None:
            self.sync_engine.dispose()

    def _check_open(self, use: str) -> None:
        if self.closed or self.engine is None or self.sync_engine is None:
            record(Kind.POOL_USE_AFTER_CLOSE, pool="main", use=use)
            raise PoolClosedError(f"the pool is closed ({use})")

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the async pool."""
        self._check_open("async checkout")
        assert self.engine is not None
        async with self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def sync_connection(self) -> Iterator[Connection]:
        """A transaction on the sync pool, for code running in a worker thread."""
        self._check_open("sync checkout")
        assert self.sync_engine is not None
        with self.sync_engine.begin() as conn:
            yield conn


@contextlib.asynccontextmanager
async def _one_worker_at_a_time(url: str) -> AsyncIterator[None]:
    """
    Hold a lock beside a SQLite file while its first connection switches it to WAL and creates
    the schema. Workers start at once, and switching the journal mode takes an exclusive lock
    that SQLite refuses at once ("database is locked", no busy wait) while another connection is
    doing the same. Once the file is in WAL mode the switch is a no-op.
    """
    database = make_url(url).database if url.startswith("sqlite") else None
    if not database or database == ":memory:":
        yield
        return
    fd = os.open(f"{database}.init-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_schema(conn: Connection) -> None:
    """`IF NOT EXISTS` DDL: several workers start at once and must not race on the schema."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    from app.models import metadata

    for table in metadata.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in table.indexes:
            conn.execute(CreateIndex(index, if_not_exists=True))
