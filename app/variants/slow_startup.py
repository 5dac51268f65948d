"""
A startup that takes longer than the grace period (warming a cache from a slow backend after
the pool is open): a pod deleted while it starts (a superseded rollout, a scale-down) is
SIGKILLed in the middle of it, and the pool it had opened is never closed. Judged with the
signal during startup (`--signal-at startup`); the reference app passes the same scenario.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.db import Database
from app.main import create_app

FAILS = frozenset({"within-grace", "teardown-ran", "resources-closed"})
WARM_UP_SECONDS = float(os.environ.get("REFERENCE_WARM_UP_SECONDS", "30"))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database()
    await db.open()
    app.state.db = db
    await asyncio.sleep(WARM_UP_SECONDS)  # the mistake: unbounded work in startup, pool already open
    try:
        yield
    finally:
        await db.close()


app = create_app(lifespan=lifespan)
