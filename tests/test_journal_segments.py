"""
Each server process's own journal segment, a shared memory map: every line written before a
SIGKILL is read back, lines never interleave, a torn last line is tolerated, and readers merge
the segments with the journal by time.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from chaos import probe
from chaos.errors import JournalError
from chaos.journal import (
    Event,
    JournalTail,
    JournalWriter,
    SegmentWriter,
    fold_segments,
    parse_lines,
    read_journal,
    segment_lines,
    segment_paths,
    segments_of,
)


def _line(kind: str, t: int, **fields: object) -> bytes:
    return Event(t=t, pid=os.getpid(), kind=kind, fields=fields).to_line()


def test_every_line_written_before_a_sigkill_is_read_back(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    lines = 5_000  # past the first megabyte: the segment grows while the process writes
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        writer = SegmentWriter(journal)
        for n in range(lines):
            writer.append_line(_line("before.kill", n, n=n, padding="x" * 300))
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    events = read_journal(journal)
    assert [e.get("n") for e in events] == list(range(lines))
    assert segment_paths(journal)[0].stat().st_size > SegmentWriter.INITIAL_BYTES


def test_threads_writing_at_once_never_interleave_lines(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    writer = SegmentWriter(journal)
    per_thread = 3_000

    def write(tag: str) -> None:
        for n in range(per_thread):
            writer.append_line(_line("x", n, writer=tag, n=n, padding="y" * 100))

    threads = [threading.Thread(target=write, args=(tag,)) for tag in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    events = read_journal(journal)
    for tag in "abcd":
        assert sorted(e.get("n") for e in events if e.get("writer") == tag) == list(range(per_thread))


def test_the_segment_is_private_and_named_apart_from_another_with_the_same_pid(tmp_path: Path) -> None:
    """Every pod of a replay is pid 1 in its own PID namespace: two segments of one pid never collide."""
    journal = tmp_path / "journal.jsonl"
    first, second = SegmentWriter(journal), SegmentWriter(journal)
    assert first.path != second.path
    assert segments_of(journal).stat().st_mode & 0o777 == 0o700
    assert first.path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "written",
    [
        pytest.param(b"", id="no-newline-yet"),
        pytest.param(b'{"t":9,"pid":1,"ki', id="torn"),
        pytest.param(b'{"t":9,"pid":1,"kind":"lost"}', id="whole-but-no-newline"),
    ],
)
def test_a_torn_last_line_is_left_out_by_every_reader(tmp_path: Path, written: bytes) -> None:
    journal = tmp_path / "journal.jsonl"
    writer = SegmentWriter(journal)
    writer.append_line(_line("whole", 1))
    writer.append_line(written)  # what a SIGKILL in the middle of a copy leaves, zeros after it
    assert [e.kind for e in read_journal(journal)] == ["whole"]
    assert [e.kind for e in JournalTail(journal).poll()] == ["whole"]
    main = JournalWriter(journal)
    fold_segments(main)
    assert [e.kind for e in read_journal(journal)] == ["whole"]  # the journal stays readable


def test_a_line_copied_end_first_is_read_only_once_it_is_whole(tmp_path: Path) -> None:
    """A copy into memory has no order: a reader may see a line's end before its start."""
    journal = tmp_path / "journal.jsonl"
    writer = SegmentWriter(journal)
    tail = JournalTail(journal)
    line = _line("late", 5)
    with open(writer.path, "r+b") as file:  # the newline and the end are in, the start is not
        file.seek(10)
        file.write(line[10:])
    assert tail.poll() == []
    writer.append_line(line)
    assert [e.kind for e in tail.poll()] == ["late"]
    assert tail.poll() == []


def test_readers_merge_the_journal_and_its_segments_by_time(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    main = JournalWriter(journal)
    segment = SegmentWriter(journal)
    tail = JournalTail(journal)
    main.append_line(_line("harness", 2))
    segment.append_line(_line("probe", 1))
    segment.append_line(_line("probe", 3))
    assert [e.t for e in tail.poll()] == [1, 2, 3]
    assert [e.t for e in read_journal(journal)] == [1, 2, 3]


def test_folding_leaves_one_journal_file(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    main = JournalWriter(journal)
    main.append_line(_line("harness", 2))
    SegmentWriter(journal).append_line(_line("worker", 1))
    SegmentWriter(journal).append_line(_line("worker", 3))
    fold_segments(main)
    assert not segments_of(journal).exists()
    assert [e.t for e in read_journal(journal)] == [1, 2, 3]
    assert len(journal.read_bytes().splitlines()) == 3


def test_only_regular_segment_files_are_read(tmp_path: Path) -> None:
    """A reader of a journal it was handed reads its segments, and nothing a link or a FIFO points at."""
    journal = tmp_path / "journal.jsonl"
    JournalWriter(journal).append_line(_line("harness", 1))
    segments_of(journal).mkdir()
    os.mkfifo(segments_of(journal) / "fifo.jsonl")
    (segments_of(journal) / "link.jsonl").symlink_to(journal)
    assert [e.kind for e in read_journal(journal)] == ["harness"]


def test_a_worker_forked_from_a_preloaded_arbiter_writes_its_own_segment(probe_journal: Path) -> None:
    """The map is shared with the arbiter after a fork: a worker writing there would mix lines."""
    journal = probe_journal
    probe.record("arbiter.line")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        probe.record("worker.line")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    probe.record("arbiter.again")
    by_pid = {path.name.split("-")[0]: kinds_in(path) for path in segment_paths(journal)}
    assert by_pid == {str(os.getpid()): ["arbiter.line", "arbiter.again"], str(pid): ["worker.line"]}


def kinds_in(segment: Path) -> list[str]:
    whole, _torn = segment_lines(segment.read_bytes())
    return [e.kind for e in parse_lines(whole.decode().splitlines())]


@pytest.mark.parametrize("given", [".", "/"], ids=["dot", "root"])
def test_a_directory_given_as_a_journal_is_refused_in_one_line(given: str) -> None:
    """Found by the CLI fuzz test: `drainspec report .` crashed looking for the segments of `.`."""
    with pytest.raises(JournalError, match="is a directory"):
        read_journal(given)
