"""
A server the app's own script starts: `python main.py` or `python -m app.main`, where the script
calls `uvicorn.run(app, ...)`, builds `uvicorn.Config` and `uvicorn.Server` itself, awaits
hypercorn's `serve(app, config)`, or runs `Granian("main:app", interface="asgi").serve()`.

drainspec runs such a command as `python -m chaos.probe.script main.py ARGS...`:
`uvicorn.Config`, `hypercorn.asyncio.serve` and granian's server are patched so that the app the
script hands over is wrapped in the probe and the server listens where drainspec says
(127.0.0.1, `DRAINSPEC_PORT`), then the script runs as `__main__`, as the interpreter would have
run it. Everything else the script decides (its drain timeout, its signal handlers or shutdown
trigger, whether the server runs in the main thread, its workers) is left as it is: that is what
is verified. The reloaders are turned off: they watch files, they are not how a service runs.

An app handed over as an import string (what uvicorn's `workers` and `reload` need, and all
granian takes) is loaded by `chaos.probe.asgi`, in every worker, like any server's; an app
object is wrapped where the script made it. A script that returns without ever starting one of
them is one `probe.error`.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chaos.probe import APP_ENV, PORT_ENV
from chaos.probe.loader import fail, made, prepare, wrap
from chaos.servers import HOST, PROBE_APP

USAGE = "usage: python -m chaos.probe.script (SCRIPT | -m MODULE) [ARGS...]"


def main(argv: list[str]) -> None:
    if not argv or argv[0] == "-m" and len(argv) < 2:
        raise SystemExit(USAGE)
    port = os.environ.get(PORT_ENV, "")
    if not port.isdigit():
        raise fail(f"{PORT_ENV} is not set; drainspec sets it when it runs an app's own script")
    os.environ.pop(APP_ENV, None)  # set below when the script hands uvicorn an import string
    prepare()  # before the script's imports, as for any server
    started = [_redirect_uvicorn(int(port)), _redirect_hypercorn(int(port)), _redirect_granian(int(port))]
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]  # runpy sets argv[0] to the module's file
        what = f"-m {argv[1]}"
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        if not Path(script).is_file():
            raise fail(f"the script {script} does not exist (relative to {os.getcwd()})")
        sys.argv = list(argv)
        sys.path.insert(0, str(Path(script).resolve().parent))  # as `python main.py` puts it first
        what = script
        runpy.run_path(script, run_name="__main__")
    if not any(did() for did in started):
        raise fail(
            f"{what} returned without starting uvicorn, hypercorn or granian; drainspec runs a script's own "
            "server when it is uvicorn (uvicorn.run, or uvicorn.Config and uvicorn.Server), hypercorn's "
            "serve(app, config) or granian's Granian(...).serve(); for another server use --command "
            "with {app} and {port}"
        )


def _redirect_uvicorn(port: int) -> Callable[[], bool]:
    """Patch `uvicorn.Config`; returns a function that tells whether the script made one."""
    import uvicorn

    made_one = False
    original = uvicorn.Config.__init__

    @functools.wraps(original)
    def __init__(self: Any, app: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal made_one
        original(self, app, *args, **kwargs)
        made_one = True
        self.host, self.port, self.uds, self.fd = HOST, port, None, None
        self.reload = False
        if isinstance(self.app, str):  # every worker imports it: the probe's import string does
            os.environ[APP_ENV] = f"{self.app}()" if self.factory else self.app
            self.app = PROBE_APP
        else:
            name = _name_of(self.app)
            app, factory = made(self.app, name=name, factory=bool(self.factory))
            self.app = wrap(app, name=name, module=name.partition(":")[0], factory=factory)
        self.factory = False

    uvicorn.Config.__init__ = __init__  # type: ignore[method-assign]
    return lambda: made_one


def _redirect_hypercorn(port: int) -> Callable[[], bool]:
    """
    Patch `hypercorn.asyncio.serve` (when hypercorn is installed); returns a function that tells
    whether the script called it. The app is wrapped and bound here; the shutdown trigger, and
    with it what a signal does, stays the script's.
    """
    try:
        import hypercorn.asyncio
    except ImportError:
        return lambda: False
    served = False
    original = hypercorn.asyncio.serve

    @functools.wraps(original)
    def serve(app: Any, config: Any, *args: Any, **kwargs: Any) -> Awaitable[None]:
        nonlocal served
        served = True
        config.bind, config.insecure_bind, config.quic_bind = [f"{HOST}:{port}"], [], []
        name = _name_of(app)
        made_app, factory = made(app, name=name)
        probe = wrap(made_app, name=name, module=name.partition(":")[0], factory=factory)
        return original(probe, config, *args, **kwargs)  # type: ignore[arg-type]  # a coroutine, as awaited

    hypercorn.asyncio.serve = serve  # type: ignore[assignment]
    return lambda: served


def _redirect_granian(port: int) -> Callable[[], bool]:
    """
    Patch granian's server (when granian is installed); returns a function that tells whether
    the script made one. Its workers import the target, so the target becomes the probe's
    import string, as for uvicorn's workers; its reloader is turned off.
    """
    try:
        from granian.server.common import AbstractServer
    except ImportError:
        return lambda: False
    made_one = False
    original = AbstractServer.__init__

    @functools.wraps(original)
    def __init__(self: Any, target: str, *args: Any, **kwargs: Any) -> None:
        nonlocal made_one
        original(self, target, *args, **kwargs)
        made_one = True
        os.environ[APP_ENV] = f"{target}()" if self.factory else target
        self.target, self.factory = PROBE_APP, False
        self.bind_addr, self.bind_port, self.bind_uds = HOST, port, None
        self.metrics_address = HOST
        self.reload_on_changes = False

    AbstractServer.__init__ = __init__  # type: ignore[method-assign]
    return lambda: made_one


def _name_of(app: Any) -> str:
    """`module:name` of the global the script holds `app` in, as an import string reads."""
    frame = sys._getframe(2)
    while frame is not None:
        for name, value in frame.f_globals.items():
            if value is app and not name.startswith("__"):
                return f"{frame.f_globals.get('__name__', '?')}:{name}"
        frame = frame.f_back  # type: ignore[assignment]
    return f"__main__:{type(app).__name__}"


if __name__ == "__main__":
    main(sys.argv[1:])
