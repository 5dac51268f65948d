"""
A test app modelled on public FastAPI services that talk to PostgreSQL through an asyncpg pool
and no ORM, not on drainspec's reference app: nothing here imports drainspec.

- the pool (`DATABASE_URL`) opens in the lifespan and closes at its end;
- `GET /orders?seconds=S` holds a pooled connection: a query, S seconds of work, a query;
- `POST /orders/{order_id}?ship_seconds=S` writes the order, answers, and ships it S seconds
  later in a BackgroundTask (an UPDATE through the pool).

`SHOP_LEAK_POOL=1` is the mistake: the lifespan never closes the pool (the `shutdown` half of
a `startup` hook nobody wrote), so its connections die with the process instead of closing.
`SHOP_LEAK_POOL=unawaited` is the same leak as public services write it: `pool.close()` without
`await`, a coroutine made and dropped; Python only warns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from fastapi import BackgroundTasks, FastAPI, Request

SCHEMA = "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, shipped BOOLEAN NOT NULL DEFAULT FALSE)"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=6)
    async with pool.acquire() as conn:
        await conn.execute(SCHEMA)
    app.state.pool = pool
    try:
        yield
    finally:
        leak = os.environ.get("SHOP_LEAK_POOL")
        if leak == "unawaited":
            pool.close()  # no await: the coroutine is made and dropped, the pool stays open
        elif not leak:
            await pool.close()


app = FastAPI(lifespan=lifespan)


def pool_of(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


@app.get("/orders")
async def orders(request: Request, seconds: float = 0.0) -> dict[str, Any]:
    async with pool_of(request).acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM orders")
        await asyncio.sleep(seconds)
        shipped = await conn.fetchval("SELECT count(*) FROM orders WHERE shipped")
    return {"orders": count, "shipped": shipped}


async def ship(pool: asyncpg.Pool, order_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    await pool.execute("UPDATE orders SET shipped = TRUE WHERE id = $1", order_id)


@app.post("/orders/{order_id}", status_code=201)
async def place(order_id: str, request: Request, background: BackgroundTasks, ship_seconds: float = 0.5) -> dict:
    pool = pool_of(request)
    await pool.execute("INSERT INTO orders (id) VALUES ($1) ON CONFLICT DO NOTHING", order_id)
    background.add_task(ship, pool, order_id, ship_seconds)
    return {"id": order_id}
