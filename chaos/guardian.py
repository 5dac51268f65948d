"""
The guardian: a tiny process that outlives drainspec just long enough to kill what it started.

drainspec starts each server in a session of its own. The guardian is told that session and
reads a pipe from drainspec until end of file: drainspec is done, or dead (even SIGKILLed).
Unless drainspec wrote `REAPED` first (it killed and reaped the whole tree itself, and its own
sweep, `chaos.lifecycle`, journals whatever escaped), the guardian kills every process still in
that session, forked workers and app children included, then exits. Run as
`python -m chaos.guardian SESSION_ID`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

REAPED = b"reaped"
# psutil loads only when there is a session to kill: the guardian starts beside a booting server,
# and drainspec (which imports REAPED) spawns that server before loading psutil.


def session_members(session: int) -> list[psutil.Process]:
    import psutil

    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if process.pid == os.getpid() or os.getsid(process.pid) != session:
                continue
            # A zombie is already dead; one whose parent is gone waits for an init that may never reap it.
            if process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def kill_session(session: int) -> None:
    import psutil

    for _ in range(3):  # a dying master may fork once more; look again
        members = session_members(session)
        if not members:
            return
        for process in members:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(members, timeout=2)


def main() -> None:
    session = int(sys.argv[1])
    told = b""
    with contextlib.suppress(OSError):
        told = sys.stdin.buffer.read()  # returns at EOF: drainspec closed the pipe or died
    if told != REAPED:
        kill_session(session)
    os._exit(0)  # nothing to flush: skip the interpreter's teardown, which drainspec would wait on


if __name__ == "__main__":
    main()
