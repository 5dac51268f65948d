"""
A preStop hook (`GET /draining?seconds=2`: flag the app, then hold the hook for the propagation
delay) tells the app it is going away, and the app then answers every request with 503, not just
`/readyz`, while the Service still routes new requests to it.

The right reaction is the other way round: keep serving normally (optionally fail only the
readiness check) until the stop signal. Only a replay behind a router shows this mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from app.main import create_app

FAILS = frozenset({"no-refused-while-routed"})  # the 503s to new requests while routed are the mistake

app = create_app()
app.state.draining = False


@app.get("/draining")
async def draining(request: Request, seconds: float = 0.0) -> dict[str, bool]:
    request.app.state.draining = True
    await asyncio.sleep(seconds)  # the hook holds the stop signal back, as a preStop delay should
    return {"draining": True}


@app.middleware("http")
async def refuse_when_draining(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    if request.app.state.draining and request.url.path != "/draining":
        return JSONResponse({"detail": "shutting down"}, status_code=503)  # the mistake
    return await call_next(request)
