"""
Coroutines the app made and never awaited: `db.dispose()` where `await db.dispose()` was meant.

Python says so only as a `RuntimeWarning` in the server's output ("coroutine
'Database.dispose' was never awaited"), when the dropped coroutine is collected, which for a
call whose result is thrown away is at once. In a lifespan shutdown it is the close that never
ran, so the probe journals each one (`app.unawaited`, with the coroutine and the line that dropped
it) for the timeline and for `resources-closed`, which names it beside a resource left open.
The warning itself still reaches the server's output, as it would without drainspec.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import TextIO

from chaos.journal import Kind
from chaos.probe import record

_NEVER_AWAITED = re.compile(r"coroutine '(?P<name>[^']+)' was never awaited")

_installed = False


def install() -> None:
    """Journal every never-awaited coroutine; the warnings module shows it as before."""
    global _installed
    if _installed:
        return
    _installed = True
    shown = warnings.showwarning

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, RuntimeWarning) and (match := _NEVER_AWAITED.search(str(message))):
            record(Kind.APP_UNAWAITED, coroutine=match["name"], where=f"{_short(filename)}:{lineno}")
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def _short(filename: str) -> str:
    """The app's own files as the user names them, relative to where the server runs."""
    relative = os.path.relpath(filename)
    return filename if relative.startswith("..") else relative
