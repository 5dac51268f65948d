"""
The termination sequence, as the kubelet runs it: the one place where stop signals are sent.

    preStop hook, with the grace clock T already running
    remaining = max(T - whole seconds preStop took, 2)
    stop signal to the main process only (PID 1; never the group)
    wait for exit, up to `remaining`
    SIGKILL to everything left (the container's whole process tree)

Each step is journaled (`prestop.start`/`end`, `signal.sent`, `signal.sigkill`,
`server.exited`), so the verdicts can put the server's own events against the grace clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.journal import JournalWriter, Kind
from chaos.k8s.pod import handles_signal
from chaos.target import reap
from chaos.waits import wait_exit

KILLED_EXIT_CODE = 128 + signal.SIGKILL
MINIMUM_GRACE_SECONDS = 2.0  # kubelet's minimumGracePeriodInSeconds


@dataclass(frozen=True)
class Termination:
    """How the process ended: its return code, and whether the grace ran out."""

    returncode: int
    killed: bool

    @property
    def exit_code(self) -> int:
        """The code a container runtime reports: 128 + signal number for a signal death."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode


def send_signal(pid: int, sig: signal.Signals, journal: JournalWriter) -> None:
    """
    Deliver `sig` to the main process only, as a container runtime does to PID 1. The journal
    says whether the process had a handler for it at that moment: a PID 1 without one never
    sees the signal at all.
    """
    journal.write(Kind.SIGNAL_SENT, signal=sig.name, target=pid, handled=handles_signal(pid, sig), comm=_comm(pid))
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as file:
            return file.read().strip()
    except OSError:
        return None


PreStop = Callable[[float], Awaitable[str]]
"""Runs a preStop hook with a time limit; returns a one-line account of what it did."""


async def run_prestop(prestop: PreStop, grace: float, journal: JournalWriter) -> float:
    """
    Run the hook with the grace clock running; return the seconds it counts against the grace.

    Like the kubelet, a hook still running when the grace runs out is abandoned, not killed,
    and a failed hook is recorded and termination goes on (`FailedPreStopHook`).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    journal.write(Kind.PRESTOP_START, limit=grace)
    try:
        detail = await asyncio.wait_for(prestop(grace), timeout=grace)
        ok = True
    except TimeoutError:
        detail, ok = f"still running after the {grace:g}s grace: abandoned", False
    except Exception as exc:
        detail, ok = f"FailedPreStopHook: {exc}", False
    elapsed = loop.time() - started
    journal.write(Kind.PRESTOP_END, ok=ok, detail=detail, elapsed=round(elapsed, 3))
    return elapsed


def remaining_grace(grace: float, prestop_elapsed: float, floor: float = MINIMUM_GRACE_SECONDS) -> float:
    """
    The stop window the kubelet leaves between the stop signal and SIGKILL: T minus the whole
    seconds preStop took (0 without a hook), never less than the 2 s floor. The released
    kubelet's `killContainer` applies `minimumGracePeriodInSeconds` after subtracting the hook's
    time whether or not there was a hook, so `terminationGracePeriodSeconds: 1` (or 0) with no
    preStop still gives the process 2 s (research/k8s.md, "Kubelet arithmetic").
    """
    return max(grace - math.trunc(min(prestop_elapsed, grace)), floor)


async def terminate(
    process: subprocess.Popen[bytes],
    *,
    stop_signal: signal.Signals,
    grace: float,
    journal: JournalWriter,
    main_pid: int | None = None,
    prestop: PreStop | None = None,
    floor: float = MINIMUM_GRACE_SECONDS,
) -> Termination:
    """
    preStop (if any), stop signal to the main process, grace clock, SIGKILL at the deadline;
    returns once the process is reaped. `process` is what we reap (the namespace's launcher);
    `main_pid` is the container's PID 1 as seen from here, where signals go.
    """
    target = main_pid or process.pid
    elapsed = 0.0
    if prestop is not None and grace > 0:
        elapsed = await run_prestop(prestop, grace, journal)
    # The floor holds with or without a preStop hook: T = 1 (or 0) still gives the process 2 s.
    remaining = remaining_grace(grace, elapsed, floor)
    if process.poll() is None:
        send_signal(target, stop_signal, journal)
    returncode = await wait_exit(process, remaining)
    killed = returncode is None
    if returncode is None:
        journal.write(Kind.SIGKILL_SENT, target=target, after=remaining)
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
        reap(process)
        returncode = -signal.SIGKILL
    termination = Termination(returncode=returncode, killed=killed)
    journal.write(
        Kind.SERVER_EXITED,
        returncode=termination.returncode,
        exit_code=termination.exit_code,
        killed=killed,
    )
    return termination
