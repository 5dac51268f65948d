"""Apps that misbehave at the process level: one ignores SIGTERM, one forks a child that lingers."""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI


@contextlib.asynccontextmanager
async def ignore_sigterm(app: FastAPI) -> AsyncIterator[None]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # replaces the server's handler
    yield


def _linger() -> None:
    time.sleep(600)


@contextlib.asynccontextmanager
async def fork_child(app: FastAPI) -> AsyncIterator[None]:
    child = multiprocessing.get_context("fork").Process(target=_linger, daemon=False)
    child.start()
    yield


ignores_sigterm = FastAPI(lifespan=ignore_sigterm)
forks_a_child = FastAPI(lifespan=fork_child)
