"""
The reference service's data-integrity check, run by the `data-integrity` verdict after the
server has exited: every registration the client saw succeed (2xx) is in the database whole,
the user row together with both of its outbox rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from sqlalchemy import create_engine, func, select

from app.db import database_url, sync_url
from app.models import outbox, users
from chaos.journal import Event, Kind

REGISTER = re.compile(r"^/register/(?P<name>[^/?]+)")
OUTBOX_ROWS_PER_USER = 2


def check(events: Sequence[Event], environ: Mapping[str, str]) -> list[str]:
    """Problems found, one line each; an empty list means the data is whole."""
    confirmed = []
    for event in events:
        if event.kind != Kind.CLIENT_REQUEST:
            continue
        match = REGISTER.match(event.get("path", ""))
        status = event.get("status")
        if match and isinstance(status, int) and 200 <= status < 300:
            confirmed.append(match["name"])
    if not confirmed:
        return []
    engine = create_engine(sync_url(database_url(environ)))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(users.c.name, func.count(outbox.c.id))
                .select_from(users.outerjoin(outbox))
                .where(users.c.name.in_(confirmed))
                .group_by(users.c.name)
            ).all()
    finally:
        engine.dispose()
    found = {name: count for name, count in rows}
    problems = []
    for name in confirmed:
        if name not in found:
            problems.append(f"user {name!r} was confirmed with 2xx but is not in the database")
        elif found[name] != OUTBOX_ROWS_PER_USER:
            problems.append(f"user {name!r} has {found[name]} outbox rows, expected {OUTBOX_ROWS_PER_USER}")
    return problems
