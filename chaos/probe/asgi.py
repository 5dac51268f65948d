"""
The import string every server is launched on: `chaos.probe.asgi:app`.

It imports the user's app (named by `DRAINSPEC_APP`, in uvicorn's `module:attribute` form)
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

from chaos.journal import Kind
from chaos.probe import APP_ENV, ASGIApp, Probe, patch_starlette_background, record, resources
from chaos.probe.shapes import is_factory, not_asgi


def load(import_string: str) -> tuple[ASGIApp, bool]:
    """The app `import_string` names, and whether a factory made it."""
    from uvicorn.importer import ImportFromStringError, import_from_string

    patch_starlette_background()
    if resources.enabled():
        resources.install()  # before the app's imports, so every resource it opens is seen
    name, called = import_string.removesuffix("()"), import_string.endswith("()")  # gunicorn's `module:create_app()`
    try:
        app = import_from_string(name)
    except ImportFromStringError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f'importing "{import_string}" raised {type(exc).__name__}: {exc}') from None
    if not callable(app):
        raise _fail(f'"{import_string}" is not an ASGI app (got {type(app).__name__})')
    factory = called or is_factory(app)
    if factory:
        try:
            app = app()
        except Exception as exc:
            raise _fail(f'the app factory "{name}()" raised {type(exc).__name__}: {exc}') from None
        if not callable(app):
            raise _fail(f'the app factory "{name}()" returned {type(app).__name__}, not an ASGI app')
    if (problem := not_asgi(app)) is not None:
        raise _fail((f'the app factory "{name}()" returned an app that' if factory else f'"{name}"') + f" {problem}")
    return app, factory


def _fail(message: str) -> SystemExit:
    record(Kind.PROBE_ERROR, error=message)
    print(f"drainspec probe: {message}", file=sys.stderr)
    return SystemExit(3)


def _wrap_from_environment() -> Probe:
    import_string = os.environ.get(APP_ENV)
    if not import_string:
        raise _fail(f"{APP_ENV} is not set; drainspec sets it when it launches a server")
    app, factory = load(import_string)
    probe = Probe(app)
    # Where the app came from: a package of the same name earlier on the path (a regular package
    # wins over a directory without `__init__.py`) would otherwise be judged in its place, unseen.
    module = sys.modules.get(import_string.partition(":")[0])
    source = str(getattr(module, "__file__", None) or "?")
    record(Kind.PROBE_LOADED, app=import_string, instrument=resources.enabled(), source=source, factory=factory)
    return probe


app = _wrap_from_environment()
