"""
A teardown that takes longer than the grace period leaves for it (a flush to a slow backend,
a long `pool.close()` timeout): the orchestrator SIGKILLs the process in the middle of it.
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
TEARDOWN_SECONDS = float(os.environ.get("REFERENCE_TEARDOWN_SECONDS", "30"))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db = Database()
    await db.open()
    app.state.db = db
    try:
        yield
    finally:
        await asyncio.sleep(TEARDOWN_SECONDS)  # the mistake: unbounded work in teardown
        await db.close()


app = create_app(lifespan=lifespan)
