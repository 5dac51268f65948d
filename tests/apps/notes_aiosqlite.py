"""
A notes service on aiosqlite directly, with no SQLAlchemy in between (as small services do):
its connection is opened by the lifespan and closed by its teardown, and no hook of drainspec's
sees it. `GET /notes?seconds=S` reads the notes, then takes S seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiosqlite
from fastapi import FastAPI, Request


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.db = await aiosqlite.connect(":memory:")
    await app.state.db.execute("CREATE TABLE notes (text TEXT)")
    try:
        yield
    finally:
        await app.state.db.close()


app = FastAPI(lifespan=lifespan)


@app.get("/notes")
async def notes(request: Request, seconds: float = 0) -> dict[str, int]:
    async with request.app.state.db.execute("SELECT count(*) FROM notes") as cursor:
        (count,) = await cursor.fetchone()
    await asyncio.sleep(seconds)
    return {"notes": count}
