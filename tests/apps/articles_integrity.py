"""
Integrity checks for `tests.apps.articles`, written as users of an async stack write them:
with `asyncio.run` and the async driver. `check` finds every confirmed article; `crashes` is a
broken check (drainspec must report it as one, not as a data verdict).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from chaos.integrity import IntegrityRun


def check(run: IntegrityRun) -> list[str]:
    return asyncio.run(_missing(run))


async def _missing(run: IntegrityRun) -> list[str]:
    slugs = [write.id for write in run.confirmed if write.method == "POST"]
    directory = run.environ.get("DRAINSPEC_RUN_DIR", ".")
    engine = create_async_engine(f"sqlite+aiosqlite:///{directory}/articles.db")
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT slug FROM articles"))).scalars().all()
    finally:
        await engine.dispose()
    found = set(rows)
    return [
        f"article {slug!r} was confirmed with 201 but is not in the database" for slug in slugs if slug not in found
    ]


async def crashes(run: IntegrityRun) -> list[str]:
    raise RuntimeError("the check's own database is unreachable")
