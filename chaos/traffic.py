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
import random
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from chaos.errors import SetupError, capped, message_line, one_line
from chaos.journal import Event, JournalTail, JournalWriter, Kind
from chaos.probe import REQUEST_ID_HEADER
from chaos.scenario import Scenario
from chaos.workload import SUCCESS, RequestSpec, StatusSet, plan_traffic

if TYPE_CHECKING:  # imported where requests are sent: a run spawns its server before httpx loads
    import httpx

STEADY_INTERVAL_SECONDS = 0.05
STEADY_MAX_REQUESTS = 2000

PREFLIGHT_ID_PREFIX = "preflight-"  # the id of a preflight request: "preflight-r", "preflight-b"


class Outcome(StrEnum):
    """What one request saw, from the client side."""

    OK = "ok"  # a response with an expected status and its whole body
    UNEXPECTED_STATUS = "unexpected-status"  # a whole response, with a status outside the expected set
    SERVER_ERROR = "server-error"  # a 5xx response (not expected)
    REFUSED = "refused"  # the TCP connect was refused: nobody listening
    DISCONNECTED = "disconnected"  # connected, then closed without any response
    RESET = "reset"  # the connection was reset
    TRUNCATED = "truncated"  # the response started, then the body was cut off
    TIMEOUT = "timeout"  # no answer in time (e.g. accepted by the kernel, never served)
    ERROR = "error"  # anything else


def new_client(timeout: float) -> httpx.AsyncClient:
    """
    A client that opens a new connection per request, as independent users would. Plain HTTP
    to 127.0.0.1 only, so no certificate store is loaded (`verify=False`): loading one took a
    fifth of what drainspec adds to a run (`bench/overhead.py`), for a TLS never negotiated.
    """
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False, verify=False)


async def perform(
    client: httpx.AsyncClient, base_url: str, spec: RequestSpec, request_id: str, journal: JournalWriter, **how: Any
) -> Outcome:
    """
    Make one request and journal what the client saw; never raises for a network failure.
    `how` is `send`'s keywords: the request's `role`, and the `filled_id` its `{id}` became.
    """
    event = await send(client, base_url, spec, request_id, journal, **how)
    return Outcome(event.get("outcome"))


BODY_START_CHARS = 120  # of an unexpected answer's body: enough to tell a 401 from a 404 page


async def send(
    client: httpx.AsyncClient,
    base_url: str,
    spec: RequestSpec,
    request_id: str,
    journal: JournalWriter,
    *,
    role: str,
    filled_id: str | None = None,
    within: float | None = None,
) -> Event:
    """
    `perform`, returning the `client.request` event it journaled (status, body start, error).
    `filled_id` is what `{id}` became in this request, for integrity checks to look up.
    `within` bounds the whole exchange, body included: httpx's timeout bounds each read, and a
    stream that sends a line a second (server-sent events) never trips it.
    """
    import httpx

    fields: dict[str, Any] = {"id": request_id, "role": role, "method": spec.method}
    if filled_id is not None:
        fields["filled_id"] = filled_id
    fields["path"] = spec.path
    fields["sent"] = time.monotonic_ns()
    headers = {**dict(spec.headers), REQUEST_ID_HEADER.decode(): request_id}
    content = None if spec.body is None else spec.body.encode()
    outcome = Outcome.ERROR
    try:
        async with (
            asyncio.timeout(within),
            client.stream(spec.method, base_url + spec.path, headers=headers, content=content) as response,
        ):
            fields["status"] = response.status_code
            fields["connection_close"] = response.headers.get("connection", "").lower() == "close"
            if role == "preflight" and _is_streamed(response) and response.status_code in spec.expect:
                # A stream (server-sent events, a feed) ends when the server ends it, if ever; its
                # status is the answer a preflight looks for (the run's own requests read theirs to
                # the end, and one that never ends holds the drain, which is then what is judged).
                fields["stream"] = True
                return journal.write(Kind.CLIENT_REQUEST, outcome=Outcome.OK.value, **fields)
            try:
                body = await response.aread()
            except httpx.TimeoutException:
                outcome = Outcome.TIMEOUT
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                outcome = Outcome.TRUNCATED
                fields["error"] = _describe(exc)
            else:
                fields["bytes"] = len(body)
                outcome = _judge_status(response.status_code, spec.expect)
                if outcome != Outcome.OK:
                    fields["expected"] = spec.expect.text
                    fields["body_start"] = body[:BODY_START_CHARS].decode("utf-8", errors="replace")
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
    except TimeoutError:  # `within` ran out (asyncio's own; httpx's are caught above)
        outcome = Outcome.TIMEOUT
        still = ", its body still coming" if "status" in fields else ""
        fields["error"] = f"no whole answer within {within:g}s{still}"
    return journal.write(Kind.CLIENT_REQUEST, outcome=outcome.value, **fields)


def _is_streamed(response: httpx.Response) -> bool:
    """
    A body sent as it is made: server-sent events, or chunks with no length announced (a
    `StreamingResponse`), where a whole answer would carry its `Content-Length`.
    """
    if response.headers.get("content-type", "").partition(";")[0].strip().lower() == "text/event-stream":
        return True
    chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
    return chunked and "content-length" not in response.headers


def _judge_status(status: int, expect: StatusSet) -> Outcome:
    if status in expect:
        return Outcome.OK
    return Outcome.SERVER_ERROR if status >= 500 else Outcome.UNEXPECTED_STATUS


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


def run_token() -> str:
    """A few random characters that make this run's `{id}` values unique across runs."""
    return secrets.token_hex(3)


async def preflight(client: httpx.AsyncClient, base_url: str, scenario: Scenario, journal: JournalWriter) -> None:
    """
    Each distinct request of the scenario, sent once before anything is judged (with `{seconds}`
    at 0): a status outside the expected set stops the run with one line naming the request,
    the status and the start of the body. A typo'd path (404), a missing token (401) or a bad
    body (422) would otherwise make every verdict judge nothing.
    """
    seen: set[tuple[str, RequestSpec]] = set()
    token = run_token()
    for plan in plan_traffic(scenario):
        if (plan.role, plan.spec) in seen:
            continue
        seen.add((plan.role, plan.spec))
        request_id = f"{PREFLIGHT_ID_PREFIX}{plan.id[0]}"
        rendered = plan.spec.render(seconds=0, request_id=f"{request_id}-{token}")
        within = scenario.client_timeout
        event = await send(client, base_url, rendered, request_id, journal, role="preflight", within=within)
        if event.get("outcome") == Outcome.OK:
            continue
        what = f"{rendered.method} {rendered.path}"
        status = event.get("status")
        if status is not None and event.get("outcome") == Outcome.TIMEOUT:
            raise SetupError(
                f"preflight: {what} answered {status} with a Content-Length but its body had not ended after "
                f"{within:g}s; check the endpoint (a stream, sent in chunks or as text/event-stream, is taken "
                "on its status)"
            )
        if status is None:
            raise SetupError(f"preflight: {what} got no answer ({event.get('error') or event.get('outcome')})")
        body = " ".join(str(event.get("body_start") or "").split())
        answered = f"preflight: {what} answered {status}, expected {plan.spec.expect.text}" + (
            f": {body!r}" if body else ""
        )
        raised = await _raised_by_app(journal, request_id)
        if raised:
            raise SetupError(
                f"{answered}; the app raised {raised}; fix the endpoint, or send the run's requests elsewhere "
                "(--request-path, --background-path)"
            )
        raise SetupError(f"{answered}; fix the path, --header, --json/--data, or --expect-status")


PREFLIGHT_END_WAIT_SECONDS = 1.0
RAISED_CHARS = 300  # of the app's exception: a driver's message may quote a whole statement


async def _raised_by_app(journal: JournalWriter, request_id: str) -> str | None:
    """
    What the app raised while answering the preflight request `request_id`, with where, from the
    probe's `request.end` (written once the exception has left the app, just after the answer
    was sent, so it is waited for, briefly); None when the app returned, or no end was seen.
    """
    tail = JournalTail(journal.path)
    deadline = time.monotonic() + PREFLIGHT_END_WAIT_SECONDS
    while True:
        for event in tail.poll():
            if event.kind == Kind.REQUEST_END and event.get("request") == request_id:
                if event.get("outcome") != "error":
                    return None
                error = capped(message_line(str(event.get("error"))), RAISED_CHARS)  # masked by the probe's `record`
                where = event.get("raised_at")
                return error + (f" (at {one_line(str(where))})" if where else "")
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.01)


def start_traffic(
    client: httpx.AsyncClient, base_url: str, scenario: Scenario, journal: JournalWriter
) -> dict[asyncio.Task[Outcome], str]:
    """Every request of the scenario at once; `{id}` becomes the id plus this run's token."""
    token = run_token()
    tasks = {}
    for plan in plan_traffic(scenario):
        filled = f"{plan.id}-{token}"
        rendered = plan.spec.render(seconds=plan.seconds, request_id=filled)
        coro = perform(client, base_url, rendered, plan.id, journal, role=plan.role, filled_id=filled)
        tasks[asyncio.create_task(coro)] = plan.id
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

    A request whose client has finished is given up on only on evidence too: the app's call
    for it ended (or never began) without what was waited for. A background task starts only
    after its response is sent, so a finished client alone proves nothing.
    """
    slow = {request for request in clients.values() if request.startswith("r")}
    background = {request for request in clients.values() if request.startswith("b")}
    pending_also = dict(also or {})
    started: set[str] = set()
    with_task: set[str] = set()
    ended: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scenario.in_flight_timeout
    while True:
        for event in tail.poll():
            request = event.get("request")
            if event.kind == Kind.REQUEST_START and request in slow:
                started.add(request)
            elif event.kind == Kind.TASK_STARTED and request in background:
                with_task.add(request)
            elif event.kind == Kind.REQUEST_END and request is not None:
                ended.add(request)
            who = request or event.get("id")
            if who in pending_also and pending_also[who] == event.kind:
                del pending_also[who]
        if started >= slow and with_task >= background and not pending_also:
            return
        missing = sorted((slow - started) | (background - with_task) | set(pending_also))
        if process.poll() is not None:
            raise SetupError(f"the server exited (code {process.returncode}) before work was in flight")
        done = {clients[task]: task for task in clients if task.done() and not task.cancelled()}
        hopeless = [
            request
            for request in missing
            if request in done and (request in ended or request in slow or done[request].result() != Outcome.OK)
        ]
        if hopeless or loop.time() > deadline:
            outcomes = ", ".join(f"{request}={done[request].result().value}" for request in missing if request in done)
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


# -- paced keep-alive load: many requests per second, each journaled with its connection ---------

PACED_ROLE = "paced"
PACED_CONNECTIONS = 8
PACED_TIMEOUT_SECONDS = 5.0
PACED_MAX_REQUESTS = 200_000
HEAD_LIMIT = 64 * 1024


@dataclass
class PacedStats:
    """What a paced load did: requests sent and answered OK, over how long."""

    sent: int = 0
    ok: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


async def paced_load(
    url: str,
    path: str,
    journal: JournalWriter | None,
    stop: asyncio.Event,
    *,
    rate: float,
    connections: int = PACED_CONNECTIONS,
    timeout: float = PACED_TIMEOUT_SECONDS,
    max_requests: int = PACED_MAX_REQUESTS,
    role: str = PACED_ROLE,
    resend_closed: bool = False,
    method: str = "GET",
    bursts: Bursts | None = None,
) -> PacedStats:
    """
    GET `path` at `rate` requests per second (0: as fast as the connections go) over
    `connections` keep-alive HTTP/1.1 connections until `stop` is set, the way a proxy's clients
    reuse theirs. Request k is due at start + k / rate, sent on whichever connection is free;
    a connection that fails or is told `Connection: close` is replaced. Each request is
    journaled as a `client.request` (`role`: `steady` for a replay's steady load) with the local
    port of its connection (`client_port`) and its place on it (`conn_request`). Bounded:
    `max_requests`, and `timeout` for each answer.

    `method`: a POST carries a small JSON body (a request a proxy must not retry once written).
    `bursts`: request k is due when that schedule says (`Bursts`), instead of at k / rate.

    `resend_closed`: a request written onto a reused connection that the peer closed before
    sending a single byte is sent once more on a new connection, as HTTP clients do for an
    idempotent request (RFC 9112, 9.3.1), and the event says so (`resent`). Used in front of a
    real proxy, whose reloads (the emulation of an endpoint change) close idle client
    connections; never in front of a pod, where that close is the failure being looked for.
    """
    match = re.fullmatch(r"http://([^/:]+):(\d+)", url.rstrip("/"))
    if match is None:
        raise SetupError(f"paced load needs an http://host:port URL, not {url!r}")
    host, port = match.group(1), int(match.group(2))
    loop = asyncio.get_running_loop()
    start = loop.time()
    counter = iter(range(1, max_requests + 1))
    stats = PacedStats()
    body = b"{}" if method != "GET" else b""
    body_headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if body else ""

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        local_port, on_connection = 0, 0
        for k in counter:
            if stop.is_set():
                break
            if bursts is not None or rate > 0:
                delay = (bursts.due(k, start) if bursts is not None else start + k / rate) - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
            fields: dict[str, Any] = {"id": f"k{k}", "role": role, "method": method, "path": path}
            fields["sent"] = time.monotonic_ns()
            outcome = Outcome.ERROR
            keep = False
            try:
                if reader is None or writer is None:
                    opened = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                    reader, writer = opened
                    local_port, on_connection = int(opened[1].get_extra_info("sockname")[1]), 0
                on_connection += 1
                fields["client_port"], fields["conn_request"] = local_port, on_connection
                request = (
                    f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{body_headers}".encode()
                    + REQUEST_ID_HEADER
                    + f": k{k}\r\n\r\n".encode()
                    + body
                )
                writer.write(request)
                try:
                    status, keep = await asyncio.wait_for(_read_response(reader), timeout)
                except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                    partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
                    if not (resend_closed and on_connection > 1 and not partial):
                        raise
                    writer.transport.abort()
                    again = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                    reader, writer = again
                    local_port, on_connection = int(again[1].get_extra_info("sockname")[1]), 1
                    fields["client_port"], fields["conn_request"] = local_port, on_connection
                    fields["resent"] = "the proxy closed the reused connection unanswered; sent again on a new one"
                    again[1].write(request)
                    status, keep = await asyncio.wait_for(_read_response(again[0]), timeout)
                fields["status"] = status
                if bursts is not None:
                    bursts.answered(k, loop.time())
                outcome = _judge_status(status, SUCCESS)
            except ConnectionRefusedError as exc:
                outcome, fields["error"] = Outcome.REFUSED, _describe(exc)
            except ConnectionResetError as exc:
                outcome, fields["error"] = Outcome.RESET, _describe(exc)
            except asyncio.IncompleteReadError as exc:
                outcome = Outcome.DISCONNECTED if not exc.partial else Outcome.TRUNCATED
                fields["error"] = "the connection closed before a whole response"
            except TimeoutError:
                outcome, fields["error"] = Outcome.TIMEOUT, f"no answer within {timeout:g}s"
            except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
                fields["error"] = _describe(exc)
            stats.sent += 1
            stats.ok += outcome == Outcome.OK
            if journal is not None:
                journal.write(Kind.CLIENT_REQUEST, outcome=outcome.value, **fields)
            if not keep and writer is not None:
                writer.transport.abort()
                reader = writer = None
        if writer is not None:
            writer.transport.abort()

    workers = [asyncio.create_task(connection()) for _ in range(max(1, connections))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        stats.seconds = loop.time() - start
    return stats


@dataclass
class Bursts:
    """
    A `paced_load` schedule that finds the keep-alive race: `size` requests at once, then the
    next burst aimed at the moment the server closes the connections the last one left idle.
    The server starts each connection's keep-alive timer (`gap`) when it sends a response, so
    burst b is due `gap` after the first answer of burst b-1, minus up to `lead` seconds drawn
    from `seed`: burst after burst, the proxy picks its pooled connections just before, at and
    just after the pod closes them, the moments in which a close is still on the wire.
    """

    size: int
    gap: float
    lead: float
    seed: int | None = None
    _first_answer: dict[int, float] = field(default_factory=dict)
    _rng: random.Random = field(init=False)
    _leads: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def burst_of(self, k: int) -> int:
        return (k - 1) // self.size

    def due(self, k: int, start: float) -> float:
        """The loop time request k is due (`start`: the load's own start)."""
        burst = self.burst_of(k)
        if burst == 0:
            return start
        while len(self._leads) < burst:
            self._leads.append(self._rng.uniform(0, self.lead))
        before = self._first_answer.get(burst - 1)
        if before is None:  # none of the last burst answered yet: wait its whole gap from the start
            return start + burst * self.gap
        return before + self.gap - self._leads[burst - 1]

    def answered(self, k: int, at: float) -> None:
        self._first_answer.setdefault(self.burst_of(k), at)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one whole HTTP/1.1 response; its status, and whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > HEAD_LIMIT:
        raise ValueError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # the body ends with the connection
        return int(parts[1]), False
    return int(parts[1]), headers.get("connection") != "close" and parts[0] == "HTTP/1.1"
