"""
The reference service's data-integrity check, run by the `data-integrity` verdict after the
server has exited: every registration the client saw succeed (2xx) is in the database whole,
the user row together with both of its outbox rows.
"""

from __future__ import annotations

from sqlalchemy import create_engine, func, select

from app.db import database_url, sync_url
from app.models import outbox, users
from chaos.integrity import IntegrityRun

OUTBOX_ROWS_PER_USER = 2


def check(run: IntegrityRun) -> list[str]:
    """Problems found, one line each; an empty list means the data is whole."""
    confirmed = [write.id for write in run.confirmed if write.path.startswith("/register/")]
    if not confirmed:
        return []
    engine = create_engine(sync_url(database_url(run.environ)))
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
