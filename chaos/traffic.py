"""
Client load, and what each request saw.

Every request carries an `x-drainspec-id` header, so the probe journals it under the same id
and the report can put the client's view beside the server's. Each request writes one
`client.request` event when it ends, with its send time and one `Outcome`.

Three kinds of load, one per question: the scenario's slow requests and background requests,
put in flight before the signal (`start_traffic`, then `wait_in_flight` on the journal's
evidence); and a steady stream of new requests through the router during a replay
(`steady_load`), to see what arrives while the pod is terminating.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from chaos.errors import SetupError
from chaos.journal import JournalTail, JournalWriter, Kind
from chaos.probe import REQUEST_ID_HEADER
from chaos.scenario import Scenario

STEADY_INTERVAL_SECONDS = 0.05
STEADY_MAX_REQUESTS = 2000


class Outcome(StrEnum):
    """What one request saw, from the client side."""

    OK = "ok"  # a response below 500 with its whole body
    SERVER_ERROR = "server-error"  # a 5xx response
    REFUSED = "refused"  # the TCP connect was refused: nobody listening
    DISCONNECTED = "disconnected"  # connected, then closed without any response
    RESET = "reset"  # the connection was reset
    TRUNCATED = "truncated"  # the response started, then the body was cut off
    TIMEOUT = "timeout"  # no answer in time (e.g. accepted by the kernel, never served)
    ERROR = "error"  # anything else


@dataclass(frozen=True)
class RequestSpec:
    """One request to make: `METHOD /path?query`, with `{seconds}` and `{id}` filled in."""

    method: str
    path: str

    @classmethod
    def parse(cls, text: str) -> RequestSpec:
        method, _, path = text.strip().rpartition(" ")
        method = method.strip().upper() or "GET"
        if not path.startswith("/"):
            raise ValueError(f"request path {text!r} must start with '/', e.g. 'GET /slow'")
        return cls(method=method, path=path)

    def render(self, *, seconds: float, request_id: str) -> RequestSpec:
        return RequestSpec(self.method, self.path.format(seconds=seconds, id=request_id))


def new_client(timeout: float) -> httpx.AsyncClient:
    """A client that opens a new connection per request, as independent users would."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


async def perform(
    client: httpx.AsyncClient,
    base_url: str,
    spec: RequestSpec,
    request_id: str,
    journal: JournalWriter,
    *,
    role: str,
) -> Outcome:
    """Make one request and journal what the client saw; never raises for a network failure."""
    fields: dict[str, Any] = {"id": request_id, "role": role, "method": spec.method}
    fields["path"] = spec.path
    fields["sent"] = time.monotonic_ns()
    headers = {REQUEST_ID_HEADER.decode(): request_id}
    outcome = Outcome.ERROR
    try:
        async with client.stream(spec.method, base_url + spec.path, headers=headers) as response:
            fields["status"] = response.status_code
            fields["connection_close"] = response.headers.get("connection", "").lower() == "close"
            try:
                body = await response.aread()
            except httpx.TimeoutException:
                outcome = Outcome.TIMEOUT
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                outcome = Outcome.TRUNCATED
                fields["error"] = _describe(exc)
            else:
                fields["bytes"] = len(body)
                outcome = Outcome.OK if response.status_code < 500 else Outcome.SERVER_ERROR
    except httpx.ConnectError as exc:
        outcome = Outcome.REFUSED if _is_refused(exc) else Outcome.ERROR
        fields["error"] = _describe(exc)
    except httpx.TimeoutException as exc:
        outcome = Outcome.TIMEOUT
        fields["error"] = _describe(exc)
    except httpx.RemoteProtocolError as exc:
        outcome = Outcome.DISCONNECTED
        fields["error"] = _describe(exc)
    except httpx.ReadError as exc:
        outcome = Outcome.RESET
        fields["error"] = _describe(exc)
    except httpx.HTTPError as exc:
        fields["error"] = _describe(exc)
    journal.write(Kind.CLIENT_REQUEST, outcome=outcome.value, **fields)
    return outcome


def _is_refused(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return True
        if "refused" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def start_traffic(
    client: httpx.AsyncClient, base_url: str, scenario: Scenario, journal: JournalWriter
) -> dict[asyncio.Task[Outcome], str]:
    """The slow requests (`r1..`) and the background-task requests (`b1..`), all at once."""
    try:
        slow = RequestSpec.parse(scenario.request_path)
        background = RequestSpec.parse(scenario.background_path)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    plans = [(f"r{n}", slow, scenario.request_seconds, "slow") for n in range(1, scenario.requests + 1)]
    plans += [
        (f"b{n}", background, scenario.background_seconds, "background") for n in range(1, scenario.background + 1)
    ]
    tasks = {}
    for request_id, spec, seconds, role in plans:
        try:
            rendered = spec.render(seconds=seconds, request_id=request_id)
        except (KeyError, IndexError, ValueError) as exc:
            raise SetupError(
                f"request path {spec.path!r} has a placeholder drainspec cannot fill ({exc}); "
                "use {seconds} and {id} only"
            ) from None
        coro = perform(client, base_url, rendered, request_id, journal, role=role)
        tasks[asyncio.create_task(coro)] = request_id
    return tasks


async def wait_in_flight(
    tail: JournalTail,
    clients: Mapping[asyncio.Task[Outcome], str],
    scenario: Scenario,
    process: Any,
    also: Mapping[str, str] | None = None,
) -> None:
    """
    Wait for evidence, not time: every slow request has started inside the app, every
    background request has a task running, and each id in `also` has shown its event kind.
    Only then is the stop signal meaningful.
    """
    slow = {f"r{n}" for n in range(1, scenario.requests + 1)}
    background = {f"b{n}" for n in range(1, scenario.background + 1)}
    pending_also = dict(also or {})
    started: set[str] = set()
    with_task: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scenario.in_flight_timeout
    while True:
        for event in tail.poll():
            request = event.get("request")
            if event.kind == Kind.REQUEST_START and request in slow:
                started.add(request)
            elif event.kind == Kind.TASK_STARTED and request in background:
                with_task.add(request)
            who = request or event.get("id")
            if who in pending_also and pending_also[who] == event.kind:
                del pending_also[who]
        if started >= slow and with_task >= background and not pending_also:
            return
        missing = sorted((slow - started) | (background - with_task) | set(pending_also))
        if process.poll() is not None:
            raise SetupError(f"the server exited (code {process.returncode}) before work was in flight")
        if all(task.done() for task in clients) or loop.time() > deadline:
            outcomes = ", ".join(
                f"{clients[task]}={task.result().value}"
                for task in clients
                if task.done() and not task.cancelled() and clients[task] in missing
            )
            raise SetupError(
                f"requests {', '.join(missing)} never got in flight inside the app"
                + (f" (client saw: {outcomes})" if outcomes else "")
                + "; check --request-path/--background-path and that they are slow enough"
            )
        await asyncio.sleep(0.01)


async def steady_load(
    client: httpx.AsyncClient, url: str, path: str, journal: JournalWriter, stop: asyncio.Event
) -> None:
    """New requests every 50 ms until `stop` is set; bounded in count and in the wait at the end."""
    spec = RequestSpec("GET", path)
    tasks: list[asyncio.Task[Outcome]] = []
    try:
        for n in range(1, STEADY_MAX_REQUESTS + 1):
            tasks.append(asyncio.create_task(perform(client, url, spec, f"s{n}", journal, role="steady")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STEADY_INTERVAL_SECONDS)
            if stop.is_set():
                break
        if tasks:
            await asyncio.wait(tasks, timeout=10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
