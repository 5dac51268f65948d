"""
The termination sequence, as the kubelet runs it: the one place where stop signals are sent.

    stop signal to the main process only (never the group)
    wait for exit, up to the grace period
    SIGKILL to everything left (the container's whole process tree)

Each step is journaled (`signal.sent`, `signal.sigkill`, `server.exited`), so the verdicts can
put the server's own events against the grace clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass

from chaos.journal import JournalWriter, Kind
from chaos.target import reap, wait_exit

SIGNALS = {
    "TERM": signal.SIGTERM,
    "INT": signal.SIGINT,
    "QUIT": signal.SIGQUIT,
    "HUP": signal.SIGHUP,
    "USR1": signal.SIGUSR1,
    "USR2": signal.SIGUSR2,
    "WINCH": signal.SIGWINCH,
    "KILL": signal.SIGKILL,
}
KILLED_EXIT_CODE = 128 + signal.SIGKILL


def parse_signal(name: str) -> signal.Signals:
    """`TERM`, `SIGTERM`, `sigterm` or `15` to a signal; ValueError names the valid choices."""
    text = name.strip().upper().removeprefix("SIG")
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            pass
    elif text in SIGNALS:
        return SIGNALS[text]
    raise ValueError(f"unknown signal {name!r}; use one of {', '.join(SIGNALS)}")


@dataclass(frozen=True)
class Termination:
    """How the process ended: its return code, and whether the grace ran out."""

    returncode: int
    killed: bool

    @property
    def exit_code(self) -> int:
        """The code a container runtime reports: 128 + signal number for a signal death."""
        return 128 - self.returncode if self.returncode < 0 else self.returncode


def send_signal(process: subprocess.Popen[bytes], sig: signal.Signals, journal: JournalWriter) -> None:
    """Deliver `sig` to the main process only, as a container runtime does to PID 1."""
    journal.write(Kind.SIGNAL_SENT, signal=sig.name, target=process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)


async def terminate(
    process: subprocess.Popen[bytes],
    *,
    stop_signal: signal.Signals,
    grace: float,
    journal: JournalWriter,
) -> Termination:
    """Stop signal, grace clock, SIGKILL at the deadline; returns once the process is reaped."""
    send_signal(process, stop_signal, journal)
    returncode = await wait_exit(process, grace)
    killed = returncode is None
    if returncode is None:
        journal.write(Kind.SIGKILL_SENT, target=process.pid, after=grace)
        reap(process)
        returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
    termination = Termination(returncode=returncode, killed=killed)
    journal.write(
        Kind.SERVER_EXITED,
        returncode=termination.returncode,
        exit_code=termination.exit_code,
        killed=killed,
    )
    return termination
