"""
The guardian: a tiny process that outlives drainspec just long enough to kill what it started.

drainspec starts each server in a session of its own. The guardian is told that session and
reads a pipe from drainspec; end of file means drainspec is done, or dead (even SIGKILLed),
and either way the guardian kills every process still in that session, forked workers and app
children included, then exits. Run as `python -m chaos.guardian SESSION_ID`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import psutil


def session_members(session: int) -> list[psutil.Process]:
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
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()  # returns at EOF: drainspec closed the pipe or died
    kill_session(session)


if __name__ == "__main__":
    main()
