"""
What a server's arbiter wrote in its log about how its workers died.

A worker's exit status goes to whoever reaps it. When the server exits without reaping a worker
it killed, drainspec (the subreaper) reads the status itself (`chaos.target.collect_orphans`);
when the server does reap it, its log is the only account left. gunicorn (from 27.0) SIGKILLs
the workers still running at `--graceful-timeout` and then reaps them once, without waiting: a
worker already dead by then is reaped by gunicorn, which logs

    [2026-12-04 13:52:29 +0000] [412] [ERROR] Worker (pid:415) was sent SIGKILL! Perhaps out of memory?

and one still dying is handed to drainspec. Both accounts must say the same thing: `killed`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from chaos.target import Orphan

LOG_TAIL_BYTES = 1 << 20
"""How much of a server log's end is read: the arbiter's last words are there."""

_KILLED = re.compile(rb"Worker \(pid:(\d+)\) was sent (SIG[A-Z0-9]+)!")


def deaths_in_log(log: Path, workers: Collection[int]) -> list[Orphan]:
    """
    The workers among `workers` (pids seen below the server) that the arbiter's log says died of
    a signal, first account of each. A pid outside `workers` is ignored: the log is the app's
    output too, and only a process that really was below the server can be accounted for.
    """
    try:
        with log.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - LOG_TAIL_BYTES))
            tail = file.read()
    except OSError:
        return []
    found: dict[int, Orphan] = {}
    for match in _KILLED.finditer(tail):
        pid = int(match[1])
        if pid in workers and pid not in found:
            found[pid] = Orphan(pid, match[2].decode(), None)
    return list(found.values())
