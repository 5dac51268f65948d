"""
What an app's import string names, told by its signature: an ASGI app, an app factory, or
something a server cannot call. Pure functions, imported by `chaos.probe.loader` (which has the
side effect of loading the app) and by tests.
"""

from __future__ import annotations

import inspect


def is_factory(app: object) -> bool:
    """
    Callable with no arguments: an ASGI app takes three (scope, receive, send), a factory none.
    Told by the signature, not by calling it and catching TypeError as uvicorn does, so that a
    factory's own TypeError is reported as the factory's, not mistaken for "not a factory". A
    coroutine function is an app whatever its signature (`async def app(*args)`): a factory is
    called without a loop to await it.
    """
    if inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(type(app).__call__):
        return False
    try:
        inspect.signature(app).bind()  # type: ignore[arg-type]
    except (TypeError, ValueError):  # arguments required, or no signature to read (a builtin)
        return False
    return True


def not_asgi(app: object) -> str | None:
    """
    Why a server cannot call `app` with (scope, receive, send), or None when it can (or when no
    signature can be read: left to the server). Such an app fails every request and its lifespan
    with a TypeError, which servers read as "lifespan unsupported": a run would go on with the
    probe's own endpoints and judge an app that never ran. A WSGI app (Flask's
    `(environ, start_response)`) is the usual one.
    """
    try:
        signature = inspect.signature(app)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(None, None, None)
    except TypeError:
        takes = f"({', '.join(signature.parameters)})"  # the names alone: annotations would be noise
        wsgi = " (a WSGI app? drainspec drives ASGI apps)" if len(signature.parameters) == 2 else ""
        return f"is not an ASGI app: it takes {takes}, not (scope, receive, send){wsgi}"
    return None
