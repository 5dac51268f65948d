"""
An app that hashes a password the slow way inside its async handler, as many do with a sync
hashing library: every `POST /users` blocks the event loop for 0.3 s, whenever the stop signal
comes. Then it waits `seconds` for its database.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from typing import Any

from tests.apps.plain import app as plain


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] != "/users":
        await plain(scope, receive, send)
        return
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
    time.sleep(0.3)  # the hash, on the loop
    await asyncio.sleep(float(query.get("seconds", ["0"])[0]))
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"created"})
