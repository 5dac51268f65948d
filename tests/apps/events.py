"""
Streams that do not end on their own.

`/events` is an endless event stream (text/event-stream) that ends when the server begins to
shut down, the way sse-starlette's `EventSourceResponse` does it: uvicorn's exit handler is
wrapped, and the stream, told, sends a farewell and ends. `/feed` is an endless plain-text feed
that never ends at all. `/stalled` announces a length and stops short of it: not a stream, an
answer that never arrives whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

TICK_SECONDS = 0.05
stopping = False  # set from uvicorn's signal handler; read by every stream at each tick

_handle_exit = uvicorn.Server.handle_exit


def _told_to_exit(self: uvicorn.Server, sig: int, frame: FrameType | None) -> None:
    global stopping
    stopping = True
    _handle_exit(self, sig, frame)


uvicorn.Server.handle_exit = _told_to_exit  # type: ignore[method-assign]

app = FastAPI()


async def _ticks() -> AsyncIterator[str]:
    count = 0
    while not stopping:
        count += 1
        yield f"id: {count}\ndata: tick {count}\n\n"
        await asyncio.sleep(TICK_SECONDS)
    yield "event: shutdown\ndata: goodbye\n\n"


async def _forever() -> AsyncIterator[str]:
    while True:
        yield "still here\n"
        await asyncio.sleep(TICK_SECONDS)


@app.get("/events")
async def events() -> Any:
    return StreamingResponse(_ticks(), media_type="text/event-stream")


@app.get("/feed")
async def feed() -> Any:
    return StreamingResponse(_forever(), media_type="text/plain")


async def _short_of_its_length() -> AsyncIterator[str]:
    yield "the first ten"
    await asyncio.Event().wait()


@app.get("/stalled")
async def stalled() -> Any:
    return StreamingResponse(_short_of_its_length(), media_type="text/plain", headers={"content-length": "100"})
