"""The journal: whole lines from many writers, a torn last line tolerated, corruption refused."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos.errors import JournalError
from chaos.journal import Event, JournalTail, JournalWriter, parse_lines, read_journal
from chaos.validate import FIELD_TYPES

LINES_PER_WRITER = 500


def _write_many(path: str, tag: str) -> None:
    writer = JournalWriter(path)
    for n in range(LINES_PER_WRITER):
        writer.write("test.event", writer=tag, n=n, padding="x" * 200)


def test_roundtrip_keeps_fields_and_orders_by_time(tmp_path):
    writer = JournalWriter(tmp_path / "j.jsonl")
    first = writer.write("a.kind", request="r1", status=200)
    second = writer.write("b.kind")
    events = read_journal(tmp_path / "j.jsonl")
    assert events == [first, second]
    assert events[0].get("status") == 200 and events[0].pid == os.getpid()


def test_file_is_private(tmp_path):
    JournalWriter(tmp_path / "j.jsonl").write("x")
    assert (tmp_path / "j.jsonl").stat().st_mode & 0o777 == 0o600


def test_concurrent_processes_never_interleave_lines(tmp_path):
    path = str(tmp_path / "j.jsonl")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(path, tag)) for tag in "abcd"]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=30)
        assert process.exitcode == 0
    events = read_journal(path)
    assert len(events) == 4 * LINES_PER_WRITER
    for tag in "abcd":
        assert sorted(e.get("n") for e in events if e.get("writer") == tag) == list(range(LINES_PER_WRITER))


def test_lines_written_before_sigkill_survive(tmp_path):
    path = str(tmp_path / "j.jsonl")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        writer = JournalWriter(path)
        writer.write("before.kill")
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert [e.kind for e in read_journal(path)] == ["before.kill"]


def test_torn_last_line_is_tolerated():
    whole = Event(t=1, pid=2, kind="x").to_json()
    assert [e.kind for e in parse_lines([whole, '{"t": 2, "pid": 2, "ki'])] == ["x"]


def test_corrupt_middle_line_is_refused():
    whole = Event(t=1, pid=2, kind="x").to_json()
    with pytest.raises(JournalError, match="line 2"):
        parse_lines([whole, "garbage", whole])


def test_tail_returns_only_whole_new_lines(tmp_path):
    path = tmp_path / "j.jsonl"
    tail = JournalTail(path)
    assert tail.poll() == []
    line = Event(t=5, pid=1, kind="first").to_json()
    with open(path, "w") as file:
        file.write(line + "\n" + line[:10])
    assert [e.kind for e in tail.poll()] == ["first"]
    with open(path, "a") as file:
        file.write(line[10:] + "\n")
    assert [e.kind for e in tail.poll()] == ["first"]
    assert tail.poll() == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@given(
    t=st.integers(min_value=0, max_value=2**62),
    pid=st.integers(min_value=1, max_value=2**22),
    kind=st.text(min_size=1, max_size=30),
    fields=st.dictionaries(
        # Fields the verdicts read have a type (`chaos.validate.FIELD_TYPES`); any other holds anything.
        st.text(max_size=10).filter(lambda k: k not in {"t", "pid", "kind"} and k not in FIELD_TYPES),
        json_values,
        max_size=5,
    ),
)
def test_any_event_survives_the_line_format(t, pid, kind, fields):
    event = Event(t=t, pid=pid, kind=kind, fields=fields)
    assert parse_lines([event.to_json()]) == [event]


@given(st.lists(st.text(max_size=80), max_size=8))
def test_reader_never_crashes_on_garbage(lines):
    with contextlib.suppress(JournalError):
        parse_lines(lines)


def test_an_event_is_one_json_object_and_its_line_adds_the_newline() -> None:
    event = Event(t=1, pid=2, kind="x", fields={"a": "b"})
    assert event.to_json() == '{"t":1,"pid":2,"kind":"x","a":"b"}'
    assert event.to_line() == event.to_json().encode() + b"\n"
