"""
Closes the pool from a SIGTERM handler, before the server has drained.

A common way to "shut down cleanly": hook SIGTERM, close resources, then hand the signal on to
the server. Requests still in flight finish on connections checked out before the close, and
the background deliveries find the pool closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from types import FrameType

from fastapi import FastAPI

from app.db import Database
from app.main import create_app

FAILS = frozenset({"no-use-after-close", "teardown-after-drain", "background-fate"})


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database()
    await db.open()
    app.state.db = db
    loop = asyncio.get_running_loop()
    server_handler = signal.getsignal(signal.SIGTERM)

    def close_pool_then_stop(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(lambda: loop.create_task(db.close()))
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, close_pool_then_stop)
    try:
        yield
    finally:
        await db.close()


app = create_app(lifespan=lifespan)
