"""
A service that starts its own server, as many do: `python serve_itself.py` (a Dockerfile's
`CMD ["python", "main.py"]`), with the address of the container (0.0.0.0:8000) written in. Its
engine (SQLAlchemy on SQLite) is created at import, as most such services do, so that every
process that imports the module has one, and disposed at the end of the lifespan.

- no option: `uvicorn.run(app, ...)` in the main thread; uvicorn's own signal handling drains;
- `--workers 2`: `uvicorn.run("tests.apps.serve_itself:app", workers=2)`, the import string
  uvicorn's workers need;
- `--reload`: `uvicorn.run("tests.apps.serve_itself:app", reload=True)`, shipped as written:
  uvicorn's reloader supervises a server process of its own;
- `--in-thread`: the server run in a thread next to other work (a bot, a scheduler). Signal
  handlers belong to the main thread, so uvicorn installs none, and SIGTERM's default action
  ends the process with requests in flight and no lifespan shutdown;
- `--hypercorn`: `asyncio.run(serve(app, config))`, hypercorn's programmatic server, whose own
  SIGTERM handler drains;
- `--hypercorn --own-trigger`: `serve(app, config, shutdown_trigger=lambda: asyncio.Future())`,
  as hypercorn's docs show to take signal handling over, and nothing then takes it: SIGTERM's
  default action ends the process, as in a thread;
- `--granian`: `Granian("tests.apps.serve_itself:app", interface="asgi").serve()`, granian's
  programmatic server, whose workers import the app;
- `--gunicorn`: gunicorn's `BaseApplication` subclassed, as gunicorn's docs show for a custom
  application (`StandaloneApplication(app, options).run()`), two uvicorn workers forked from
  its arbiter, each serving the app object the script made;
- `--gunicorn --import-app`: the same application loading the app by its import string in each
  worker (`gunicorn.util.import_app`), as many such scripts do;
- `--dispose-after-serve`: `uvicorn.Server(...).serve()` awaited with the engine disposed in a
  `finally` after it, where the author expects shutdown code to run, and not by the lifespan.
  uvicorn re-raises the stop signal once it has shut down (since 0.29), with Python's default
  action back: the process dies of SIGTERM inside `serve()`, and the `finally` never runs;
  `--in-lifespan` disposes of it in the lifespan too, which runs first;
- `--tls DIR` with any of the above: the server given `DIR/cert.pem` and
  `DIR/key.pem`, as a script that serves HTTPS itself does;
- `--no-server`: a script that never starts a server (a migration script given by mistake).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_async_engine("sqlite+aiosqlite:///:memory:")
DISPOSED_IN_LIFESPAN = "--dispose-after-serve" not in sys.argv or "--in-lifespan" in sys.argv


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    if DISPOSED_IN_LIFESPAN:
        await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/work")
async def work(seconds: float = 0.3) -> dict[str, bool]:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    await asyncio.sleep(seconds)
    async with engine.connect() as connection:  # the engine used to the end of the request
        await connection.execute(text("SELECT 1"))
    return {"ok": True}


def main(argv: list[str]) -> None:
    if "--no-server" in argv:
        print("migrations applied")
        return
    tls = Path(argv[argv.index("--tls") + 1]) if "--tls" in argv else None
    cert, key = (str(tls / "cert.pem"), str(tls / "key.pem")) if tls else (None, None)
    if "--granian" in argv:
        from granian import Granian

        paths = {"ssl_cert": Path(cert), "ssl_key": Path(key)} if cert and key else {}
        Granian("tests.apps.serve_itself:app", address="0.0.0.0", port=8000, interface="asgi", **paths).serve()  # type: ignore[arg-type]
    elif "--hypercorn" in argv:
        serve_with_hypercorn(own_trigger="--own-trigger" in argv, cert=cert, key=key)
    elif "--dispose-after-serve" in argv:
        asyncio.run(serve_then_dispose())
    elif "--gunicorn" in argv:
        serve_with_gunicorn(cert=cert, key=key, by_name="--import-app" in argv)
    elif "--reload" in argv:
        uvicorn.run("tests.apps.serve_itself:app", host="0.0.0.0", port=8000, reload=True)
    elif "--workers" in argv:
        uvicorn.run("tests.apps.serve_itself:app", host="0.0.0.0", port=8000, workers=2)
    elif "--in-thread" in argv:
        server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=8000))
        thread = threading.Thread(target=server.run, name="api")
        thread.start()
        thread.join()
    else:
        uvicorn.run(app, host="0.0.0.0", port=8000, timeout_graceful_shutdown=5, ssl_certfile=cert, ssl_keyfile=key)


async def serve_then_dispose() -> None:
    server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=8000))
    try:
        await server.serve()
    finally:
        await engine.dispose()


def serve_with_hypercorn(*, own_trigger: bool, cert: str | None = None, key: str | None = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = ["0.0.0.0:8000"]
    config.graceful_timeout = 5
    config.certfile, config.keyfile = cert, key
    if own_trigger:
        asyncio.run(serve(app, config, shutdown_trigger=lambda: asyncio.Future()))  # type: ignore[arg-type]
    else:
        asyncio.run(serve(app, config))  # type: ignore[arg-type]


def serve_with_gunicorn(*, cert: str | None = None, key: str | None = None, by_name: bool = False) -> None:
    from gunicorn.app.base import BaseApplication
    from gunicorn.util import import_app

    class StandaloneApplication(BaseApplication):  # type: ignore[misc]
        def __init__(self, application: FastAPI, options: dict[str, object]) -> None:
            self.options = options
            self.application = application
            super().__init__()

        def load_config(self) -> None:
            for key, value in self.options.items():
                self.cfg.set(key, value)

        def load(self) -> FastAPI:
            return import_app("tests.apps.serve_itself:app") if by_name else self.application  # type: ignore[no-any-return]

    options = {
        "bind": "0.0.0.0:8000",
        "workers": 2,
        "worker_class": "uvicorn_worker.UvicornWorker",
        "graceful_timeout": 5,
    }
    if cert and key:
        options.update(certfile=cert, keyfile=key)
    StandaloneApplication(app, options).run()


if __name__ == "__main__":
    main(sys.argv[1:])
