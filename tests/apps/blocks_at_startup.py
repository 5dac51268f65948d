"""
The reference service with a lifespan startup that blocks its event loop before it serves
anything (a sync client reading its certificates, a model loaded from disk): a correct app,
unless the stop signal comes while the loop is blocked. `BLOCKS_AT_STARTUP_SECONDS` (0.5).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from app.main import create_app
from app.main import lifespan as reference_lifespan


def load_certificates() -> None:
    time.sleep(float(os.environ.get("BLOCKS_AT_STARTUP_SECONDS", "0.5")))  # on the loop, at startup


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    load_certificates()
    async with reference_lifespan(app):
        yield


app = create_app(lifespan=lifespan)
