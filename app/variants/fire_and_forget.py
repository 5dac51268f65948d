"""
Delivers with `asyncio.create_task` "so the background task returns at once". Nobody awaits
the spawned task: the server sees the request as finished, tears down while deliveries are
still pending, and the process dies with them.
"""

from __future__ import annotations

import asyncio

from app.db import Database
from app.main import create_app
from app.main import deliver as deliver_now

FAILS = frozenset({"teardown-after-drain", "background-fate"})
_pending: set[asyncio.Task[None]] = set()


async def deliver(db: Database, outbox_id: int, seconds: float) -> None:
    task = asyncio.create_task(deliver_now(db, outbox_id, seconds))  # the mistake
    _pending.add(task)
    task.add_done_callback(_pending.discard)


app = create_app(deliver=deliver)
