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
    """Counts ASGI calls in progress; Starlette's background tasks run inside them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


def exit_when_drained(inflight: InFlight) -> None:
    deadline = time.monotonic() + DRAIN_LIMIT_SECONDS
    while inflight.count and time.monotonic() < deadline:
        time.sleep(0.005)
    os._exit(0)  # the mistake: teardown never runs


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database()
    await db.open()
    app.state.db = db
    server_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=exit_when_drained, args=(inflight,), daemon=True).start()
        if callable(server_handler):
            server_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        await db.close()


inflight = InFlight(create_app(lifespan=lifespan))
app = inflight
