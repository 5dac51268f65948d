"""
The probe writes every request's four events as hand-built lines (its hot path): each must be
exactly what `record` would have written, kinds and fields alike, or the verdicts read nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaos import probe
from chaos.journal import Kind, read_journal


def test_a_request_through_the_probe_journals_the_four_kinds_the_timeline_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv(probe.JOURNAL_ENV, str(journal))
    monkeypatch.setattr(probe, "_writer", None)

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        async def receive() -> dict:
            return {"type": "http.request"}

        async def send(message: dict) -> None:
            pass

        wrapped = probe.Probe(app)
        headers = [(probe.REQUEST_ID_HEADER, b'r"1')]
        await wrapped({"type": "http", "method": "POST", "path": '/a"b', "headers": headers}, receive, send)
        wrapped.watchdog.stop()

    asyncio.run(scenario())
    events = [e for e in read_journal(journal) if e.get("request") == 'r"1']
    assert [e.kind for e in events] == [Kind.REQUEST_START, Kind.RESPONSE_START, Kind.RESPONSE_END, Kind.REQUEST_END]
    assert events[0].get("method") == "POST" and events[0].get("path") == '/a"b'
    assert events[1].get("status") == 201
    assert events[3].get("outcome") == "returned"


def test_a_forked_worker_journals_its_own_pid() -> None:
    """The probe keeps its pid (one syscall less per event); a worker forked from a preloaded
    arbiter must still write its own, or every request would be judged as the arbiter's."""
    import os

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os._exit(0 if probe._pid == os.getpid() and probe._new_id("s").startswith(f"s{os.getpid()}.") else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
