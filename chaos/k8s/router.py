"""
The Service: a local TCP proxy that plays kube-proxy (or a load balancer) in front of the pod.

When the pod is deleted its endpoint turns `terminating`, but routers learn of it late: this
one keeps sending *new* connections to it for `propagation` seconds, then stops. Connections
already established stay pinned to it (as conntrack keeps them), whatever happens to routing.
A connection with no endpoint left is closed at once, as a Service without endpoints rejects it.

Chaos: `latency` delays every new connection before it reaches the pod, and `reset_rate` resets
that fraction of the new connections made once the pod is terminating (seeded, each reset
journaled as `fault.injected`), as a flaky load balancer does during a rollout.

Journaled: `router.terminating` (the deletion reached the data plane's input) and
`router.removed` (the last router stopped sending new connections), every upstream connect that
failed, and, for every connection, the router's own decision at the moment it accepted it
(`router.decision`: routed to an endpoint, reset by the chaos, or refused with no endpoint left)
and which request it carried (`router.request`, from its `x-drainspec-id` header). A client's
send time says nothing about when the router saw it: a request sent just before the endpoint's
removal may be accepted just after it, and refused by the router, not by the pod.
`no-refused-while-routed` judges each request by the decision made for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos.journal import JournalWriter, Kind
from chaos.probe import REQUEST_ID_HEADER
from chaos.target import HOST

HEAD_BYTES = 16 * 1024  # how much of a request the router reads to find its id
HEAD_WAIT_SECONDS = 0.5  # how long a refused connection is read for its id before the reset

ROUTED = "routed"
RESET = "reset"
NO_ENDPOINT = "no-endpoint"


@dataclass
class Endpoint:
    name: str
    port: int
    routed: bool = True
    terminating: bool = False


class Routing:
    """
    What every router of a replay shares, the builtin one and a real proxy alike: the pod
    endpoints, and each one's removal `propagation` seconds after the pod's deletion (routers
    learn of it late). A real proxy reloads its upstreams in `_unrouted`.
    """

    journal: JournalWriter
    propagation: float
    endpoints: dict[str, Endpoint]
    _removals: set[asyncio.Task[None]]

    def terminate(self, name: str) -> None:
        """The pod was deleted: keep routing new connections to it for `propagation` seconds."""
        endpoint = self.endpoints[name]
        endpoint.terminating = True
        self.journal.write(Kind.ROUTER_TERMINATING, endpoint=name, propagation=self.propagation)
        task = asyncio.get_running_loop().create_task(self._remove_later(endpoint))
        self._removals.add(task)

    async def removed(self, timeout: float) -> bool:
        """
        Wait (at most `timeout` seconds) until every terminating endpoint has stopped being
        routed; True once none is routed any more. Load meant to reach a terminating pod runs
        until then, whether or not the pod is still alive: in a cluster, new connections in that
        window are refused by a pod that has exited.
        """
        pending = [task for task in self._removals if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        return not any(e.terminating and e.routed for e in self.endpoints.values())

    async def _remove_later(self, endpoint: Endpoint) -> None:
        await asyncio.sleep(self.propagation)
        endpoint.routed = False
        await self._unrouted(endpoint)
        self.journal.write(Kind.ROUTER_REMOVED, endpoint=endpoint.name)

    async def _unrouted(self, endpoint: Endpoint) -> None:
        """The endpoint just stopped being routed: nothing more to do for the builtin router."""


class Router(Routing):
    def __init__(
        self,
        journal: JournalWriter,
        *,
        propagation: float,
        latency: float = 0.0,
        reset_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.journal = journal
        self.propagation = propagation
        self.latency = latency
        self.reset_rate = reset_rate
        self._random = random.Random(seed)
        self.endpoints: dict[str, Endpoint] = {}
        self._cycle = itertools.count()
        self._connection_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._removals: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def add(self, name: str, port: int) -> None:
        self.endpoints[name] = Endpoint(name, port)

    def _pick(self) -> Endpoint | None:
        """
        Round robin over every routed endpoint. A terminating one is not avoided: until its
        propagation delay has passed, a router does not know it is terminating.
        """
        routed = [e for e in self.endpoints.values() if e.routed]
        return routed[next(self._cycle) % len(routed)] if routed else None

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        try:
            await self._serve(client_reader, client_writer)
        except asyncio.CancelledError:
            # The router is closing (the run ended, or Ctrl-C). asyncio's stream server logs a
            # cancelled client handler as an error with a traceback; the connection simply ends.
            _abort(client_writer)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        """One client connection: decide at accept, journal the decision, then route or refuse it."""
        accepted = time.monotonic_ns()
        conn = next(self._connection_ids)
        endpoint = self._pick()
        decision = ROUTED
        if endpoint is None:
            decision = NO_ENDPOINT
        elif endpoint.terminating and self.reset_rate and self._random.random() < self.reset_rate:
            decision = RESET
        self._decided(conn, decision, endpoint, accepted, client_writer)
        identify = self._identifier(conn)
        if endpoint is None or decision != ROUTED:
            if decision == RESET and endpoint is not None:
                self.journal.write(Kind.FAULT_INJECTED, fault="router-reset", endpoint=endpoint.name, conn=conn)
            await _read_head(client_reader, identify)  # which request it was, then the reset
            _abort(client_writer)
            return
        if self.latency:
            await asyncio.sleep(self.latency)  # the injected latency itself
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, endpoint.port)
        except OSError as exc:
            self.journal.write(Kind.ROUTER_UPSTREAM_FAILED, endpoint=endpoint.name, error=str(exc), conn=conn)
            await _read_head(client_reader, identify)
            _abort(client_writer)
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer, identify),
            _pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            writer.close()

    def _decided(
        self, conn: int, decision: str, endpoint: Endpoint | None, accepted: int, writer: asyncio.StreamWriter
    ) -> None:
        """Journal the decision for one accepted connection, with its accept time and client port."""
        peer = writer.get_extra_info("peername")
        self.journal.write(
            Kind.ROUTER_DECISION,
            conn=conn,
            decision=decision,
            endpoint=endpoint.name if endpoint is not None else None,
            terminating=bool(endpoint is not None and endpoint.terminating),
            accepted=accepted,
            client_port=int(peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else 0,
        )

    def _identifier(self, conn: int) -> Callable[[bytes], None]:
        """Journal which request a connection carried, once its head has been read."""

        def identify(head: bytes) -> None:
            request_id = request_id_of(head)
            if request_id is not None:
                self.journal.write(Kind.ROUTER_REQUEST, conn=conn, id=request_id)

        return identify

    async def close(self) -> None:
        for task in (*self._removals, *self._connections):
            task.cancel()
        await asyncio.gather(*self._removals, *self._connections, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


def request_id_of(head: bytes) -> str | None:
    """The `x-drainspec-id` of an HTTP request head, if the head holds one."""
    for line in head.split(b"\r\n")[1:]:
        if not line:
            break
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == REQUEST_ID_HEADER:
            text = value.strip().decode("latin-1")
            return text[:200] or None
    return None


async def _read_head(reader: asyncio.StreamReader, identify: Callable[[bytes], None]) -> None:
    """Read what a refused client sent, briefly, to learn which request it was."""
    head = b""
    with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        async with asyncio.timeout(HEAD_WAIT_SECONDS):
            while b"\r\n\r\n" not in head and len(head) < HEAD_BYTES:
                chunk = await reader.read(HEAD_BYTES - len(head))
                if not chunk:
                    break
                head += chunk
    identify(head)


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, identify: Callable[[bytes], None] | None = None
) -> None:
    """Copy one direction of a connection; `identify` is given the request head as it passes."""
    head = b""
    try:
        while data := await reader.read(65536):
            if identify is not None:
                head += data
                if b"\r\n\r\n" in head or len(head) >= HEAD_BYTES:
                    identify(head)
                    identify, head = None, b""
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        _abort(writer)
        return
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
