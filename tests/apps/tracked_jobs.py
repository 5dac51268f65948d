"""
A test app modelled on public FastAPI services that run long jobs with `asyncio.create_task`
and keep the tasks in a dict, not on drainspec's reference app: nothing here imports drainspec.

- `POST /jobs/{job_id}?seconds=S` writes the job as pending, starts its work in a task of its
  own and answers at once; the task marks the job running, works S seconds, marks it done; a
  cancelled job is marked failed ("cancelled") before the cancellation goes on;
- the lifespan creates the table (SQLite, an async engine, in the run's data directory) and at
  its end cancels every job still running, then disposes of the engine.

`JOBS_AWAIT_CANCELLED=1` is the fix: the cancelled jobs are awaited before the engine is
disposed. Without it, the jobs' last writes land after the dispose, or never happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

DATA = Path(os.environ.get("DRAINSPEC_RUN_DIR", "."))
engine = create_async_engine(f"sqlite+aiosqlite:///{DATA / 'jobs.db'}")
jobs: dict[str, asyncio.Task[None]] = {}


async def mark(job_id: str, status: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE jobs SET status = :status WHERE id = :id"), {"status": status, "id": job_id})


async def run(job_id: str, seconds: float) -> None:
    try:
        await mark(job_id, "running")
        await asyncio.sleep(seconds)
        await mark(job_id, "done")
    except asyncio.CancelledError:
        await mark(job_id, "cancelled")
        raise
    finally:
        jobs.pop(job_id, None)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL)"))
    yield
    running = list(jobs.values())
    for task in running:
        task.cancel()
    if os.environ.get("JOBS_AWAIT_CANCELLED"):
        await asyncio.gather(*running, return_exceptions=True)
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/jobs/{job_id}")
async def start(job_id: str, seconds: float = 0.0) -> dict[str, str]:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO jobs (id, status) VALUES (:id, 'pending')"), {"id": job_id})
    jobs[job_id] = asyncio.create_task(run(job_id, seconds))
    return {"job": job_id, "status": "pending"}
