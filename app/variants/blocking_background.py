"""
A background delivery that calls `time.sleep` inside an `async def`: it blocks the event loop,
so every other request and the server's own shutdown stall behind it.
"""

from __future__ import annotations

import time

from app.db import Database
from app.main import create_app, mark_delivered

FAILS = frozenset({"loop-not-blocked"})


async def deliver(db: Database, outbox_id: int, seconds: float) -> None:
    time.sleep(seconds)  # the mistake: a blocking call on the event loop
    await mark_delivered(db, outbox_id)


app = create_app(deliver=deliver)
