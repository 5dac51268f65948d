"""
Jobs handed to an in-process queue and run by a worker task the lifespan starts: the pattern of
public FastAPI services that keep long-running work off the request ("use an asyncio.Queue").

`POST /jobs?seconds=S` queues an S-second job, then takes S/2 itself before it answers. `app`
never stops its worker: at shutdown the job it is running is cancelled with the loop, after
teardown, and lost. `stopped` stops it: the teardown queues a sentinel behind the jobs and awaits
the worker, which finishes what it holds first. `cancelled` calls the worker's `cancel()` and
goes on without awaiting it (a common teardown): the cancellation is only asked for, and uvicorn
ends the process before it runs. `cancelled_and_awaited` awaits it: the worker has ended (its job
given up) before the teardown completes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import FastAPI, Request


async def run_jobs(jobs: asyncio.Queue[float | None]) -> None:
    while (seconds := await jobs.get()) is not None:
        await asyncio.sleep(seconds)  # the job


Stop = Literal["never", "sentinel", "cancel", "cancel-and-await"]


def make(*, stop: Stop) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.jobs = asyncio.Queue()
        worker = asyncio.create_task(run_jobs(app.state.jobs))
        yield
        if stop == "sentinel":
            await app.state.jobs.put(None)
            await worker
        elif stop in ("cancel", "cancel-and-await"):
            worker.cancel()
            if stop == "cancel-and-await":
                with contextlib.suppress(asyncio.CancelledError):
                    await worker

    service = FastAPI(lifespan=lifespan)

    @service.post("/jobs")
    async def submit(request: Request, seconds: float = 0.5) -> dict[str, float]:
        await request.app.state.jobs.put(seconds)
        await asyncio.sleep(seconds / 2)
        return {"queued": seconds}

    return service


app = make(stop="never")
stopped = make(stop="sentinel")
cancelled = make(stop="cancel")
cancelled_and_awaited = make(stop="cancel-and-await")
