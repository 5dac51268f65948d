"""
Faults a chaos run injects around the stop signal, each a named option:

    second-signal:INT@0.3   a second signal 0.3 s after the stop signal (TERM then INT forces uvicorn)
    sigkill@0.5             SIGKILL the main process 0.5 s after the stop signal
    stall:0.5@0.2           SIGSTOP the server at +0.2 s, SIGCONT 0.5 s later
    crash-worker@0.2        SIGKILL one worker (the only process, for single-process servers)
    teardown-delay:1.5      the probe holds the app's lifespan shutdown 1.5 s longer (a slow teardown)
    keepalive@0.3           a client keeps an idle keep-alive connection and reuses it at +0.3 s
    stream[:SECONDS]        a streaming response open at shutdown (`inf`: an endless SSE-like stream)
    websocket               a WebSocket open at shutdown

Signals still go out through `chaos.k8s.kubelet.send_signal`, so every one of them is journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from chaos import traffic, workload
from chaos.environment import TEARDOWN_DELAY_ENV
from chaos.errors import SetupError
from chaos.journal import JournalTail, JournalWriter, Kind, read_journal
from chaos.k8s import kubelet
from chaos.scenario import parse_signal

TIMED = ("second-signal", "sigkill", "stall", "crash-worker", "keepalive")
OPEN_AT_SHUTDOWN = ("stream", "websocket")
NAMES = (*TIMED, "teardown-delay", *OPEN_AT_SHUTDOWN)


@dataclass(frozen=True)
class Fault:
    name: str
    arg: str | None = None
    at: float = 0.0

    @property
    def text(self) -> str:
        arg = f":{self.arg}" if self.arg is not None else ""
        when = f"@{self.at:g}" if self.name in TIMED else ""
        return f"{self.name}{arg}{when}"


MAX_FAULT_SECONDS = 3600.0


def parse_fault(text: str) -> Fault:
    """
    `name[:arg][@seconds]` to a `Fault`; a `SetupError` names the valid forms. Every number is
    finite, non-negative and at most an hour (`stall:nan` or `sigkill@-1` would otherwise be
    accepted and do something no one asked for); only a stream may be endless (`stream:inf`).
    """
    if not isinstance(text, str):
        raise SetupError(f"fault {text!r} must be a string like stall:0.5@0.2")
    body, _, when = text.strip().partition("@")
    name, _, arg = body.partition(":")
    if name not in NAMES:
        raise SetupError(f"unknown fault {name!r}; choose from {', '.join(NAMES)} (see drainspec run --help)")
    try:
        at = _seconds(when, "the time after the stop signal") if when else 0.0
        if name == "second-signal":
            parse_signal(arg or "INT")
            arg = arg or "INT"
        elif name in ("stall", "teardown-delay"):
            arg = str(_seconds(arg or "0.5", "the duration"))
        elif name == "stream":
            arg = str(_seconds(arg or "inf", "the duration", endless=True))
    except ValueError as exc:
        raise SetupError(f"fault {text!r}: {exc}") from None
    return Fault(name, arg or None, at)


def _seconds(text: str, what: str, *, endless: bool = False) -> float:
    value = float(text)
    if math.isnan(value):
        raise ValueError(f"{what} must be a number of seconds, not {text!r}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, not {text!r}")
    if math.isinf(value) and endless:
        return value
    if value > MAX_FAULT_SECONDS:
        raise ValueError(f"{what} must be at most {MAX_FAULT_SECONDS:g} seconds, not {text!r}")
    return value


def parse_faults(faults: str | Sequence[str]) -> list[Fault]:
    """
    A list of faults (`Scenario.faults`, an experiment's `faults:`). One string is one fault,
    never a sequence of one-letter faults.
    """
    if isinstance(faults, str):
        faults = [faults]
    if not isinstance(faults, Sequence):
        raise SetupError(f"faults must be a list like [stall:0.5@0.2], not {faults!r}")
    return [parse_fault(text) for text in faults]


def evidence_before_signal(faults: Sequence[Fault]) -> dict[str, str]:
    """What the journal must show (id -> event kind) before the signal, for each open connection."""
    wanted = {}
    for fault in faults:
        if fault.name == "stream":
            wanted["stream"] = Kind.REQUEST_START.value
        elif fault.name == "websocket":
            wanted["ws"] = Kind.WEBSOCKET_OPEN.value
        elif fault.name == "keepalive":
            wanted["ka1"] = Kind.CLIENT_REQUEST.value
    return wanted


def server_environment(faults: Sequence[Fault]) -> dict[str, str]:
    """Faults the probe injects from inside the server."""
    env = {}
    for fault in faults:
        if fault.name == "teardown-delay" and fault.arg is not None:
            env[TEARDOWN_DELAY_ENV] = fault.arg
    return env


@dataclass
class FaultContext:
    process: subprocess.Popen[bytes]
    journal: JournalWriter
    base_url: str
    client_timeout: float


def _injected(context: FaultContext, fault: Fault, **fields: object) -> None:
    context.journal.write(Kind.FAULT_INJECTED, fault=fault.text, **fields)


async def open_at_shutdown(context: FaultContext, faults: Sequence[Fault]) -> list[asyncio.Task[None]]:
    """Connections that must be open when the signal comes: started before it."""
    tasks = []
    for fault in faults:
        if fault.name == "stream":
            spec = workload.RequestSpec("GET", f"/__drainspec/stream?seconds={fault.arg}")
            tasks.append(asyncio.create_task(_stream(context, fault, spec)))
        elif fault.name == "websocket":
            tasks.append(asyncio.create_task(_websocket(context, fault)))
        elif fault.name == "keepalive":
            tasks.append(asyncio.create_task(_keepalive(context, fault)))
    return tasks


def timed(context: FaultContext, faults: Sequence[Fault]) -> list[asyncio.Task[None]]:
    """Faults that act at a moment after the stop signal (call right after sending it)."""
    actions: dict[str, Callable[[FaultContext, Fault], Awaitable[None]]] = {
        "second-signal": _second_signal,
        "sigkill": _sigkill,
        "stall": _stall,
        "crash-worker": _crash_worker,
    }
    return [
        asyncio.create_task(_after(fault.at, actions[fault.name](context, fault)))
        for fault in faults
        if fault.name in actions
    ]


async def _after(delay: float, action: Awaitable[None]) -> None:
    await asyncio.sleep(delay)  # the fault's moment, a chaos parameter: not a wait for readiness
    await action


async def _second_signal(context: FaultContext, fault: Fault) -> None:
    if context.process.poll() is None:
        _injected(context, fault)
        kubelet.send_signal(context.process.pid, parse_signal(fault.arg or "INT"), context.journal)


async def _sigkill(context: FaultContext, fault: Fault) -> None:
    if context.process.poll() is None:
        _injected(context, fault)
        context.journal.write(Kind.SIGKILL_SENT, target=context.process.pid, after=fault.at, fault=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(context.process.pid, signal.SIGKILL)


async def _stall(context: FaultContext, fault: Fault) -> None:
    if context.process.poll() is not None:
        return
    seconds = float(fault.arg or "0.5")
    _injected(context, fault, seconds=seconds)
    kubelet.send_signal(context.process.pid, signal.SIGSTOP, context.journal)
    try:
        await asyncio.sleep(seconds)
    finally:
        kubelet.send_signal(context.process.pid, signal.SIGCONT, context.journal)


async def _crash_worker(context: FaultContext, fault: Fault) -> None:
    workers = [e.pid for e in read_journal(context.journal.path) if e.kind == Kind.PROBE_LOADED]
    victims = [pid for pid in workers if pid != context.process.pid] or workers[:1]
    if not victims:
        return
    _injected(context, fault, target=victims[0])
    with contextlib.suppress(ProcessLookupError):
        os.kill(victims[0], signal.SIGKILL)


async def _stream(context: FaultContext, fault: Fault, spec: workload.RequestSpec) -> None:
    async with traffic.new_client(context.client_timeout) as client:
        await traffic.perform(client, context.base_url, spec, "stream", context.journal, role="stream")


async def _keepalive(context: FaultContext, fault: Fault) -> None:
    """One idle pooled connection, opened before the signal and reused `at` seconds after it."""
    import httpx  # where it is used, as in `chaos.traffic`

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    spec = workload.RequestSpec("GET", "/__drainspec/hold?seconds=0")
    async with httpx.AsyncClient(timeout=context.client_timeout, limits=limits, trust_env=False) as client:
        await traffic.perform(client, context.base_url, spec, "ka1", context.journal, role="keepalive")
        signal_seen = await _wait_for_signal(context)
        if not signal_seen:
            return
        await asyncio.sleep(fault.at)  # the fault's moment after the signal
        _injected(context, fault)
        await traffic.perform(client, context.base_url, spec, "ka2", context.journal, role="keepalive")


async def _wait_for_signal(context: FaultContext) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + context.client_timeout
    tail = JournalTail(context.journal.path)
    while loop.time() < deadline:
        if any(e.kind == Kind.SIGNAL_SENT for e in tail.poll()):
            return True
        await asyncio.sleep(0.005)
    return False


async def _websocket(context: FaultContext, fault: Fault) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = context.base_url.replace("http://", "ws://") + "/__drainspec/ws"
    fields: dict[str, object] = {"id": "ws", "sent": 0}
    try:
        async with connect(url, additional_headers={"x-drainspec-id": "ws"}, open_timeout=5) as socket:
            await socket.send("hello")
            await socket.recv()
            try:
                await asyncio.wait_for(socket.recv(), context.client_timeout)
            except ConnectionClosed as closed:
                fields.update(code=closed.rcvd.code if closed.rcvd else None, outcome="closed")
                fields["close_frame"] = closed.rcvd is not None
    except (OSError, ConnectionClosed, TimeoutError) as exc:
        fields.update(outcome="error", error=f"{type(exc).__name__}: {exc}")
    context.journal.write(Kind.CLIENT_WEBSOCKET, **fields)
