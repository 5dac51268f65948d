"""
A script that disposes of its engine after its server returns, in a `finally` around
`await server.serve()`, where its author expects shutdown code to run. uvicorn re-raises the stop
signal once it has shut down (since 0.29), with Python's default action for it back in place:
the process dies of SIGTERM inside `serve()`, and the `finally` never runs.

- no option: the engine disposed in that `finally` (never, on SIGTERM);
- `--in-lifespan`: the same engine disposed by the app's lifespan, which runs before uvicorn
  re-raises the signal.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("sqlite+aiosqlite:///:memory:")
IN_LIFESPAN = "--in-lifespan" in sys.argv


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if IN_LIFESPAN:
        await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/work")
async def work(seconds: float = 0.3) -> dict[str, bool]:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    await asyncio.sleep(seconds)
    return {"ok": True}


async def main() -> None:
    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=8000))
    try:
        await server.serve()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
