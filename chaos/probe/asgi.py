"""
The import string every server is launched on: `chaos.probe.asgi:app`.

It imports the user's app (named by `DRAINSPEC_APP`, in uvicorn's `module:attribute` form)
and wraps it in the probe, with the resource instrumentation installed first (`DRAINSPEC_INSTRUMENT=0`
leaves it out). An app that cannot be imported is journaled as `probe.error`, so
the harness can say why in one line instead of showing the server's traceback.
"""

from __future__ import annotations

import os
import sys

from chaos.journal import Kind
from chaos.probe import APP_ENV, ASGIApp, Probe, patch_starlette_background, record, resources


def load(import_string: str) -> ASGIApp:
    from uvicorn.importer import ImportFromStringError, import_from_string

    patch_starlette_background()
    if resources.enabled():
        resources.install()  # before the app's imports, so every resource it opens is seen
    try:
        app = import_from_string(import_string)
    except ImportFromStringError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f'importing "{import_string}" raised {type(exc).__name__}: {exc}') from None
    if not callable(app):
        raise _fail(f'"{import_string}" is not an ASGI app (got {type(app).__name__})')
    return app


def _fail(message: str) -> SystemExit:
    record(Kind.PROBE_ERROR, error=message)
    print(f"drainspec probe: {message}", file=sys.stderr)
    return SystemExit(3)


def _wrap_from_environment() -> Probe:
    import_string = os.environ.get(APP_ENV)
    if not import_string:
        raise _fail(f"{APP_ENV} is not set; drainspec sets it when it launches a server")
    probe = Probe(load(import_string))
    # Where the app came from: a package of the same name earlier on the path (a regular package
    # wins over a directory without `__init__.py`) would otherwise be judged in its place, unseen.
    module = sys.modules.get(import_string.partition(":")[0])
    source = str(getattr(module, "__file__", None) or "?")
    record(Kind.PROBE_LOADED, app=import_string, instrument=resources.enabled(), source=source)
    return probe


app = _wrap_from_environment()
