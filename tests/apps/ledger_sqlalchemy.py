"""
A test app modelled on public FastAPI + SQLAlchemy services on PostgreSQL (an async engine on
the psycopg 3 driver), not on drainspec's reference app: nothing here imports drainspec.

- the engine (`DATABASE_URL`, turned into `postgresql+psycopg://`) is created when the module
  is imported, as most such services do, and disposed at the end of the lifespan;
- `GET /balance?seconds=S` holds a connection: a query, S seconds of work, a query;
- `POST /entries/{entry_id}?post_seconds=S` writes an entry, answers, and posts it S seconds
  later in a BackgroundTask.

`LEDGER_DISPOSE_ON_SIGTERM=1` is the mistake: a SIGTERM handler disposes the engine "to shut
down cleanly", then hands the signal on to the server. The requests still in flight and the
background postings go on, and SQLAlchemy silently opens new connections for them on the
engine the app believes closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SCHEMA = "CREATE TABLE IF NOT EXISTS entries (id TEXT PRIMARY KEY, posted BOOLEAN NOT NULL DEFAULT FALSE)"


def engine_url() -> str:
    url = os.environ["DATABASE_URL"]
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


engine = create_async_engine(engine_url(), pool_size=5)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.execute(text(SCHEMA))
    app.state.engine = engine
    if os.environ.get("LEDGER_DISPOSE_ON_SIGTERM"):
        _dispose_on_sigterm(engine)
    try:
        yield
    finally:
        await engine.dispose()


def _dispose_on_sigterm(db: AsyncEngine) -> None:
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)

    def dispose_then_stop(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(db.dispose()))
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, dispose_then_stop)


app = FastAPI(lifespan=lifespan)


def engine_of(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


@app.get("/balance")
async def balance(request: Request, seconds: float = 0.0) -> dict[str, Any]:
    async with engine_of(request).connect() as conn:
        entries = (await conn.execute(text("SELECT count(*) FROM entries"))).scalar_one()
        await asyncio.sleep(seconds)
        posted = (await conn.execute(text("SELECT count(*) FROM entries WHERE posted"))).scalar_one()
    return {"entries": entries, "posted": posted}


async def post_entry(engine: AsyncEngine, entry_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE entries SET posted = TRUE WHERE id = :id"), {"id": entry_id})


@app.post("/entries/{entry_id}", status_code=201)
async def add_entry(entry_id: str, request: Request, background: BackgroundTasks, post_seconds: float = 0.5) -> dict:
    engine = engine_of(request)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO entries (id) VALUES (:id) ON CONFLICT DO NOTHING"), {"id": entry_id})
    background.add_task(post_entry, engine, entry_id, post_seconds)
    return {"id": entry_id}
