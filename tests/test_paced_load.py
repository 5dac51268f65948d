"""The paced keep-alive load against a small in-process HTTP server: pacing, journaling, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from chaos import traffic
from chaos.journal import JournalWriter, Kind, read_journal
from chaos.target import HOST, free_port


async def _serve(close_every: int = 0) -> asyncio.Server:
    """Answers every request 200 with a small body; says `Connection: close` every `close_every`th."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                n += 1
                close = bool(close_every and n % close_every == 0)
                extra = b"Connection: close\r\n" if close else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + extra + b"\r\nok")
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, HOST, 0)


def _load(tmp_path: Path, url: str, *, rate: float, seconds: float, connections: int = 4) -> traffic.PacedStats:
    async def main() -> traffic.PacedStats:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        journal = JournalWriter(tmp_path / "journal.jsonl")
        try:
            return await traffic.paced_load(url, "/x", journal, stop, rate=rate, connections=connections, timeout=1)
        finally:
            journal.close()

    return asyncio.run(main())


def test_paced_load_keeps_its_rate_and_journals_each_request_with_its_connection(tmp_path: Path) -> None:
    async def main() -> tuple[traffic.PacedStats, list]:
        server = await _serve(close_every=5)
        port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        journal = JournalWriter(tmp_path / "journal.jsonl")
        try:
            stats = await traffic.paced_load(f"http://{HOST}:{port}", "/x", journal, stop, rate=400, connections=4)
        finally:
            journal.close()
            server.close()
            await server.wait_closed()
        return stats, read_journal(tmp_path / "journal.jsonl")

    stats, events = asyncio.run(main())
    requests = [e for e in events if e.kind == Kind.CLIENT_REQUEST]
    assert 100 <= stats.sent <= 130 and len(requests) == stats.sent  # 400/s for 0.3 s
    assert all(e.get("outcome") == "ok" and e.get("role") == "paced" for e in requests)
    assert max(int(e.get("conn_request")) for e in requests) == 5  # closed after the 5th, as told
    assert len({e.get("client_port") for e in requests}) > 4  # replaced connections
    assert len({e.get("id") for e in requests}) == len(requests)


def test_paced_load_journals_refused_connections_and_stays_bounded(tmp_path: Path) -> None:
    stats = _load(tmp_path, f"http://{HOST}:{free_port()}", rate=200, seconds=0.2)
    events = [e for e in read_journal(tmp_path / "journal.jsonl") if e.kind == Kind.CLIENT_REQUEST]
    assert stats.sent == len(events) and stats.ok == 0 and events
    assert {e.get("outcome") for e in events} == {"refused"}
