"""
What a run is waiting for, while it waits: a one-line status read from the journal itself.

A shutdown check spends most of its time waiting (for the server, for the work to be in flight,
for preStop, for the drain); a user staring at a silent terminal cannot tell a slow drain from a
hang. The status line follows the same journal the verdicts are judged from, in a thread, so it
shows only what has really happened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from chaos.journal import Event, JournalTail, Kind

if TYPE_CHECKING:
    from rich.console import Console

REFRESH_SECONDS = 0.1


class Phase:
    """The run's current phase, advanced by journal events."""

    def __init__(self, ready_timeout: float) -> None:
        self.ready_timeout = ready_timeout
        self.text = "starting"
        self.since = time.monotonic()
        self.inside = 0

    def advance(self, event: Event) -> None:
        kind = event.kind
        if kind in (Kind.SERVER_SPAWNED, Kind.POD_STARTED):
            self._enter(f"waiting up to {self.ready_timeout:g}s for the server to finish lifespan startup")
        elif kind == Kind.SERVER_READY:
            self._enter("waiting for the work to be inside the app")
        elif kind == Kind.REQUEST_START:
            self.inside += 1
        elif kind == Kind.PRESTOP_START:
            self._enter("preStop hook running, grace clock started")
        elif kind == Kind.SIGNAL_SENT:
            self._enter(f"draining after {event.get('signal')}; SIGKILL if still running at the deadline")
        elif kind == Kind.SIGKILL_SENT:
            self._enter("SIGKILL sent; reaping")
        elif kind == Kind.SERVER_EXITED:
            self._enter("server exited; collecting the journal")

    def _enter(self, text: str) -> None:
        self.text = text
        self.since = time.monotonic()

    def line(self) -> str:
        waited = time.monotonic() - self.since
        detail = f" ({self.inside} request(s) inside so far)" if self.text.startswith("waiting for the work") else ""
        return f"{self.text}{detail}: {waited:.1f}s"


@contextmanager
def status(console: Console, journal: Path, *, ready_timeout: float) -> Iterator[None]:
    """Show the phase of the run writing `journal` until the block ends (only on a terminal)."""
    if not console.is_terminal:
        yield
        return
    phase = Phase(ready_timeout)
    done = threading.Event()
    tail = JournalTail(journal)
    with console.status(phase.line()) as spinner:

        def follow() -> None:
            while not done.wait(REFRESH_SECONDS):
                for event in tail.poll():
                    phase.advance(event)
                spinner.update(phase.line())

        thread = threading.Thread(target=follow, name="drainspec-status", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=1)
