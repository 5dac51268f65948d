"""
A server the app's own script starts: `python main.py` or `python -m app.main`, where the script
calls `uvicorn.run(app, ...)`, builds `uvicorn.Config` and `uvicorn.Server` itself, awaits
hypercorn's `serve(app, config)`, runs `Granian("main:app", interface="asgi").serve()`, or runs
gunicorn's `BaseApplication` with uvicorn's workers (`StandaloneApplication(app, options).run()`).

drainspec runs such a command as `python -m chaos.probe.script main.py ARGS...`:
`uvicorn.Config`, `hypercorn.asyncio.serve`, granian's server and gunicorn's application are
patched the moment the script imports them (`REDIRECTS`, through `chaos.probe.imports`) so that
the app the script hands over is wrapped in the probe and the server listens where drainspec
says (127.0.0.1, `DRAINSPEC_PORT`, plain HTTP: TLS it configures is left out, with a warning),
then the script runs as `__main__`, as the interpreter would have run it.
Everything else the script decides (its drain timeout, its signal handlers or shutdown trigger,
whether the server runs in the main thread, its workers, its reloader) is left as it is: that is
what is verified, a reloader too, since a script that ships with `reload=True` runs one in
production. The processes the script spawns (uvicorn's workers and reloader) load the probe
before they re-run the script (`chaos.probe.spawned`).

An app handed over as an import string (what uvicorn's `workers` and `reload` need, and all
granian takes) is loaded by `chaos.probe.asgi`, in every worker, like any server's; an app
object is wrapped where the script made it. A script that returns without ever starting one of
them is one `probe.error`.
"""

from __future__ import annotations

import functools
import itertools
import os
import runpy
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from chaos.environment import APP_ENV, PORT_ENV, SCRIPT_MAIN_ENV
from chaos.journal import Kind
from chaos.probe import record
from chaos.probe.imports import when_imported
from chaos.probe.loader import fail, made, prepare, wrap
from chaos.servers import HOST, PROBE_APP

USAGE = "usage: python -m chaos.probe.script (SCRIPT | -m MODULE) [ARGS...]"
SPAWNED_MAIN = "chaos.probe.spawned"  # the main module of the processes the script spawns


def main(argv: list[str]) -> None:
    if not argv or argv[0] == "-m" and len(argv) < 2:
        raise SystemExit(USAGE)
    port = os.environ.get(PORT_ENV, "")
    if not port.isdigit():
        raise fail(f"{PORT_ENV} is not set; drainspec sets it when it runs an app's own script")
    os.environ.pop(APP_ENV, None)  # set below when the script hands uvicorn an import string
    prepare()  # before the script's imports, as for any server
    redirect = _Redirect(int(port))
    for module, patch in REDIRECTS.items():
        when_imported(module, functools.partial(patch, redirect))
    when_imported("multiprocessing.spawn", _spawn_through_the_probe)
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
    if not redirect.started:
        raise fail(
            f"{what} returned without starting uvicorn, hypercorn, granian or gunicorn; drainspec runs a "
            "script's own server when it is uvicorn (uvicorn.run, or uvicorn.Config and uvicorn.Server), "
            "hypercorn's serve(app, config), granian's Granian(...).serve() or a gunicorn BaseApplication's "
            "run(); for another server use --command with {app} and {port}"
        )


class _Redirect:
    """Where the script's server must listen, and which servers it started."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.started: list[str] = []

    def starts(self, server: str, *, workers: Any) -> None:
        """The script starts `server` with `workers`: journaled, and the run waits for each one's startup."""
        self.started.append(server)
        record(Kind.SCRIPT_SERVER, server=server, workers=workers if isinstance(workers, int) and workers > 0 else 1)

    def uvicorn(self, module: ModuleType) -> None:
        """`uvicorn.Config`: the app it is given, wrapped or loaded by the probe, served here."""

        def redirect(config: Any) -> None:
            if config.app is None:  # a gunicorn worker's, given its app once made: wrapped by `gunicorn`
                return
            self.starts("uvicorn", workers=1 if getattr(config, "should_reload", False) else config.workers)
            config.host, config.port, config.uds, config.fd = HOST, self.port, None, None
            if config.ssl_certfile or config.ssl_keyfile:
                config.ssl_certfile = config.ssl_keyfile = None
                _served_plain("uvicorn", "ssl_certfile")
            if isinstance(config.app, str):  # every worker imports it: the probe's import string does
                config.app = _import_string(config.app, factory=bool(config.factory))
            else:
                config.app = _probed(config.app, factory=bool(config.factory))
            config.factory = False

        _after_init(module.Config, redirect)

    def hypercorn(self, module: ModuleType) -> None:
        """`hypercorn.asyncio.serve`: the app wrapped, bound here; the shutdown trigger the script's own."""
        original = module.serve

        @functools.wraps(original)
        def serve(app: Any, config: Any, *args: Any, **kwargs: Any) -> Awaitable[None]:
            self.starts("hypercorn", workers=1)  # `serve` is the one process that serves
            config.bind, config.insecure_bind, config.quic_bind = [f"{HOST}:{self.port}"], [], []
            if config.ssl_enabled:
                config.certfile = config.keyfile = None
                _served_plain("hypercorn", "certfile")
            return original(_probed(app), config, *args, **kwargs)  # a coroutine, as the script awaits it

        setattr(module, "serve", serve)  # noqa: B010 - a module attribute the type checker cannot see

    def granian(self, module: ModuleType) -> None:
        """granian's server: its workers import the target, so the target is the probe's import string."""

        def redirect(server: Any) -> None:
            self.starts("granian", workers=getattr(server, "workers", 1))
            server.target, server.factory = _import_string(server.target, factory=server.factory), False
            server.bind_addr, server.bind_port, server.bind_uds = HOST, self.port, None
            server.metrics_address = HOST
            tls = getattr(server, "ssl_ctx", None)  # (enabled, cert, key, password, ...) since granian 2.0
            if tls and tls[0]:
                server.ssl_ctx = (False, None, None, None, *tls[4:])
                _served_plain("granian", "ssl_cert")

        _after_init(module.AbstractServer, redirect)

    def gunicorn(self, module: ModuleType) -> None:
        """
        gunicorn's `BaseApplication` (a script's `StandaloneApplication(app, options).run()`):
        bound here whatever its options say, each time it loads them (a SIGHUP reloads them);
        the app its workers load, wrapped where they load it.
        """
        application = module.BaseApplication
        load_config, load_app = application.do_load_config, application.wsgi

        @functools.wraps(load_config)
        def do_load_config(app: Any) -> None:
            load_config(app)
            self.starts("gunicorn", workers=app.cfg.workers)
            app.cfg.set("bind", [f"{HOST}:{self.port}"])
            if app.cfg.is_ssl:
                app.cfg.set("certfile", None)
                app.cfg.set("keyfile", None)
                _served_plain("gunicorn", "certfile")

        @functools.wraps(load_app)
        def wsgi(app: Any) -> Any:
            if app.callable is None:
                app.callable = _probed(load_app(app))
            return app.callable

        application.do_load_config, application.wsgi = do_load_config, wsgi


def _served_plain(server: str, setting: str) -> None:
    """TLS the script configured, left out: drainspec's requests are plain HTTP on loopback."""
    record(
        Kind.PROBE_WARNING,
        library=server,
        error=f"the script's {setting} is left out: drainspec drives plain HTTP on {HOST}, so this server is "
        "verified without TLS",
    )


def _after_init(cls: Any, then: Callable[[Any], None]) -> None:
    """`cls.__init__` patched to call `then` on each instance once it is made."""
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        then(self)

    cls.__init__ = __init__


def _import_string(target: str, *, factory: bool) -> str:
    """The probe's import string, to serve in place of `target`, which it loads in every worker."""
    os.environ[APP_ENV] = f"{target}()" if factory else target
    return PROBE_APP


REDIRECTS: dict[str, Callable[[_Redirect, ModuleType], None]] = {
    "uvicorn.config": _Redirect.uvicorn,
    "hypercorn.asyncio": _Redirect.hypercorn,
    "granian.server.common": _Redirect.granian,
    "gunicorn.app.base": _Redirect.gunicorn,
}
"""Per server the launcher runs, the module patched when the script imports it, and how."""


def _spawn_through_the_probe(module: ModuleType) -> None:
    """The children the script spawns run `chaos.probe.spawned` as their main, which re-runs the script."""
    original = module.get_preparation_data

    @functools.wraps(original)
    def get_preparation_data(name: str) -> dict[str, Any]:
        data: dict[str, Any] = original(name)
        if "init_main_from_path" in data:
            os.environ[SCRIPT_MAIN_ENV] = f"path:{data.pop('init_main_from_path')}"
        elif data.get("init_main_from_name", "__main__").rpartition(".")[2] != "__main__":
            os.environ[SCRIPT_MAIN_ENV] = f"name:{data['init_main_from_name']}"
        else:  # a package's __main__: Python does not re-run it, nor does the probe
            return data
        data["init_main_from_name"] = SPAWNED_MAIN
        return data

    setattr(module, "get_preparation_data", get_preparation_data)  # noqa: B010 - unseen by the type checker


def _probed(app: Any, *, factory: bool = False) -> Any:
    """An app object the script hands its server, in the probe (its name read from the script's globals)."""
    name = _name_of(app)
    made_app, factory = made(app, name=name, factory=factory)
    return wrap(made_app, name=name, module=name.partition(":")[0], factory=factory)


def _name_of(app: Any) -> str:
    """
    `module:name` of the global the script holds `app` in, as an import string reads: looked
    for from the patched call's caller (above this, `_probed` and the patch) outwards; then in
    every module imported, for an app the script had imported by name (gunicorn's `import_app`).
    """
    frames = []
    frame = sys._getframe(3)
    while frame is not None:
        frames.append(frame.f_globals)
        frame = frame.f_back  # type: ignore[assignment]
    modules = (vars(module) for module in list(sys.modules.values()) if hasattr(module, "__dict__"))
    for namespace in itertools.chain(frames, modules):
        for name, value in list(namespace.items()):
            if value is app and not name.startswith("__"):
                return f"{namespace.get('__name__', '?')}:{name}"
    return f"__main__:{type(app).__name__}"


if __name__ == "__main__":
    main(sys.argv[1:])
