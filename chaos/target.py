"""
How a server is launched and reaped (waiting on it is `chaos.waits`).

Every server runs the probe's import string (`chaos.probe.asgi:app`), or the app's own script
through `chaos.probe.script`, on a loopback port, in its own session, so that the whole tree it
forks can be found and killed afterwards. Signals that judge the shutdown are not sent here: that
is the kubelet's job (`chaos.k8s.kubelet`). This module only cleans up.

It loads no asyncio, and psutil only where a server's tree is read (after its spawn): a run spawns
its server before the rest of drainspec loads (`chaos.runner`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos.errors import SetupError
from chaos.guardian import REAPED
from chaos.redact import redact_text

# HOST, PROBE_APP and SERVERS live in chaos.servers; other modules import them from here too.
from chaos.servers import FACTORY_FLAG, HOST, PROBE_APP, SERVERS, own_script_of, refuse_tls

if TYPE_CHECKING:
    import psutil


def server_argv(
    server: str,
    port: int,
    *,
    workers: int = 1,
    extra: Sequence[str] = (),
    command: str | None = None,
) -> list[str]:
    """
    The argv that starts `server` (or a user's `command` template) on the probe. A known server
    is first checked to be installed and recent enough (`chaos.servers.ServerSpec.installed`),
    so that a missing or old one is one clear `SetupError`, not a server that exits at once.
    `--factory` is dropped wherever it is: the probe calls the app's factory (`chaos.probe.loader`).
    """
    extra = [word for word in extra if word != FACTORY_FLAG]
    refuse_tls(extra)
    if command is not None:
        try:
            words = [word for word in shlex.split(command) if word != FACTORY_FLAG]
        except ValueError as exc:
            raise SetupError(f"--command is not a valid shell-style command: {exc}") from None
        if not words:
            raise SetupError("--command is empty; give the server command with {port} and {app}")
        try:
            argv = [word.format(port=port, host=HOST, app=PROBE_APP) for word in words]
        except (KeyError, IndexError, ValueError) as exc:
            raise SetupError(
                f"--command {command!r} has a placeholder drainspec cannot fill ({exc}); "
                "use {port}, {host} and {app} (double a brace to keep it: {{ }})"
            ) from None
        script = own_script_of(command)
        if script is not None:  # TLS the script sets up is left out by its launcher (`chaos.probe.script`)
            return script.argv + list(extra)  # the FastAPI CLI too, as this Python's `-m fastapi`
        if not _on_path(argv[0]):
            raise SetupError(f"{argv[0]!r} was not found; check the --command or your PATH")
        refuse_tls(words)
        return argv + list(extra)
    try:
        spec = SERVERS[server]
    except KeyError:
        known = ", ".join(SERVERS)
        raise SetupError(f"unknown server {server!r}; choose one of {known}, or --command") from None
    return spec.argv(port, workers=workers, extra=extra)


def _on_path(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int) -> None:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise SetupError(
                f"port {port} on {HOST} is already in use; free it, pick another with --port, "
                "or omit --port to use a free one"
            ) from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """
    If drainspec itself is killed, the server it started dies too (PR_SET_PDEATHSIG). The umask
    is left as it is: what the app writes into the run's directory is private because the
    directory is (0700), and what it writes elsewhere keeps the modes it would have in production.
    """
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    """Linux's prctl(2); elsewhere nothing (no parent-death signal, orphans go to init)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


_guardians: dict[int, subprocess.Popen[bytes]] = {}


def guardian_pids() -> set[int]:
    """The guardians' pids: children of ours that `collect_orphans` must never reap."""
    return {guardian.pid for guardian in _guardians.values()}


_subreaping = 0
_subreaping_lock = threading.Lock()


def become_subreaper() -> None:
    """
    Make drainspec the reaper of the servers' orphans (PR_SET_CHILD_SUBREAPER) while a run is
    open: a worker whose parent exits without reaping it (gunicorn's arbiter SIGKILLs its
    workers at the graceful timeout and exits) is handed to us, so its exit status, the only
    account of how it died, can still be read (`collect_orphans`). Counted, so that runs open
    side by side share it; `release_subreaper` ends it with the last one, and nothing the
    caller daemonizes outside a run (a test's database) is handed to it.
    """
    global _subreaping
    with _subreaping_lock:
        if _subreaping == 0:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        _subreaping += 1


def release_subreaper() -> None:
    global _subreaping
    with _subreaping_lock:
        _subreaping = max(0, _subreaping - 1)
        if _subreaping == 0:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"signal {number}"


@dataclass(frozen=True)
class Orphan:
    """A server's process that outlived its parent and was reaped here: how it ended."""

    pid: int
    signal: str | None  # e.g. "SIGKILL" when it died of a signal
    exit_code: int | None  # when it exited on its own


def collect_orphans(pids: Sequence[int], timeout: float = 0.5) -> list[Orphan]:
    """
    Reap those of `pids` that were handed to us (`become_subreaper`) and read how each ended.
    A pid that is not our child is skipped at once; one of ours still dying (a SIGKILL in
    delivery) is waited for, up to `timeout` in all.
    """
    found = []
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                reaped, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break  # not ours: its own parent reaped it, or it never was handed over
            if reaped == pid:
                if os.WIFSIGNALED(status):
                    found.append(Orphan(pid, _signal_name(os.WTERMSIG(status)), None))
                else:
                    found.append(Orphan(pid, None, os.waitstatus_to_exitcode(status)))
                break
            if time.monotonic() >= deadline:
                break  # still running: the run's reaping kills it
            time.sleep(0.01)
    return found


def running_pids() -> frozenset[int]:
    """
    The pids running now, read from /proc where there is one (as psutil does on Linux, without
    loading it before the spawn), else by psutil: what ran before a run began is none of its own
    (`chaos.descendants.Descendants`).
    """
    try:
        return frozenset(int(name) for name in os.listdir("/proc") if name.isdigit())
    except OSError:
        import psutil

        return frozenset(psutil.pids())


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: str | os.PathLike[str], log: Path
) -> subprocess.Popen[bytes]:
    """
    Start a server in a new session (its own process group), output to `log`, watched by a
    guardian (`chaos.guardian`) that kills the whole session if drainspec itself dies.
    """
    try:
        output = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SetupError(f"cannot write the server log {log}: {exc.strerror}") from None
    try:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as exc:
        raise SetupError(f"cannot start {argv[0]!r}: {exc.strerror}") from None
    finally:
        os.close(output)
    _guardians[process.pid] = subprocess.Popen(
        [sys.executable, "-m", "chaos.guardian", str(process.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process


def check_loopback_only(pid: int) -> None:
    """
    The server (`pid` and every descendant) listens on loopback addresses only: drainspec runs
    untrusted manifests' commands and apps on this machine, and none of them may become
    reachable from the network. Anything else is a `SetupError` (the run stops, exit 2).
    """
    import psutil

    for process, address in listening(pid):
        if not _is_loopback(address.ip):
            name = "?"
            with contextlib.suppress(psutil.Error):
                name = " ".join(" ".join(process.cmdline()[:2]).split())[:60] or process.name()
            raise SetupError(
                f"the server listens on {address.ip}:{address.port} (pid {process.pid}, {name}), not only on "
                f"{HOST}: a run must not be reachable from the network, so drainspec stopped it; make the "
                f"command bind {HOST} (e.g. --host {HOST} or --bind {HOST})"
            )


def listening(pid: int) -> list[tuple[psutil.Process, Any]]:
    """Every TCP socket in LISTEN state held by `pid` or a descendant."""
    import psutil

    found = []
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    for process in tree:
        with contextlib.suppress(psutil.Error):
            for connection in process.net_connections(kind="tcp"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr:
                    found.append((process, connection.laddr))
    return found


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def last_log_line(log: Path) -> str:
    """The server log's last line, URL passwords masked (a driver's error may quote its DSN)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no server output)"
    return redact_text(_one_line(text)) or "(no server output)"


def wait_gone(processes: list[psutil.Process], timeout: float) -> bool:
    """
    Wait until every process has died (True), or `timeout` (False). A zombie counts as dead:
    when its parent is gone it waits for an init that, in a container, may never reap it.
    """
    import psutil

    deadline = time.monotonic() + timeout
    pending = list(processes)
    while pending and time.monotonic() < deadline:
        still = []
        for process in pending:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    still.append(process)
        pending = still
        if pending:
            time.sleep(0.01)
    return not pending


def reap(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """
    Kill and reap whatever is left of the server's tree: the leader, its process group, and
    any descendant that moved to a group of its own. Safe to call more than once.
    """
    import psutil

    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(process.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    deadline = time.monotonic() + timeout
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=max(0.1, deadline - time.monotonic()))
    gone = wait_gone(descendants, timeout=max(0.1, deadline - time.monotonic())) and process.poll() is not None
    guardian = _guardians.pop(process.pid, None)
    if guardian is not None:  # told the tree is gone, it exits; else it sweeps the session first
        with contextlib.suppress(OSError):
            guardian.communicate(REAPED if gone else None, timeout=max(1.0, deadline - time.monotonic()))
        if guardian.poll() is None:
            guardian.kill()
            guardian.wait()
