"""
Waiting on a server, always on evidence and always bounded: until its lifespan startup begins,
until it is ready (every worker's startup in the journal, and its own socket listening), until
it exits. Whatever says it never will is a `SetupError`, with the server's last words.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
from pathlib import Path

from chaos import target
from chaos.errors import SetupError, capped, failure_line, message_line
from chaos.journal import Event, JournalTail, Kind
from chaos.servers import HOST


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
    """Wait until the process exits (reaping it); None if it still runs after `timeout`."""
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (OSError, AttributeError):
        pidfd = -1
    if pidfd >= 0:
        loop.add_reader(pidfd, exited.set)
    try:
        deadline = loop.time() + timeout
        while process.poll() is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            # The pidfd wakes us the moment the process exits; the bound covers platforms
            # without pidfds, where this degrades to polling.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), min(remaining, 0.05 if pidfd < 0 else 1.0))
        return process.returncode
    finally:
        if pidfd >= 0:
            loop.remove_reader(pidfd)
            os.close(pidfd)


async def wait_ready(
    process: subprocess.Popen[bytes],
    tail: JournalTail,
    *,
    port: int,
    workers: int,
    timeout: float,
    log: Path,
) -> None:
    """
    Wait for evidence that the server is ready: every worker's lifespan startup completed (or
    the app turned out not to speak lifespan) in the journal, and the port accepting
    connections. An app's own script says how many workers its server runs (`script.server`):
    that many are waited for. Any sign it never will is a `SetupError`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = 0
    while started < workers:
        for event in tail.poll():
            if event.kind == Kind.PROBE_ERROR:
                raise _cannot_load(event)
            if event.kind == Kind.STARTUP_FAILED:
                message = event.get("message") or "see the server log"
                raise SetupError(f"the app failed at startup: {failure_line(message)}")
            if event.kind in (Kind.STARTUP_COMPLETE, Kind.LIFESPAN_UNSUPPORTED):
                started += 1
            elif event.kind == Kind.SCRIPT_SERVER and isinstance(count := event.get("workers"), int):
                workers = max(workers, count)
        if started >= workers:
            break
        if process.poll() is not None:
            raise _exited_early(process.returncode, log)
        if loop.time() > deadline:
            raise SetupError(
                f"the server was not ready within {timeout:g}s (no lifespan startup in the journal); {_log_ends(log)}"
            )
        await asyncio.sleep(0.02)
    await wait_port(process, port=port, timeout=max(0.0, deadline - loop.time()), log=log)


_PROBE_MISSING = "No module named 'chaos'"
_ENVIRONMENT = re.compile(r'File "(/[^"]+)/bin/[^"/]+", line')


def _exited_early(returncode: int, log: Path) -> SetupError:
    """
    A server gone before it was ready, with what it said last; when what it said is that it
    cannot import drainspec's probe, the server ran in a Python environment of its own (`uv run`,
    `poetry run`, a project venv's uvicorn): say which, and what puts drainspec there.
    """
    said = target.last_log_line(log)
    if _PROBE_MISSING not in said:
        return SetupError(f"the server exited with code {returncode} before it was ready: {said}")
    try:
        found = _ENVIRONMENT.search(log.read_text(errors="replace"))
    except OSError:
        found = None
    where = f"in {found.group(1)}, a Python environment" if found else "in a Python environment"
    return SetupError(
        f"the server ran {where} where drainspec is not installed (its command starts it "
        "through an environment of its own, such as `uv run` or `poetry run`): install drainspec in that "
        "environment (`uv add --dev drainspec`, `poetry add --group dev drainspec`) and run drainspec again"
    )


def _cannot_load(event: Event) -> SetupError:
    """The probe could not import the app: its error, joined into one line."""
    return SetupError(f"the app cannot be loaded: {message_line(str(event.get('error')))}")


async def wait_startup_begun(process: subprocess.Popen[bytes], tail: JournalTail, *, timeout: float, log: Path) -> None:
    """Wait until a worker's lifespan startup has begun (and not yet completed) in the journal."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for event in tail.poll():
            if event.kind == Kind.PROBE_ERROR:
                raise _cannot_load(event)
            if event.kind == Kind.STARTUP_RECEIVED:
                return
            if event.kind == Kind.LIFESPAN_UNSUPPORTED:
                raise SetupError("--signal-at startup needs an app with a lifespan; this one has none")
        if process.poll() is not None:
            raise SetupError(
                f"the server exited with code {process.returncode} before startup: {target.last_log_line(log)}"
            )
        if loop.time() > deadline:
            raise SetupError(f"the app's lifespan startup did not begin within {timeout:g}s; see the log {log}")
        await asyncio.sleep(0.005)


async def wait_port(process: subprocess.Popen[bytes], *, port: int, timeout: float, log: Path) -> None:
    """
    Wait until the port accepts a TCP connection on a socket the server itself (`process` or a
    descendant) listens on: evidence the server listens. A port that another process took
    between its choice and the server's bind answers too, and would have the run drive, and
    judge, that other process.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    accepts = False
    while not ((accepts := await _accepts(port)) and _listens_on(process.pid, port)):
        if process.poll() is not None:
            raise SetupError(
                f"the server exited with code {process.returncode} before it listened: {target.last_log_line(log)}"
            )
        if loop.time() > deadline:
            if accepts:
                raise SetupError(
                    f"{HOST}:{port} is answered by another process than the server, which never listened there; "
                    f"run again (a port picked for the run was taken meanwhile), or see {log}"
                )
            raise SetupError(
                f"the server never accepted connections on {HOST}:{port} within {timeout:g}s; {_log_ends(log)}"
            )
        await asyncio.sleep(0.02)
    target.check_loopback_only(process.pid)


def _log_ends(log: Path) -> str:
    """What a server that never got ready last said, and what to do next."""
    return f"its log ends {capped(target.last_log_line(log), 300)!r}: raise --ready-timeout, or see the whole log {log}"


def _listens_on(pid: int, port: int) -> bool:
    """`pid` or a descendant holds the listening socket on `port`."""
    return any(address.port == port for _, address in target.listening(pid))


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
