"""
The probe writes every request's events as hand-built lines (its hot path): each must be exactly
what `record` would have written, kinds and fields alike, or the verdicts read nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from pathlib import Path

import pytest

from chaos import probe
from chaos.journal import Kind, read_journal, segments_of
from chaos.judge import timeline


async def _single_body(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _streamed(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 206, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": b"b"})


async def _enum_status(scope, receive, send) -> None:
    from http import HTTPStatus

    await send({"type": "http.response.start", "status": HTTPStatus.ACCEPTED, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _fails_after_the_start(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 500, "headers": []})
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("app", "kinds", "status"),
    [
        pytest.param(
            _single_body,
            [Kind.REQUEST_START, Kind.RESPONSE_END, Kind.REQUEST_END],
            201,
            id="one-body: its end has the status",
        ),
        pytest.param(
            _streamed,
            [Kind.REQUEST_START, Kind.RESPONSE_START, Kind.RESPONSE_END, Kind.REQUEST_END],
            206,
            id="streamed: its start is written",
        ),
        pytest.param(
            _enum_status,
            [Kind.REQUEST_START, Kind.RESPONSE_END, Kind.REQUEST_END],
            202,
            id="a status given as HTTPStatus: written as its number",
        ),
        pytest.param(
            _fails_after_the_start,
            [Kind.REQUEST_START, Kind.RESPONSE_START, Kind.REQUEST_END],
            500,
            id="begun, never ended: its start is written",
        ),
    ],
)
def test_a_request_through_the_probe_journals_what_the_timeline_reads(
    probe_journal: Path, app, kinds: list[Kind], status: int
) -> None:
    journal = probe_journal

    async def scenario() -> None:
        async def receive() -> dict:
            return {"type": "http.request"}

        async def send(message: dict) -> None:
            pass

        wrapped = probe.Probe(app)
        headers = [(probe.REQUEST_ID_HEADER, b'r"1')]
        with contextlib.suppress(RuntimeError):
            await wrapped({"type": "http", "method": "POST", "path": '/a"b', "headers": headers}, receive, send)
        wrapped.watchdog.stop()

    asyncio.run(scenario())
    events = read_journal(journal)
    requests = [e for e in events if e.get("request") == 'r"1']
    assert [e.kind for e in requests] == kinds
    assert requests[0].get("method") == "POST" and requests[0].get("path") == '/a"b'
    assert [e.get("status") for e in requests if e.get("status") is not None] == [status]
    assert requests[-1].get("outcome") == ("returned" if app is not _fails_after_the_start else "error")
    view = timeline.build(events).request('r"1')
    assert view.status == status and (view.response_end is not None) == (Kind.RESPONSE_END in kinds)


def test_a_forked_worker_journals_its_own_pid() -> None:
    """The probe keeps its pid (one syscall less per event); a worker forked from a preloaded
    arbiter must still write its own, or every request would be judged as the arbiter's."""
    import os

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os._exit(0 if probe._pid == os.getpid() and probe._new_id("s").startswith(f"s{os.getpid()}.") else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_failed_request_journals_what_the_app_raised_where_and_no_password(probe_journal: Path) -> None:
    journal = probe_journal

    def connect(dsn: str) -> None:
        raise ConnectionError(f"cannot reach {dsn}")

    async def app(scope: dict, receive: object, send: object) -> None:
        connect("postgresql://shop:hunter2@127.0.0.1/stock")

    async def receive() -> dict:
        return {"type": "http.request"}

    async def send(message: dict) -> None:
        pass

    async def scenario() -> None:
        wrapped = probe.Probe(app)
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [(probe.REQUEST_ID_HEADER, b"r1")]}
        with contextlib.suppress(ConnectionError):
            await wrapped(scope, receive, send)
        wrapped.watchdog.stop()

    asyncio.run(scenario())
    end = next(e for e in read_journal(journal) if e.kind == Kind.REQUEST_END)
    assert end.get("error") == "ConnectionError: cannot reach postgresql://shop:***@127.0.0.1/stock"
    line = connect.__code__.co_firstlineno + 1
    assert end.get("raised_at") == f"tests/test_probe_lines.py:{line} in connect"
    assert not any(
        "hunter2" in path.read_text(errors="replace") for path in journal.parent.rglob("*") if path.is_file()
    )


@pytest.mark.parametrize(
    ("host", "error", "task", "in_thread"),
    [
        pytest.param(None, None, None, False, id="a query in a request"),
        pytest.param("db.internal:5432", 'OperationalError: "closed"', None, False, id="host and error quoted"),
        pytest.param(None, None, 'a"1', False, id="in a background task"),
        pytest.param(None, None, None, True, id="from a worker thread"),
    ],
)
def test_a_resource_use_line_is_what_record_writes(
    probe_journal: Path, host: str | None, error: str | None, task: str | None, in_thread: bool
) -> None:
    """Every query of an app is written by hand (`resources._write_use`): field for field, in
    order, it must be the line `record` writes, or the verdicts on resources read nothing."""
    import threading

    from chaos.probe import resources

    resource = resources._Resource('4.ab"c.1')
    extra = {key: value for key, value in (("host", host), ("error", error)) if value is not None}

    def both() -> None:
        probe.current_request.set('r"7')
        if task is not None:
            probe.current_task.set(task)
        resources._write_use(resource, "SELECT 1", 123, host, error)
        probe.record(Kind.RESOURCE_USE, resource=resource.id, op="SELECT 1", start=123, **extra)

    context = contextvars.copy_context()
    if in_thread:
        worker = threading.Thread(target=context.run, args=(both,), name="worker 1")
        worker.start()
        worker.join(timeout=10)
    else:
        context.run(both)
    by_hand, recorded = (
        {key: value for key, value in json.loads(line).items() if key != "t"} for line in _raw_lines(probe_journal)
    )
    assert list(by_hand.items()) == list(recorded.items())
    assert by_hand["request"] == 'r"7' and by_hand.get("thread") == ("worker 1" if in_thread else None)


def _raw_lines(journal: Path) -> list[str]:
    """The lines of this process's journal segment as written, in order."""
    (segment,) = segments_of(journal).iterdir()
    return segment.read_bytes().split(b"\0", 1)[0].decode().splitlines()
