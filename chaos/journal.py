"""
The event journal: one line of JSON per observation, all on one clock.

Every part of a run writes here: the probe inside each server process, the harness (signals,
preStop, SIGKILL, exit) and the traffic driver (one line per request). Each line is
`{"t": ..., "pid": ..., "kind": ..., **fields}` with `t = time.monotonic_ns()`. On Linux the
monotonic clock is shared by every process of the machine, so the lines of all writers merge
into one timeline by sorting on `t`.

Two ways to write, both keeping every line written before a SIGKILL:

- the harness and the traffic driver write to the journal file itself, a single `os.write` per
  line on an `O_APPEND` descriptor;
- each server process writes to a segment of its own (`SegmentWriter`): a file beside the
  journal (`segments_of`), mapped `MAP_SHARED`, so that a line is a copy into memory the kernel
  keeps when the process dies, not a system call. The probe writes several lines per request
  inside the server under test, and the system call was most of what it cost
  (`bench/probe_throughput.py`).

Readers merge the journal and its segments by time (`read_journal`, `JournalTail`), and a run
folds the segments into the journal once its servers are gone (`fold_segments`), so that the
journal a run leaves is one file. A SIGKILL can tear the line being written, so the reader
tolerates a torn *last* line in each file.

The app under test writes to the journal too (`chaos.record`), and `drainspec report` reads any
file it is given, so reading trusts nothing: a regular file only, streamed line by line under a
size cap, and every line checked against the types the verdicts rely on
(`chaos.validate.check_event`); anything else is a `JournalError` naming the line.

This module is the one place that knows the event kinds (`Kind`) and the line format.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import mmap
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import orjson

from chaos.errors import JournalError
from chaos.validate import check_event, open_input


class Kind(StrEnum):
    """Every kind of event a journal may hold, grouped by who writes it."""

    # The probe, inside each server process.
    PROBE_LOADED = "probe.loaded"
    PROBE_ERROR = "probe.error"
    PROBE_WARNING = "probe.warning"  # instrumentation that could not hook a library; the run goes on
    STARTUP_RECEIVED = "lifespan.startup.received"
    STARTUP_COMPLETE = "lifespan.startup.complete"
    STARTUP_FAILED = "lifespan.startup.failed"
    LIFESPAN_UNSUPPORTED = "lifespan.unsupported"
    SHUTDOWN_RECEIVED = "lifespan.shutdown.received"
    SHUTDOWN_COMPLETE = "lifespan.shutdown.complete"
    SHUTDOWN_FAILED = "lifespan.shutdown.failed"
    REQUEST_START = "request.start"
    # A response's start (`status`), written when its first body chunk is sent; a response sent
    # in one body (nearly all) has no start line: its end carries the `status`.
    RESPONSE_START = "request.response"
    RESPONSE_END = "request.body_end"
    REQUEST_END = "request.end"
    TASK_QUEUED = "task.queued"
    TASK_STARTED = "task.started"
    TASK_FINISHED = "task.finished"
    TASK_CANCELLED = "task.cancelled"
    TASK_FAILED = "task.failed"
    # A task the app started at startup, still pending when its lifespan shutdown completed;
    # `cancel_requested` whether the teardown had called its `cancel()` (and not awaited it).
    TASK_PENDING = "task.pending"
    WEBSOCKET_OPEN = "websocket.open"
    WEBSOCKET_CLOSED = "websocket.closed"
    APP_UNAWAITED = "app.unawaited"  # a coroutine the app dropped unawaited, e.g. a close (`chaos.probe.unawaited`)
    LOOP_LAG = "loop.lag"
    LOOP_STALL = "loop.stall"
    # The application, through `chaos.record`.
    POOL_OPEN = "pool.open"
    POOL_CLOSED = "pool.closed"
    POOL_USE_AFTER_CLOSE = "pool.use_after_close"
    # The probe's resource instrumentation (`chaos.probe.resources`): each engine, pool or client
    # the app opens, its close, and every use (a query, a command, a request), start and end.
    RESOURCE_OPEN = "resource.open"
    RESOURCE_CLOSED = "resource.closed"
    RESOURCE_USE = "resource.use"
    RESOURCE_USE_END = "resource.use_end"
    # The launcher of an app's own script (`chaos.probe.script`), in the script's process: the
    # server the script starts and how many workers it runs (`workers`), each waited for.
    SCRIPT_SERVER = "script.server"
    # The harness.
    RUN_START = "run.start"
    SERVER_SPAWNED = "server.spawned"
    SERVER_READY = "server.ready"
    IN_FLIGHT = "traffic.in_flight"  # the journal showed the scenario's work inside the app
    PRESTOP_START = "prestop.start"
    PRESTOP_END = "prestop.end"
    SIGNAL_SENT = "signal.sent"
    SIGKILL_SENT = "signal.sigkill"
    SERVER_EXITED = "server.exited"
    INTEGRITY_CHECKED = "integrity.checked"
    POD_STARTED = "pod.started"
    POD_DELETED = "pod.deleted"
    PROCESS_ESCAPED = "process.escaped"  # the app started it, it outlived the run: killed at the end
    PROCESSES_SWEPT = "processes.swept"  # the end-of-run sweep for escaped processes ran (and found `escaped`)
    STATIC_FINDING = "manifest.finding"
    # The router (the Service in front of the pod).
    ROUTER_TERMINATING = "router.terminating"
    ROUTER_REMOVED = "router.removed"
    ROUTER_UPSTREAM_FAILED = "router.upstream_failed"
    ROUTER_DECISION = "router.decision"  # each accepted connection: routed, reset or no endpoint
    ROUTER_REQUEST = "router.request"  # which request (its x-drainspec-id) a connection carried
    FAULT_INJECTED = "fault.injected"
    # A worker's exit as its reaper saw it (drainspec, the subreaper, or its server's log, as in
    # gunicorn's "Worker (pid:N) was sent SIGKILL!"): `target` the worker's pid, `signal` the signal
    # it died of (or `exit_code`), `account` who told.
    WORKER_EXITED = "worker.exited"
    # A real ingress proxy in front of the pods (`chaos.k8s.ingress`): its reloads, and each
    # request of its access log with the upstream attempts and its error log's text for them.
    PROXY_RELOADED = "proxy.reloaded"
    PROXY_REQUEST = "proxy.request"
    # The emulated network between the proxy and a pod (`chaos.k8s.link`).
    LINK_LATE_REQUEST = "link.late_request"  # the proxy wrote onto a connection the pod had closed
    # The traffic driver, one per request (and one per WebSocket).
    CLIENT_REQUEST = "client.request"
    CLIENT_WEBSOCKET = "client.websocket"


@dataclass(frozen=True)
class Event:
    """One observation. `fields` holds everything beyond the three common keys."""

    t: int
    pid: int
    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def to_line(self) -> bytes:
        """The journal line: one JSON object and its newline."""
        return encode({"t": self.t, "pid": self.pid, "kind": self.kind, **self.fields})

    def to_json(self) -> str:
        return self.to_line()[:-1].decode()

    @classmethod
    def from_json(cls, line: str | bytes) -> Event:
        """
        One journal line, checked (`chaos.validate.check_event`): the app under test writes to
        the journal too, so every field the verdicts read must have the type they assume.
        ValueError says what is wrong.
        """
        try:
            raw = json.loads(line)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(raw, dict):
            raise ValueError("a journal line must be a JSON object")
        problem = check_event(raw)
        if problem is not None:
            raise ValueError(problem)
        t, pid, kind = raw.pop("t"), raw.pop("pid"), raw.pop("kind")
        return cls(t=t, pid=pid, kind=kind, fields=raw)


def encode(event: Mapping[str, Any]) -> bytes:
    """
    One journal line, newline included. orjson: the probe writes four lines per request inside
    the server under test, and the encoding was most of its cost (`bench/probe_throughput.py`).
    What orjson refuses (an integer beyond 64 bits, a key that is not a string) goes through the
    standard library, anything else unknown as its `str`.
    """
    try:
        return orjson.dumps(event, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (json.dumps(event, separators=(",", ":"), default=str) + "\n").encode()


class JournalWriter:
    """Appends events to a journal file; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike[str], *, fd: int | None = None) -> None:
        """
        Append to `path` (created 0600 if missing, never through a link), or to `fd` when the
        run has just created the file itself (`chaos.outdir.OutputDir.create`, O_EXCL).
        """
        self.path = Path(path)
        if fd is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        else:
            os.set_blocking(fd, True)
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_APPEND)
        self._fd = fd
        self._lock = threading.Lock()

    def write(self, kind: str, **fields: Any) -> Event:
        event = Event(t=time.monotonic_ns(), pid=os.getpid(), kind=kind, fields=fields)
        self.write_event(event)
        return event

    def write_event(self, event: Event) -> None:
        self._append(event.to_line())

    def append(self, kind: str, fields: Mapping[str, Any]) -> None:
        """`write` without building an `Event`: the probe's path, once per request event."""
        self._append(encode({"t": time.monotonic_ns(), "pid": os.getpid(), "kind": kind, **fields}))

    def append_line(self, line: bytes) -> None:
        """One line already encoded, newline included (the probe's request events)."""
        self._append(line)

    def write_lines(self, lines: Iterable[str]) -> None:
        """Lines already encoded (each one JSON object, no newline), in one write."""
        self._append("".join(f"{line}\n" for line in lines).encode())

    def _append(self, data: bytes) -> None:
        # One write per line (O_APPEND): what a SIGKILLed writer wrote before the kill is whole.
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


SEGMENTS_SUFFIX = ".d"
SEGMENT_SUFFIX = ".jsonl"


def segments_of(journal: str | os.PathLike[str]) -> Path:
    """The directory of a journal's segments, one per server process: `journal.jsonl.d/`."""
    return Path(os.fspath(journal) + SEGMENTS_SUFFIX)  # any path, even one without a name (".")


class SegmentWriter:
    """
    One process's own part of a journal: a new file in `segments_of(journal)`, mapped
    `MAP_SHARED` and appended to with `mmap.write`.

    The pages of a shared file mapping belong to the kernel's page cache, so what was copied into
    them survives the process's SIGKILL as surely as an `os.write` would, without a system call
    per line. `mmap.write` copies and moves the map's position in one call under the GIL, so
    threads need no lock of their own; growing the file takes one. The file's space is reserved
    with `posix_fallocate` before it is mapped, so a full disk fails here, in Python, and never
    as a SIGBUS in the server under test. What follows the last line is zeros: readers stop at
    the first NUL (JSON text never holds one unescaped).
    """

    INITIAL_BYTES = 1 << 20

    def __init__(self, journal: str | os.PathLike[str]) -> None:
        directory = segments_of(journal)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        # A name of its own (O_EXCL, 0600, never through a link): pids repeat across PID
        # namespaces, and every pod of a replay is pid 1 in its own.
        import tempfile  # here: the harness imports this module too, and never writes a segment

        fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=SEGMENT_SUFFIX, dir=directory)
        try:
            os.posix_fallocate(fd, 0, self.INITIAL_BYTES)
            self._map = mmap.mmap(fd, self.INITIAL_BYTES)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        self.path = Path(name)
        self._fd = fd
        self._grow_lock = threading.Lock()

    def append_line(self, data: bytes) -> None:
        """One line already encoded, newline included."""
        try:
            self._map.write(data)
        except ValueError:  # no room left
            self._grow_and_write(data)

    def append(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.append_line(encode({"t": time.monotonic_ns(), "pid": os.getpid(), "kind": kind, **fields}))

    def write_lines(self, lines: Iterable[str]) -> None:
        """Lines already encoded (each one JSON object, no newline), in one copy."""
        self.append_line("".join(f"{line}\n" for line in lines).encode())

    def _grow_and_write(self, data: bytes) -> None:
        with self._grow_lock:
            while True:
                try:
                    self._map.write(data)
                    return
                except ValueError:
                    pass
                size = self._map.size()
                if self._map.tell() + len(data) <= size:
                    continue  # another thread grew it meanwhile
                grown = max(2 * size, self._map.tell() + len(data))
                os.posix_fallocate(self._fd, size, grown - size)
                self._map.resize(grown)


def segment_lines(data: bytes) -> tuple[bytes, bytes]:
    """
    A segment's bytes as its whole lines and what follows them: the zeros are cut at the first
    NUL, and a last line without its newline (torn by a SIGKILL, or still being copied) is
    returned apart.
    """
    end = data.find(b"\0")
    if end >= 0:
        data = data[:end]
    whole = data.rfind(b"\n") + 1
    return data[:whole], data[whole:]


def segment_paths(journal: str | os.PathLike[str]) -> list[Path]:
    """The journal's segment files (none when it has no segment directory)."""
    directory = segments_of(journal)
    try:
        with os.scandir(directory) as entries:
            return sorted(
                Path(entry.path)
                for entry in entries
                if entry.name.endswith(SEGMENT_SUFFIX) and entry.is_file(follow_symlinks=False)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise JournalError(f"cannot read the journal's segments in {directory}: {exc.strerror}") from None


def fold_segments(journal: JournalWriter) -> None:
    """
    Append every segment's whole lines to the journal and delete the segments: once a run's
    servers are gone, so that the journal it leaves is one file. A torn last line (its writer
    was killed while copying it) is left out, as every reader would leave it.
    """
    directory = segments_of(journal.path)
    try:
        for path in segment_paths(journal.path):
            with path.open("rb") as file:
                written = _until_zeros(file, limit=MAX_JOURNAL_BYTES)
            if written is None:
                raise JournalError(f"{path}: over {MAX_JOURNAL_BYTES // 2**20} MB; the journal cannot hold it")
            whole, _torn = segment_lines(written)
            if whole:
                journal.append_line(whole)
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            directory.rmdir()
    except OSError as exc:
        raise JournalError(f"cannot fold the journal's segments {directory} into it: {exc.strerror}") from None


def parse_lines(lines: Iterable[str], *, source: str = "journal") -> list[Event]:
    """
    Parse journal lines, tolerating a torn last line (a writer was SIGKILLed mid-write).

    A bad line anywhere else means the file is not a journal, and raises `JournalError`.
    """
    events: list[Event] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, start=1):
        if pending is not None:
            raise JournalError(f"{source}: line {pending[0]} is not a journal event: {pending[1]}")
        if not line.strip():
            continue
        try:
            events.append(Event.from_json(line))
        except (ValueError, KeyError) as exc:
            pending = (number, str(exc))
    events.sort(key=lambda event: event.t)
    return events


MAX_JOURNAL_BYTES = 64 * 1024 * 1024  # a run with 1,000 requests in flight writes about 2 MB
MAX_LINE_BYTES = 1024 * 1024


def read_journal(path: str | os.PathLike[str]) -> list[Event]:
    """
    Every event of a journal file and of its segments (`segments_of`, those not yet folded in),
    in time order, read line by line: only regular files (a FIFO or a device would never end),
    at most `MAX_JOURNAL_BYTES` in all, no line over `MAX_LINE_BYTES`. Anything else is a
    `JournalError` that says which.
    """
    budget = _Budget(MAX_JOURNAL_BYTES)
    segments = segment_paths(path)
    # A server run by hand with the probe may have written only its segments.
    events = _read_file(path, budget) if os.path.lexists(path) or not segments else []
    for segment in segments:
        events += _read_file(segment, budget, segment=True)
    events.sort(key=lambda event: event.t)
    return events


@dataclass
class _Budget:
    """The bytes a reading may still take, over the journal and all its segments."""

    left: int


def _read_file(path: str | os.PathLike[str], budget: _Budget, *, segment: bool = False) -> list[Event]:
    try:
        file = open_input(path, limit=MAX_JOURNAL_BYTES, what="journal", error=JournalError)
    except JournalError as exc:
        if not Path(path).exists():
            raise JournalError(f"cannot read journal {path}: no such file") from None
        raise JournalError(f"cannot read journal: {exc}") from None
    with file:
        if segment:
            file = io.BytesIO(_written_part(file, str(path), budget))
        return parse_lines(_lines(file, str(path), budget), source=str(path))


def _lines(file: IO[bytes], source: str, budget: _Budget) -> Iterator[str]:
    while line := file.readline(MAX_LINE_BYTES + 1):
        budget.left -= len(line)
        if len(line) > MAX_LINE_BYTES:
            raise JournalError(f"{source}: a line is longer than {MAX_LINE_BYTES // 1024} KB; is it a journal?")
        if budget.left < 0:
            raise JournalError(f"{source}: the journal grew past {MAX_JOURNAL_BYTES // 2**20} MB while it was read")
        yield line.decode("utf-8", errors="replace")


def _written_part(file: IO[bytes], source: str, budget: _Budget) -> bytes:
    """
    A segment's whole lines (`segment_lines`): up to its unwritten zeros, and without a last
    line that lacks its newline, which every reader and the fold leave out alike.
    """
    data = _until_zeros(file, limit=budget.left)
    if data is None:
        raise JournalError(f"{source}: the journal grew past {MAX_JOURNAL_BYTES // 2**20} MB while it was read")
    return segment_lines(data)[0]


def _until_zeros(file: IO[bytes], *, limit: int) -> bytes | None:
    """
    What a file holds from where it stands up to its first NUL (a segment's unwritten space) or
    its end, read a chunk at a time: a segment is mostly zeros, never read whole. None past `limit`.
    """
    data = bytearray()
    while chunk := file.read(1 << 16):
        end = chunk.find(b"\0")
        data += chunk if end < 0 else chunk[:end]
        if len(data) > limit:
            return None
        if end >= 0:
            break
    return bytes(data)


class JournalTail:
    """
    Reads the events written to a journal and its segments since the last call, in time order;
    for waiting on evidence.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offsets: dict[Path, int] = {}  # each file: the bytes of whole lines already read

    def poll(self) -> list[Event]:
        events = self._read(self.path)
        try:
            segments = segment_paths(self.path)
        except JournalError:
            segments = []
        for segment in segments:
            events += self._read(segment)
        events.sort(key=lambda event: event.t)
        return events

    def _read(self, path: Path) -> list[Event]:
        offset = self._offsets.get(path, 0)
        try:
            with open(path, "rb") as file:
                file.seek(offset)
                chunk = _until_zeros(file, limit=MAX_JOURNAL_BYTES) or b""
        except FileNotFoundError:
            return []
        # A line being written is read again whole next time: in a segment it may show its end
        # before its start (a copy into memory has no order), so only what precedes the first
        # NUL, up to its last newline, counts.
        whole, _rest = segment_lines(chunk)
        self._offsets[path] = offset + len(whole)
        events = []
        for line in whole.split(b"\n")[:-1]:
            try:
                events.append(Event.from_json(line.decode("utf-8", errors="replace")))
            except (ValueError, KeyError):
                continue
        return events


def of_kind(events: Iterable[Event], *kinds: str) -> Iterator[Event]:
    wanted = set(kinds)
    return (event for event in events if event.kind in wanted)
