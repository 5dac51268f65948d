"""
Apps that leave a process behind where the server's own tree and session no longer reach it:
`Popen(..., start_new_session=True)` from the lifespan, with the environment kept (`setsid`)
or wiped (the journal path gone from it too).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI

LINGER = [sys.executable, "-c", "import time; time.sleep(600)"]


@contextlib.asynccontextmanager
async def detach(app: FastAPI) -> AsyncIterator[None]:
    subprocess.Popen(LINGER, start_new_session=True, stdin=subprocess.DEVNULL)
    yield


@contextlib.asynccontextmanager
async def detach_without_environment(app: FastAPI) -> AsyncIterator[None]:
    subprocess.Popen(LINGER, start_new_session=True, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    yield


setsid_child = FastAPI(lifespan=detach)
setsid_child_clean_env = FastAPI(lifespan=detach_without_environment)
