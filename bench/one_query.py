"""
The app `bench/instrumentation.py` measures: one endpoint, `GET /one`, that runs one query.

`BENCH_DATABASE_URL` picks the database: unset, a SQLAlchemy async engine on a SQLite file in the
run directory (what `make bench` has everywhere); `postgresql://...`, an asyncpg pool on that
server. Like any app drainspec checks, it knows nothing of drainspec.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

URL = os.environ.get("BENCH_DATABASE_URL", "")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if URL.startswith("postgresql://"):
        import asyncpg  # type: ignore[import-untyped]

        pool = await asyncpg.create_pool(URL, min_size=4, max_size=8)
        app.state.query = lambda: pool.fetchval("SELECT 1")
        try:
            yield
        finally:
            await pool.close()
    else:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        path = os.path.join(os.environ.get("DRAINSPEC_RUN_DIR", "."), "bench.db")
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

        async def query() -> Any:
            async with engine.connect() as conn:
                return (await conn.execute(text("SELECT 1"))).scalar_one()

        app.state.query = query
        try:
            yield
        finally:
            await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/one")
async def one(request: Request) -> dict[str, Any]:
    return {"one": await request.app.state.query()}
