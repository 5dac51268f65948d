"""
Everything the servers of a run started, ever: tracked while the run lasts, so that a process
that left a server's tree (`setsid`, a double fork, its parent gone) is still found, killed and
journaled at the end (`chaos.lifecycle.Run`), and nothing an app started outlives its run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psutil

from chaos.target import wait_gone

TRACK_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class Escaped:
    """A process the server started that outlived it: how it was found, and what it ran."""

    pid: int
    command: str
    found: str  # "descendant" (seen in the server's tree) or "environment" (carries the run's journal)


class Descendants:
    """
    Every process the servers of a run ever had below them, remembered by pid and start time,
    so that one that left the tree (`setsid`, a double fork, its parent gone) is still known
    at the end. A thread looks at the new pids every `TRACK_INTERVAL_SECONDS`: a look costs one
    `listdir(/proc)` and one read per new process, not a walk of every process's tree.
    """

    def __init__(self, before: frozenset[int]) -> None:
        self._lock = threading.Lock()
        self._roots: set[int] = set()
        self._members: dict[int, float] = {}  # pid -> create time, roots included
        self._before = before  # what already ran is none of ours (`chaos.target.running_pids`)
        self._checked: set[int] = set(self._before)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_root(self, pid: int) -> None:
        """A process the run started; from now on its descendants are tracked."""
        with self._lock:
            self._roots.add(pid)
            with contextlib.suppress(psutil.Error):
                self._members[pid] = psutil.Process(pid).create_time()
        self.poll()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="drainspec-descendants", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(TRACK_INTERVAL_SECONDS):
            self.poll()

    def poll(self) -> None:
        """Add every new process whose parent is already a member (parents before children)."""
        with self._lock:
            new: dict[int, tuple[int, float]] = {}
            for pid in psutil.pids():
                if pid in self._checked:
                    continue
                self._checked.add(pid)
                with contextlib.suppress(psutil.Error):
                    process = psutil.Process(pid)
                    new[pid] = (process.ppid(), process.create_time())
            grew = True
            while grew:
                grew = False
                for pid, (parent, created) in list(new.items()):
                    if parent in self._members:
                        self._members[pid] = created
                        del new[pid]
                        grew = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)

    def members(self) -> list[int]:
        """Every pid ever seen below the roots, the roots left out."""
        self.poll()
        with self._lock:
            return [pid for pid in self._members if pid not in self._roots]

    def newcomers(self) -> list[int]:
        """Every running pid that did not run when tracking began: ours or not, below a server or not."""
        return [pid for pid in psutil.pids() if pid not in self._before]

    def survivors(self) -> list[psutil.Process]:
        """Members still running (the same process: same start time), the roots left out."""
        self.poll()
        alive = []
        with self._lock:
            members = {pid: created for pid, created in self._members.items() if pid not in self._roots}
        for pid, created in members.items():
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive


def carrying_environment(name: str, value: str, *, since: float, among: Iterable[int]) -> list[psutil.Process]:
    """
    Running processes of this user, of the pids `among` (those new since the run began:
    `Descendants.newcomers`), started after `since`, whose environment has `name=value`:
    whatever a server started inherits the run's journal path, even after leaving its tree.
    """
    found = []
    me = os.getpid()
    uid = os.getuid()
    for pid in among:
        with contextlib.suppress(psutil.Error, OSError):
            process = psutil.Process(pid)
            if pid == me or process.uids().real != uid or process.create_time() < since - 1:
                continue
            if process.environ().get(name) == value and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def kill_escaped(processes: Sequence[psutil.Process], found: str) -> list[Escaped]:
    """SIGKILL each process and wait for it; what each one was, for the journal."""
    escaped = []
    for process in processes:
        command = "?"
        with contextlib.suppress(psutil.Error):
            command = " ".join(" ".join(process.cmdline()).split())[:200] or process.name()
        with contextlib.suppress(psutil.Error):
            process.kill()
        escaped.append(Escaped(process.pid, command, found))
    wait_gone(list(processes), timeout=5)
    return escaped
