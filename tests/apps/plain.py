"""Bare ASGI apps with no framework and no slow endpoint: drainspec must still drive them."""

from __future__ import annotations

from typing import Any


async def hello(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Speaks lifespan."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await hello(send)


async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Rejects the lifespan scope, as many hand-written apps do."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']!r}")
    await hello(send)


def create_app() -> Any:
    """An app factory (`uvicorn --factory tests.apps.plain:create_app`): the app speaking lifespan."""
    return app
