"""
The reference service: a FastAPI app with a real connection pool, the shape of many production
services. drainspec's default scenario runs against it, and its faulty variants
(`app/variants/`) each add one real shutdown mistake to it.

Endpoints:

- `GET /slow?seconds=S`: holds a pool connection for S seconds (async endpoint);
- `GET /slow-sync?seconds=S`: the same in a `def` endpoint, so in a worker thread;
- `POST /register/{name}?deliver_seconds=S`: writes a user and two outbox rows in one
  transaction, then queues two background tasks that deliver them: an async one that takes
  S seconds, then a sync one queued behind it;
- `GET /healthz`, `GET /readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from sqlalchemy import insert, text, update

from app.db import Database
from app.models import outbox, users

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]
Deliver = Callable[[Database, int, float], Awaitable[None]]

router = APIRouter()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool at startup; close it at teardown, which must come after the drain."""
    db = Database()
    await db.open()
    app.state.db = db
    try:
        yield
    finally:
        await db.close()


async def deliver(db: Database, outbox_id: int, seconds: float) -> None:
    """Deliver one outbox message: slow work (S seconds), then mark it delivered."""
    await asyncio.sleep(seconds)
    await mark_delivered(db, outbox_id)


async def mark_delivered(db: Database, outbox_id: int) -> None:
    async with db.connection() as conn:
        await conn.execute(
            update(outbox).where(outbox.c.id == outbox_id).values(delivered_at=text("CURRENT_TIMESTAMP"))
        )


def deliver_sync(db: Database, outbox_id: int) -> None:
    """The same delivery from sync code, which Starlette runs in a worker thread."""
    with db.sync_connection() as conn:
        conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(delivered_at=text("CURRENT_TIMESTAMP")))


def create_app(*, lifespan: Lifespan = lifespan, deliver: Deliver = deliver) -> FastAPI:
    app = FastAPI(title="drainspec reference service", lifespan=lifespan)
    app.state.deliver = deliver
    app.state.ready = True
    app.include_router(router)
    return app


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Any:
    from fastapi.responses import JSONResponse

    ready = bool(request.app.state.ready)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/slow")
async def slow(request: Request, seconds: float = 1.0) -> dict[str, float]:
    async with database(request).connection() as conn:
        await conn.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)
        await conn.execute(text("SELECT 1"))
    return {"slept": seconds}


@router.get("/slow-sync")
def slow_sync(request: Request, seconds: float = 1.0) -> dict[str, float]:
    with database(request).sync_connection() as conn:
        conn.execute(text("SELECT 1"))
        time.sleep(seconds)
        conn.execute(text("SELECT 1"))
    return {"slept": seconds}


def _primary_key(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


@router.post("/register/{name}")
async def register(
    name: str, request: Request, background_tasks: BackgroundTasks, deliver_seconds: float = 1.0
) -> dict[str, int]:
    db = database(request)
    async with db.connection() as conn:
        result = await conn.execute(insert(users).values(name=name))
        user_id = _primary_key(result)
        outbox_ids = []
        for message in (f"welcome {name}", f"tell admins about {name}"):
            row = await conn.execute(insert(outbox).values(user_id=user_id, message=message))
            outbox_ids.append(_primary_key(row))
    background_tasks.add_task(request.app.state.deliver, db, outbox_ids[0], deliver_seconds)
    background_tasks.add_task(deliver_sync, db, outbox_ids[1])
    return {"id": user_id}


app = create_app()
