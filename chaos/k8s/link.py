"""
The network between an ingress proxy and a pod, emulated in user space: a one-way `delay` on
every byte, every close (FIN) and every reset (RST), in both directions, in order.

Why: on loopback the pod's FIN reaches the proxy within microseconds, so the keep-alive race
(the proxy writes a request onto a pooled connection the pod has just closed, and answers 502)
almost never shows. In a cluster the FIN takes the network's time, and the proxy keeps writing
onto the connection for that long. This kernel may have no `netem`; a forwarder per pod that
holds each event for `delay` seconds widens the window the way the network does: a request the
proxy writes within `delay` after the pod closed reaches a closed socket.

Journaled, once per connection where it happened: `link.late_request`, bytes from the proxy that
reached a connection the pod had already closed (when the pod closed it, and how long after the
close the proxy wrote them): the proxy's 502 on that connection is the keep-alive race.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

from chaos.journal import JournalWriter, Kind
from chaos.target import HOST

READ_BYTES = 64 * 1024
CONNECT_SECONDS = 5.0
# How soon after bytes were handed to the pod its close may be read for them to count as having
# crossed it (the link's loop reads the close a moment late); later, the pod closed a connection
# with a request in progress, which is not the race.
CROSSING_SECONDS = 0.05

_DATA, _EOF, _RESET = "data", "eof", "reset"


@dataclass
class Link:
    """One pod's end of the network: listens on 127.0.0.1, forwards to the pod's port."""

    name: str  # the pod
    pod_port: int
    delay: float
    journal: JournalWriter
    port: int = 0
    _server: asyncio.Server | None = None
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop accepting, cut every connection, then wait for the listener (bounded)."""
        if self._server is not None:
            self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _accept(self, proxy_reader: asyncio.StreamReader, proxy_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._carry(proxy_reader, proxy_writer)
        except asyncio.CancelledError:
            pass  # the link is closing: the top of this connection's task, nothing above to tell
        finally:
            self._connections.discard(task)
            proxy_writer.transport.abort()

    async def _carry(self, proxy_reader: asyncio.StreamReader, proxy_writer: asyncio.StreamWriter) -> None:
        try:
            pod_reader, pod_writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.pod_port), CONNECT_SECONDS
            )
        except (OSError, TimeoutError):
            await asyncio.sleep(self.delay)  # the refusal travels back to the proxy too
            _reset(proxy_writer)
            return
        state = _State(proxy_port=int(proxy_writer.get_extra_info("peername")[1]))
        inbound: asyncio.Queue[tuple[float, str, bytes]] = asyncio.Queue()
        outbound: asyncio.Queue[tuple[float, str, bytes]] = asyncio.Queue()
        tasks = [
            asyncio.create_task(self._read(proxy_reader, inbound, state, from_proxy=True)),
            asyncio.create_task(self._read(pod_reader, outbound, state, from_proxy=False)),
            asyncio.create_task(self._deliver(inbound, pod_writer, state, to_pod=True)),
            asyncio.create_task(self._deliver(outbound, proxy_writer, state, to_pod=False)),
        ]
        try:
            # Done when both directions have delivered their end (a close or a reset).
            await asyncio.gather(tasks[2], tasks[3])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            pod_writer.transport.abort()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, str, bytes]],
        state: _State,
        *,
        from_proxy: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(READ_BYTES)
            except OSError:
                queue.put_nowait((loop.time() + self.delay, _RESET, b""))
                return
            now = loop.time()
            if not data:
                if not from_proxy:
                    state.pod_closed = now
                    crossed = state.handed is not None and now - state.handed <= CROSSING_SECONDS
                    if state.unanswered is not None and crossed and not state.late_journaled:
                        # Bytes handed to the pod just before its close were never answered: they
                        # crossed the close on the wire (the link read the close a moment late).
                        self._journal_late(state, sent=state.unanswered)
                queue.put_nowait((now + self.delay, _EOF, b""))
                return
            if not from_proxy:
                state.unanswered = None
            queue.put_nowait((now + self.delay, _DATA, data))

    async def _deliver(
        self,
        queue: asyncio.Queue[tuple[float, str, bytes]],
        writer: asyncio.StreamWriter,
        state: _State,
        *,
        to_pod: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, what, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if what == _RESET:
                _reset(writer)
                return
            if what == _EOF:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                    await writer.drain()
                return
            if to_pod and state.pod_closed is not None and not state.late_journaled:
                self._journal_late(state, sent=due - self.delay)
            if to_pod:
                state.handed = loop.time()
                if state.unanswered is None:
                    state.unanswered = due - self.delay
            with contextlib.suppress(OSError):
                writer.write(data)
                await writer.drain()

    def _journal_late(self, state: _State, sent: float) -> None:
        """Bytes from the proxy reached a connection the pod had closed: the keep-alive race."""
        assert state.pod_closed is not None
        state.late_journaled = True
        self.journal.write(
            Kind.LINK_LATE_REQUEST,
            pod=self.name,
            proxy_port=state.proxy_port,
            delay=self.delay,
            # The proxy wrote this long after the pod's close; the close reached the proxy `delay`
            # after it happened, and the proxy had still to read it.
            sent_after_close=round(sent - state.pod_closed, 6),
            pod_closed=int(state.pod_closed * 1e9),  # the loop's clock is the journal's (monotonic)
        )


@dataclass
class _State:
    proxy_port: int
    pod_closed: float | None = None  # loop time the pod's FIN reached the link
    unanswered: float | None = None  # when the proxy sent bytes the pod has not answered yet
    handed: float | None = None  # when the link last handed the proxy's bytes to the pod
    late_journaled: bool = False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, not a FIN (SO_LINGER 0), as a kernel answers data for a closed socket."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
