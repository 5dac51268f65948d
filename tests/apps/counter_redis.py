"""
A test app modelled on public FastAPI services that keep counters and events in Redis through
`redis.asyncio`, not on drainspec's reference app: nothing here imports drainspec.

- the client (`REDIS_URL`, with its own connection pool) opens in the lifespan and is closed
  (`aclose`) at its end;
- `GET /visits?seconds=S` counts a visit, works S seconds, and reads the count back;
- `POST /events/{event_id}?seconds=S` queues an event, answers, and marks it handled S seconds
  later in a BackgroundTask.

`COUNTER_CLOSE_ON_SIGTERM=1` is the mistake: a SIGTERM handler closes the client before the
server has drained. redis-py raises nothing: the next command opens a new connection on the
pool the app has closed, and the work in flight carries on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import redis.asyncio as redis
from fastapi import BackgroundTasks, FastAPI, Request


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    client = redis.from_url(os.environ["REDIS_URL"])
    await client.ping()
    app.state.redis = client
    if os.environ.get("COUNTER_CLOSE_ON_SIGTERM"):
        _close_on_sigterm(client)
    try:
        yield
    finally:
        await client.aclose()


def _close_on_sigterm(client: redis.Redis) -> None:
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)

    def close_then_stop(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(client.aclose()))
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, close_then_stop)


app = FastAPI(lifespan=lifespan)


def redis_of(request: Request) -> redis.Redis:
    return request.app.state.redis  # type: ignore[no-any-return]


@app.get("/visits")
async def visits(request: Request, seconds: float = 0.0) -> dict[str, Any]:
    client = redis_of(request)
    await client.incr("visits")
    await asyncio.sleep(seconds)
    return {"visits": int(await client.get("visits") or 0)}


async def handle(client: redis.Redis, event_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    async with client.pipeline(transaction=True) as pipe:
        await pipe.lrem("events:pending", 1, event_id).set(f"events:{event_id}", "handled").execute()


@app.post("/events/{event_id}", status_code=202)
async def queue_event(event_id: str, request: Request, background: BackgroundTasks, seconds: float = 0.5) -> dict:
    client = redis_of(request)
    await client.lpush("events:pending", event_id)
    background.add_task(handle, client, event_id, seconds)
    return {"id": event_id}
