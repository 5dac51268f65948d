"""
The emulated network between the ingress proxy and a pod (`chaos.k8s.link`), against small
in-process servers: bytes, closes and resets each held for the delay and kept in order, and a
request that reaches a connection the pod had closed journaled as the keep-alive race.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from chaos import traffic
from chaos.journal import JournalWriter, Kind, read_journal
from chaos.k8s.link import Link
from chaos.target import HOST

DELAY = 0.05
POST = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def linked(pod_handler: Handler, journal_path: Path) -> AsyncIterator[Link]:
    """A pod served by `pod_handler` behind a link; both closed on the way out."""
    pod = await asyncio.start_server(pod_handler, HOST, 0)
    link = Link("pod-a", int(pod.sockets[0].getsockname()[1]), DELAY, JournalWriter(journal_path))
    await link.start()
    try:
        yield link
    finally:
        await link.close()
        pod.close()


async def exchange(link: Link, data: bytes, *, after: asyncio.Event | None = None) -> bytes:
    """Connect through the link, (once `after` is set) send `data`, and read until the link closes."""
    reader, writer = await asyncio.open_connection(HOST, link.port)
    if after is not None:
        await asyncio.wait_for(after.wait(), 5)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


def test_bytes_and_the_close_arrive_in_order_and_no_sooner_than_the_delay(tmp_path: Path) -> None:
    async def echo_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        writer.close()

    async def scenario() -> tuple[bytes, float]:
        async with linked(echo_then_close, tmp_path / "journal.jsonl") as link:
            sent = time.monotonic()
            answer = await exchange(link, b"hello")  # the echo, then the pod's close
            return answer, time.monotonic() - sent

    answer, took = asyncio.run(scenario())
    assert answer == b"hello"
    assert took >= 2 * DELAY  # there and back


def test_a_request_onto_a_connection_the_pod_closed_is_journaled_late(tmp_path: Path) -> None:
    """The pod closes an idle connection; the proxy writes before the close has reached it."""
    journal_path = tmp_path / "journal.jsonl"

    async def scenario() -> bytes:
        closed = asyncio.Event()

        async def close_when_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()  # an idle keep-alive connection timing out, at once
            closed.set()

        async with linked(close_when_idle, journal_path) as link:
            return await exchange(link, POST, after=closed)  # the close is still on the wire

    assert asyncio.run(scenario()) == b""  # no answer: the connection just closed under the request
    (late,) = [e for e in read_journal(journal_path) if e.kind == Kind.LINK_LATE_REQUEST]
    assert late.get("pod") == "pod-a" and late.get("delay") == DELAY
    assert late.t >= late.get("pod_closed") and late.get("sent_after_close") >= 0


def test_a_pod_that_closes_a_request_in_progress_is_not_the_race(tmp_path: Path) -> None:
    """The pod read the request and closed later without answering (a kill, a crash): no late request."""
    journal_path = tmp_path / "journal.jsonl"

    async def read_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)  # the request is in progress, well past any crossing on the wire
        writer.close()

    async def scenario() -> bytes:
        async with linked(read_then_drop, journal_path) as link:
            return await exchange(link, POST)

    assert asyncio.run(scenario()) == b""
    assert not [e for e in read_journal(journal_path) if e.kind == Kind.LINK_LATE_REQUEST]


def test_a_refused_pod_is_a_reset_after_the_delay(tmp_path: Path) -> None:
    async def scenario() -> type[BaseException] | None:
        pod = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = int(pod.sockets[0].getsockname()[1])
        pod.close()
        await pod.wait_closed()  # nothing listens there any more
        link = Link("gone", port, DELAY, JournalWriter(tmp_path / "journal.jsonl"))
        await link.start()
        try:
            reader, writer = await asyncio.open_connection(HOST, link.port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n")
            try:
                await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError as exc:
                return type(exc)
            return None
        finally:
            await link.close()

    assert asyncio.run(scenario()) is ConnectionResetError


def test_bursts_are_aimed_at_the_close_of_the_last_bursts_connections() -> None:
    schedule = traffic.Bursts(size=2, gap=1.0, lead=0.012, seed=3)
    assert schedule.due(1, 100.0) == schedule.due(2, 100.0) == 100.0
    schedule.answered(2, 100.2)  # the first answer of burst 0
    schedule.answered(1, 100.3)
    due = schedule.due(3, 100.0)
    assert 101.2 - 0.012 <= due <= 101.2 and schedule.due(4, 100.0) == due
    again = traffic.Bursts(size=2, gap=1.0, lead=0.012, seed=3)
    again.answered(1, 100.2)
    assert again.due(3, 100.0) == due  # the seed decides the lead
