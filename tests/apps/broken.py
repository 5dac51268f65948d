"""Apps that never serve: one crashes at startup, one never finishes starting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI


@contextlib.asynccontextmanager
async def crashing_lifespan(app: FastAPI) -> AsyncIterator[None]:
    raise RuntimeError("cannot reach the database at startup")
    yield  # pragma: no cover


@contextlib.asynccontextmanager
async def hanging_lifespan(app: FastAPI) -> AsyncIterator[None]:
    await asyncio.Event().wait()  # startup that never completes
    yield  # pragma: no cover


crashes_at_startup = FastAPI(lifespan=crashing_lifespan)
never_ready = FastAPI(lifespan=hanging_lifespan)
not_an_app = 42


def factory_raises() -> FastAPI:
    """An app factory that fails before it makes an app, as one reading unset settings does."""
    raise RuntimeError("SECRET_KEY is not set")


def factory_returns_none() -> None:
    """An app factory that forgot its `return`."""


def wsgi_app(environ: dict[str, object], start_response: object) -> list[bytes]:
    """A WSGI app (Flask's shape), handed to an ASGI server."""
    return [b"hello"]


def _reserve(order: str) -> None:
    """The app's own code, a few frames below its endpoint: where the preflight says it raised."""
    raise LookupError(f"no stock for {order} in postgresql://shop:hunter2@127.0.0.1/stock")


fails_its_requests = FastAPI()


@fails_its_requests.post("/orders")
async def place_order() -> dict[str, str]:
    _reserve("order-1")
    return {"placed": "order-1"}  # pragma: no cover
