"""
Exits with `os._exit` as soon as in-flight work has drained, so the lifespan teardown (closing
the pool, flushing buffers) never runs. Hand-rolled "wait for requests, then exit" handlers do
exactly this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

from fastapi import FastAPI

from app.db import Database
from app.main import create_app

FAILS = frozenset({"teardown-ran", "resources-closed"})
DRAIN_LIMIT_SECONDS = 30.0


class InFlight:
    """
    Counts ASGI calls in progress (Starlette's background tasks run inside them); once the stop
    signal came, the call that brings the count to zero exits the process on the spot. Exiting
    there, in the loop, before the call even returns, comes before the server could begin its
    lifespan shutdown: a thread polling the count raced the server for it, and sometimes lost.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.stopping = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.stopping and not self.count:
                os._exit(0)  # the mistake: teardown never runs


def exit_after_the_drain_limit() -> None:
    time.sleep(DRAIN_LIMIT_SECONDS)
    os._exit(0)  # work that never drains: the same mistake, later


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database()
    await db.open()
    app.state.db = db
    server_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        inflight.stopping = True
        if not inflight.count:
            os._exit(0)  # nothing in flight: the mistake at once
        threading.Thread(target=exit_after_the_drain_limit, daemon=True).start()
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        await db.close()


inflight = InFlight(create_app(lifespan=lifespan))
app = inflight
