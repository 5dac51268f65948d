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
`router.removed` (the last router stopped sending new connections), and every upstream
connect that failed, with the time, so `no-refused-while-routed` can judge the window between.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from dataclasses import dataclass

from chaos.journal import JournalWriter, Kind
from chaos.target import HOST


@dataclass
class Endpoint:
    name: str
    port: int
    routed: bool = True
    terminating: bool = False


class Router:
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

    def terminate(self, name: str) -> None:
        """The pod was deleted: keep routing new connections to it for `propagation` seconds."""
        endpoint = self.endpoints[name]
        endpoint.terminating = True
        self.journal.write(Kind.ROUTER_TERMINATING, endpoint=name, propagation=self.propagation)
        task = asyncio.get_running_loop().create_task(self._remove_later(endpoint))
        self._removals.add(task)

    async def _remove_later(self, endpoint: Endpoint) -> None:
        await asyncio.sleep(self.propagation)
        endpoint.routed = False
        self.journal.write(Kind.ROUTER_REMOVED, endpoint=endpoint.name)

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
        endpoint = self._pick()
        if endpoint is None:
            _abort(client_writer)
            return
        if endpoint.terminating and self.reset_rate and self._random.random() < self.reset_rate:
            self.journal.write(Kind.FAULT_INJECTED, fault="router-reset", endpoint=endpoint.name)
            _abort(client_writer)
            return
        if self.latency:
            await asyncio.sleep(self.latency)  # the injected latency itself
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, endpoint.port)
        except OSError as exc:
            self.journal.write(Kind.ROUTER_UPSTREAM_FAILED, endpoint=endpoint.name, error=str(exc))
            _abort(client_writer)
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer),
            _pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )
        for writer in (client_writer, upstream_writer):
            writer.close()

    async def close(self) -> None:
        for task in (*self._removals, *self._connections):
            task.cancel()
        await asyncio.gather(*self._removals, *self._connections, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
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
