"""
How the user's app is found and wrapped in the probe, for both ways a server gets it: by the
import string every server is launched on (`chaos.probe.asgi:app`), and by the app's own script
(`chaos.probe.script`).

`wrap_from_environment` imports the user's app (named by `DRAINSPEC_APP`, in uvicorn's `module:attribute` form)
and wraps it in the probe, with the resource instrumentation installed first (`DRAINSPEC_INSTRUMENT=0`
leaves it out). An attribute that takes no arguments is an app factory (what `uvicorn --factory`
runs, and uvicorn guesses it too; gunicorn's `module:create_app()` says so): it is called, and its
app is the one wrapped. An app that cannot be imported or made, or that cannot be called with
(scope, receive, send), is journaled as `probe.error`, so the harness can say why in one line
instead of showing the server's traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from chaos.environment import APP_ENV
from chaos.journal import Kind
from chaos.probe import ASGIApp, Probe, patch_starlette_background, record, resources, unawaited
from chaos.probe.shapes import is_factory, not_asgi
from chaos.servers import running_servers


def load(import_string: str) -> tuple[ASGIApp, bool]:
    """The app `import_string` names, and whether a factory made it."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    prepare()
    name, called = import_string.removesuffix("()"), import_string.endswith("()")  # gunicorn's `module:create_app()`
    try:
        app = import_from_string(name)
    except ImportFromStringError as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        raise fail(f'importing "{import_string}" raised {type(exc).__name__}: {exc}') from None
    return made(app, name=name, factory=called)


def made(app: Any, *, name: str, factory: bool = False) -> tuple[ASGIApp, bool]:
    """
    The ASGI app `app` is, or makes when it is a factory (`factory`: said so; else told by its
    signature, as uvicorn guesses), and whether a factory made it; anything else is refused.
    """
    if not callable(app):
        raise fail(f'"{name}" is not an ASGI app (got {type(app).__name__})')
    factory = factory or is_factory(app)
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise fail(f'the app factory "{name}()" raised {type(exc).__name__}: {exc}') from None
        if not callable(app):
            raise fail(f'the app factory "{name}()" returned {type(app).__name__}, not an ASGI app')
    if (problem := not_asgi(app)) is not None:
        raise fail((f'the app factory "{name}()" returned an app that' if factory else f'"{name}"') + f" {problem}")
    return app, factory


def fail(message: str) -> SystemExit:
    record(Kind.PROBE_ERROR, error=message)
    print(f"drainspec probe: {message}", file=sys.stderr)
    return SystemExit(3)


def prepare() -> None:
    """What must be in place before the app's own imports: every resource it opens is then seen."""
    patch_starlette_background()
    unawaited.install()
    if resources.enabled():
        resources.install()


def wrap_from_environment() -> Probe:
    """The app `DRAINSPEC_APP` names, in the probe."""
    import_string = os.environ.get(APP_ENV)
    if not import_string:
        raise fail(f"{APP_ENV} is not set; drainspec sets it when it launches a server")
    app, factory = load(import_string)
    return wrap(app, name=import_string, module=import_string.partition(":")[0], factory=factory)


def wrap(app: ASGIApp, *, name: str, module: str, factory: bool) -> Probe:
    """`app` in the probe, journaled as loaded (`name` for the report, `module` where it came from)."""
    probe = Probe(app)
    # Where the app came from: a package of the same name earlier on the path (a regular package
    # wins over a directory without `__init__.py`) would otherwise be judged in its place, unseen.
    source = str(getattr(sys.modules.get(module), "__file__", None) or "?")
    record(
        Kind.PROBE_LOADED,
        app=name,
        instrument=resources.enabled(),
        source=source,
        factory=factory,
        servers=running_servers(sys._getframe()),
    )
    return probe
