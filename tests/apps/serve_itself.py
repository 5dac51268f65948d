"""
A service that starts its own server, as many do: `python serve_itself.py` (a Dockerfile's
`CMD ["python", "main.py"]`), with the address of the container (0.0.0.0:8000) written in.

- no option: `uvicorn.run(app, ...)` in the main thread; uvicorn's own signal handling drains;
- `--workers 2`: `uvicorn.run("tests.apps.serve_itself:app", workers=2)`, the import string
  uvicorn's workers need;
- `--in-thread`: the server run in a thread next to other work (a bot, a scheduler). Signal
  handlers belong to the main thread, so uvicorn installs none, and SIGTERM's default action
  ends the process with requests in flight and no lifespan shutdown;
- `--no-server`: a script that never starts a server (a migration script given by mistake).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/work")
async def work(seconds: float = 0.3) -> dict[str, bool]:
    await asyncio.sleep(seconds)
    return {"ok": True}


def main(argv: list[str]) -> None:
    if "--no-server" in argv:
        print("migrations applied")
        return
    if "--workers" in argv:
        uvicorn.run("tests.apps.serve_itself:app", host="0.0.0.0", port=8000, workers=2)
    elif "--in-thread" in argv:
        server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=8000))
        thread = threading.Thread(target=server.run, name="api")
        thread.start()
        thread.join()
    else:
        uvicorn.run(app, host="0.0.0.0", port=8000, timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main(sys.argv[1:])
