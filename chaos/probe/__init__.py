"""
In-server instrumentation: the eyes drainspec has inside each server process.

`Probe` wraps any ASGI app, so user code needs no change. It writes to the journal named by
`DRAINSPEC_JOURNAL`:

- lifespan startup/shutdown, received and completed (or failed);
- each request: start, response start (status), last body byte, and the return or cancellation
  of the ASGI call. Starlette runs background tasks inside that call, so its end is the end of
  all the work a request caused;
- each Starlette background task: queued, started, finished, cancelled or failed. Sync tasks
  record their end from their own thread, because a cancelled `await` leaves the thread running;
- each bare `asyncio` task an endpoint spawns (fire-and-forget work nobody awaits);
- event-loop lag from a heartbeat, and a watchdog thread that records the main thread's stack
  while the loop is stalled, so the report can name the blocking frame.

The resources the app opens (database engines and pools, Redis, HTTP clients) are seen by
`chaos.probe.resources`, installed by `chaos.probe.loader` unless `DRAINSPEC_INSTRUMENT=0`. Apps
add their own events for anything else (`pool.open`, `pool.closed`, `pool.use_after_close`)
with `record`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from json.encoder import encode_basestring_ascii as _quote  # the C encoder of one JSON string
from threading import get_ident
from time import monotonic_ns
from typing import Any

from chaos.environment import JOURNAL_ENV, STALL_ENV, TEARDOWN_DELAY_ENV
from chaos.journal import JournalWriter, Kind, SegmentWriter
from chaos.redact import redact_text

REQUEST_ID_HEADER = b"x-drainspec-id"
DEFAULT_STALL_MS = 250.0
HEARTBEAT_SECONDS = 0.02

# Code under these directories is plumbing (frameworks, drivers, the standard library): the
# tasks it spawns are not work an app forgot to await.
_LIBRARY_DIRS = tuple({os.path.dirname(os.__file__), *(p for p in sys.path if p.endswith("-packages"))})

current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("drainspec_request", default=None)
# The background task running now (Starlette's, or a task an endpoint spawned): a resource used
# from it is attributed to the task as well as to its request.
current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("drainspec_task", default=None)

_writer: SegmentWriter | JournalWriter | None = None
_writer_lock = threading.Lock()
_main_ident = threading.get_ident()
_ids = itertools.count(1)
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Coroutine[Any, Any, Message]]
Send = Callable[[Message], Awaitable[None]]  # as ASGI types it: any awaitable
ASGIApp = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]


def _journal() -> SegmentWriter | JournalWriter | None:
    global _writer
    if _writer is None:
        path = os.environ.get(JOURNAL_ENV)
        if not path:
            return None
        with _writer_lock:
            if _writer is None:
                _writer = _open_writer(path)
    return _writer


def _open_writer(path: str) -> SegmentWriter | JournalWriter:
    """
    This process's own segment of the journal; where none can be made (a directory the probe
    may not create), the journal file itself, a system call per line.
    """
    try:
        return SegmentWriter(path)
    except OSError:
        return JournalWriter(path)


_QUOTED_TEXT = ("error", "message")


def record(kind: str, **fields: Any) -> None:
    """
    Write one event to the run's journal; a no-op outside a drainspec run.

    The current request id (if any) and the thread name are added, so the report can say
    which request or thread did it: `record("pool.use_after_close", pool="main")`. The text an
    app's exception carries (`error`, `message`) is written with URL passwords masked: the
    reports quote it, and a driver's error may quote its DSN.
    """
    writer = _writer or _journal()
    if writer is None:
        return
    for name in _QUOTED_TEXT:
        if isinstance(text := fields.get(name), str):
            fields[name] = redact_text(text)
    request = current_request.get()
    if request is not None:
        fields.setdefault("request", request)
    task = current_task.get()
    if task is not None:
        fields.setdefault("task", task)
    if get_ident() != _main_ident:
        fields.setdefault("thread", threading.current_thread().name)
    writer.append(kind, fields)


_pid = os.getpid()
_pid_text = str(_pid)  # as every hand-built line writes it: an int's decimal digits cost more than the rest


def _forked() -> None:
    """A gunicorn worker is not its arbiter: its own pid, its own main thread, its own segment."""
    global _pid, _pid_text, _main_ident, _writer, _writer_lock
    _pid = os.getpid()
    _pid_text = str(_pid)
    _main_ident = threading.get_ident()
    _writer = None  # the arbiter's map is shared with the arbiter: writing there would mix lines
    _writer_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)

# The four kinds of every request, quoted once: an enum member's `.value` costs more than the
# rest of a line.
_REQUEST_START = _quote(Kind.REQUEST_START.value)
_RESPONSE_START = _quote(Kind.RESPONSE_START.value)
_RESPONSE_END = _quote(Kind.RESPONSE_END.value)
_REQUEST_END = _quote(Kind.REQUEST_END.value)


def _whose() -> str:
    """The task and thread fields `record` adds, as JSON (`,"key":value` pairs), when a request has them."""
    fields = ""
    task = current_task.get()
    if task is not None:
        fields += f',"task":{_quote(task)}'
    if get_ident() != _main_ident:
        fields += f',"thread":{_quote(threading.current_thread().name)}'
    return fields


def _new_id(prefix: str) -> str:
    return f"{prefix}{_pid_text}.{next(_ids)}"


def _name_of(func: Any) -> str:
    func = getattr(func, "func", func)  # functools.partial
    frame = getattr(func, "cr_frame", None)
    module = frame.f_globals.get("__name__") if frame is not None else None
    module = module or getattr(func, "__module__", None) or "?"
    return f"{module}.{getattr(func, '__qualname__', repr(func))}"


# --- Starlette background tasks ---------------------------------------------------------------


def patch_starlette_background() -> bool:
    """
    Instrument `starlette.background.BackgroundTask` so that every task's fate is journaled.

    A task is `queued` when it is created (FastAPI creates it inside the endpoint), `started`
    when the response has been sent and the runner reaches it, then `finished`, `failed` or
    `cancelled`. Tasks queued behind a cancelled one never start: their `queued` event alone
    is the evidence that they were dropped.
    """
    try:
        from starlette import background
    except ImportError:
        return False
    task_class: Any = background.BackgroundTask
    if getattr(task_class, "_drainspec_patched", False):
        return True
    original_init = task_class.__init__
    original_call = task_class.__call__

    def __init__(self: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        original_init(self, func, *args, **kwargs)
        task_id = _new_id("t")
        self._drainspec_id = task_id
        record(Kind.TASK_QUEUED, task=task_id, name=_name_of(func), sync=not self.is_async)
        if not self.is_async:
            self.func = _sync_task_body(task_id, self.func)

    async def __call__(self: Any) -> None:
        task_id = getattr(self, "_drainspec_id", None)
        if task_id is None:
            await original_call(self)
            return
        record(Kind.TASK_STARTED, task=task_id)
        token = current_task.set(task_id)  # a sync task's thread inherits it with the context
        try:
            await original_call(self)
        except asyncio.CancelledError:
            record(Kind.TASK_CANCELLED, task=task_id)
            raise
        except BaseException as exc:
            if self.is_async:
                record(Kind.TASK_FAILED, task=task_id, error=_describe(exc), **_raised_in_app(exc))
            raise
        else:
            if self.is_async:
                record(Kind.TASK_FINISHED, task=task_id)
        finally:
            current_task.reset(token)

    task_class.__init__ = __init__
    task_class.__call__ = __call__
    task_class._drainspec_patched = True
    return True


def _sync_task_body(task_id: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The thread's own end is the task's end: a cancelled await does not stop a thread."""

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            record(Kind.TASK_FAILED, task=task_id, error=_describe(exc), **_raised_in_app(exc))
            raise
        record(Kind.TASK_FINISHED, task=task_id)
        return result

    return run


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _raised_in_app(exc: BaseException) -> dict[str, str]:
    """
    Where the app raised `exc`, as `raised_at`: its innermost frame outside the libraries and
    drainspec (`crud/users.py:44 in create_user`, the path relative to the working directory
    when below it), else the innermost frame of all (`fastapi/routing.py:176 in
    serialize_response`: the app's own code returned and its framework failed). An error's
    path only: a request's journal says where it failed, so no report sends the user to the
    server's log for it.
    """
    frames = []
    traceback_ = exc.__traceback__
    while traceback_ is not None:
        code = traceback_.tb_frame.f_code
        frames.append((code.co_filename, traceback_.tb_lineno, code.co_name))
        traceback_ = traceback_.tb_next
    if not frames:
        return {}
    own = [frame for frame in frames if not _is_library(frame[0])]
    path, line, name = (own or frames)[-1]
    return {"raised_at": f"{_shown(path)}:{line} in {name}"}


def _shown(path: str) -> str:
    """
    A source file as the reports name it: relative to the working directory when below it, a
    library's as its package names it (`fastapi/routing.py`), anything else as it is.
    """
    for prefix in (os.getcwd(), *_LIBRARY_DIRS):
        if path.startswith(prefix + os.sep):
            return path[len(prefix) + 1 :]
    return path


# --- bare asyncio tasks -------------------------------------------------------------------------


def _spawned_by_app(coro: Any) -> bool:
    code = getattr(coro, "cr_code", None)
    if code is None:
        return False
    filename = code.co_filename
    return not filename.startswith(_LIBRARY_DIRS) and not filename.startswith(_OWN_DIR)


_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # all of chaos/


# True while this process's lifespan startup runs: a task the app spawns then is a service of its
# own (a queue consumer, a refresher), which its teardown must stop.
_starting_up = False
# Those services, held weakly (an app that keeps no reference to its task loses it as it would
# without drainspec), to say at the end of the teardown which ones it left pending.
_services: weakref.WeakValueDictionary[str, asyncio.Future[Any]] = weakref.WeakValueDictionary()


def _record_pending_services() -> None:
    """
    Each service still pending as the lifespan shutdown completes, and whether the teardown
    asked it to stop (`cancel()` called, the task not awaited): its cancellation, if it ever
    runs, runs after the teardown, or never when the server exits at once.
    """
    for task_id, task in list(_services.items()):
        if not task.done():
            cancelling = getattr(task, "cancelling", None)
            record(Kind.TASK_PENDING, task=task_id, cancel_requested=bool(cancelling and cancelling()))


def install_task_factory(loop: asyncio.AbstractEventLoop) -> None:
    """
    Journal every task an app spawns while handling a request (fire-and-forget work), or during
    its lifespan startup (`startup=True`: a service the teardown must stop).
    """
    previous = loop.get_task_factory()
    if getattr(previous, "_drainspec", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        at_startup = current_request.get() is None
        if (at_startup and not _starting_up) or not _spawned_by_app(coro):
            return previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
        task_id = _new_id("a")
        context = kwargs.pop("context", None) or contextvars.copy_context()
        with contextlib.suppress(RuntimeError):  # a context already entered elsewhere is left as it is
            context.run(current_task.set, task_id)  # what the task does is attributed to it
        kwargs["context"] = context
        task = previous(loop, coro, **kwargs) if previous is not None else asyncio.Task(coro, loop=loop, **kwargs)
        service = {"startup": True} if at_startup else {}
        if at_startup:
            _services[task_id] = task
        record(Kind.TASK_QUEUED, task=task_id, name=_name_of(coro), spawned=True, **service)
        record(Kind.TASK_STARTED, task=task_id)
        task.add_done_callback(functools.partial(_record_task_end, task_id))
        return task

    factory._drainspec = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


def _record_task_end(task_id: str, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        record(Kind.TASK_CANCELLED, task=task_id)
    elif (exc := _exception_of(task)) is not None:
        record(Kind.TASK_FAILED, task=task_id, error=_describe(exc), **_raised_in_app(exc))
    else:
        record(Kind.TASK_FINISHED, task=task_id)


def _exception_of(task: asyncio.Future[Any]) -> BaseException | None:
    """
    The task's exception, read without retrieving it: `Task.exception()` would mark it
    retrieved, and asyncio's own "Task exception was never retrieved" log (what the app's
    operators see without drainspec) would be lost.
    """
    if hasattr(task, "_exception"):
        exc = task._exception
        return exc if isinstance(exc, BaseException) else None
    return task.exception()  # pragma: no cover - every CPython task has `_exception`


# --- event-loop watchdog ------------------------------------------------------------------------


class LoopWatchdog:
    """
    A heartbeat task on the loop, and a thread that watches it.

    The heartbeat journals `loop.lag` when a beat comes late; the thread journals `loop.stall`
    with the loop thread's stack while the beat is overdue, which is the only moment the
    blocking frame can still be seen.
    """

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._last_beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat())
        thread = threading.Thread(target=self._watch, name="drainspec-watchdog", daemon=True)
        thread.start()

    def stop(self) -> None:
        """The loop may legitimately stop running after teardown; stop judging it."""
        self._stopped.set()
        if self._task is not None:
            self._task.cancel()

    async def _beat(self) -> None:
        while not self._stopped.is_set():
            expected = time.monotonic() + HEARTBEAT_SECONDS
            await asyncio.sleep(HEARTBEAT_SECONDS)
            now = time.monotonic()
            self._last_beat = now
            lag = now - expected
            if lag >= self.stall_seconds and not self._stopped.is_set():
                record(Kind.LOOP_LAG, lag_ms=round(lag * 1000, 1))

    def _watch(self) -> None:
        reported_beat = None
        while not self._stopped.wait(self.stall_seconds / 4):
            beat = self._last_beat
            overdue = time.monotonic() - beat - HEARTBEAT_SECONDS
            if overdue < self.stall_seconds or beat == reported_beat:
                continue
            reported_beat = beat
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = traceback.format_stack(frame)
            record(
                Kind.LOOP_STALL,
                stalled_ms=round(overdue * 1000, 1),
                frame=_blocking_frame(frame),
                stack=[line.rstrip() for line in stack],
            )


def _is_library(filename: str) -> bool:
    """The standard library, site-packages, or drainspec itself: not the app's own code."""
    return filename.startswith((*_LIBRARY_DIRS, _OWN_DIR, "<"))


def _blocking_frame(frame: Any) -> str:
    """
    Where the app blocked the loop: the innermost frame of the app's own code (outside the
    standard library, site-packages and drainspec), then the library frame it was blocked in,
    e.g. `app/news.py:41 in fetch, blocked in http/client.py:286 in _read_status`.
    """
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if not _is_library(code.co_filename):
            where = f"{_shown(code.co_filename)}:{frame.f_lineno} in {code.co_name}"
            if frame is innermost:
                return where
            blocked = innermost.f_code
            return f"{where}, blocked in {_shown(blocked.co_filename)}:{innermost.f_lineno} in {blocked.co_name}"
        frame = frame.f_back
    code = innermost.f_code
    return f"{_shown(code.co_filename)}:{innermost.f_lineno} in {code.co_name}"


# --- the ASGI wrapper ---------------------------------------------------------------------------


class Probe:
    """ASGI middleware that journals lifespan, requests and tasks of the app it wraps."""

    def __init__(self, app: ASGIApp, *, stall_ms: float | None = None) -> None:
        self.app = app
        if stall_ms is None:
            stall_ms = float(os.environ.get(STALL_ENV, DEFAULT_STALL_MS))
        self.watchdog = LoopWatchdog(stall_ms / 1000)
        self._started = False

    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            install_task_factory(asyncio.get_running_loop())
            self.watchdog.start()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """
        The events of every request: its start, its response (status), the response's last body
        byte, and the end of the ASGI call. They are the probe's whole cost on a fast endpoint
        (`bench/probe_throughput.py`), so a request is journaled here, in the call itself (one
        coroutine less than a method of its own), each line written out by hand with what they
        share built once, and must read exactly as `record` would have written it
        (`tests/test_probe_lines.py`). A response sent in one body, nearly all of them, is one
        line: its end, with its status; a streamed one has its start written before its first
        chunk. Everything else (lifespan, the first request, built-in endpoints, no run) goes
        through `_dispatch`.
        """
        writer = _writer
        if writer is None or not self._started or scope["type"] != "http" or scope["path"].startswith(BUILTIN_PREFIX):
            await self._dispatch(scope, receive, send)
            return
        append = writer.append_line
        request_id = _request_id(scope)
        token = current_request.set(request_id)
        whose = _whose() if current_task.get() is not None or get_ident() != _main_ident else ""
        tail = f',"pid":{_pid_text},"request":{_quote(request_id)}{whose}}}\n'
        method, path = _quote(scope["method"]), _quote(scope["path"])
        append(f'{{"t":{monotonic_ns()},"kind":{_REQUEST_START},"method":{method},"path":{path}{tail}'.encode())
        status = ""  # the response's status field, until a line has carried it

        def send_journaled(message: Message) -> Awaitable[None]:
            # A function that returns the awaitable, not a coroutine of its own: one coroutine
            # less per message on the hot path, and `await send(...)` reads the same to the app.
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                code = message["status"]
                status = _STATUS_FIELDS.get(code) or _status_field(code)
            elif kind == "http.response.body":
                if not message.get("more_body"):
                    carried, status = status, ""
                    return _send_last(send, message, append, f"{carried}{tail}")
                if status:
                    status = _write_response_start(append, status, tail)
            return send(message)

        try:
            await self.app(scope, receive, send_journaled)
        except BaseException as exc:
            if status:  # a response begun and never ended
                _write_response_start(append, status, tail)
            if isinstance(exc, asyncio.CancelledError):
                record(Kind.REQUEST_END, outcome="cancelled")
            else:
                record(Kind.REQUEST_END, outcome="error", error=_describe(exc), **_raised_in_app(exc))
            raise
        else:
            if status:
                _write_response_start(append, status, tail)
            append(f'{{"t":{monotonic_ns()},"kind":{_REQUEST_END},"outcome":"returned"{tail}'.encode())
        finally:
            current_request.reset(token)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What `__call__` does not journal itself: lifespan, built-in endpoints, other scopes."""
        kind = scope["type"]
        if kind == "http":
            self._ensure_started()
            if scope["path"].startswith(BUILTIN_PREFIX):
                await _builtin(scope, receive, send)
            elif _journal() is not None:  # the first request of a run: the writer now opened
                await self(scope, receive, send)
            else:  # outside a run there is nothing to write
                await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket" and scope["path"].startswith(BUILTIN_PREFIX):
            await _builtin_websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_journaled() -> Message:
            global _starting_up
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._ensure_started()
                _starting_up = True  # until the app answers: what it spawns meanwhile is its services
                record(Kind.STARTUP_RECEIVED)
            elif message["type"] == "lifespan.shutdown":
                record(Kind.SHUTDOWN_RECEIVED)
            return message

        answered = False

        async def send_journaled(message: Message) -> None:
            global _starting_up
            nonlocal answered
            kind = message["type"]
            answered = True
            _starting_up = False
            if kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                _record_pending_services()
            if kind == "lifespan.shutdown.complete":
                delay = float(os.environ.get(TEARDOWN_DELAY_ENV) or 0)
                if delay:
                    await asyncio.sleep(delay)  # an injected fault: a slow teardown
                self.watchdog.stop()
            if kind in _LIFESPAN_SENT:
                fields: dict[str, Any] = {"message": message["message"]} if message.get("message") else {}
                if kind == "lifespan.startup.complete" and (unhooked := _unhooked_loaded()):
                    fields["unhooked"] = unhooked
                record(_LIFESPAN_SENT[kind], **fields)
            await send(message)

        try:
            await self.app(scope, receive_journaled, send_journaled)
        except Exception as exc:
            if not answered:  # the app does not speak lifespan; servers then run without it
                record(Kind.LIFESPAN_UNSUPPORTED, error=_describe(exc))
            raise


def _unhooked_loaded() -> list[str]:
    """The client libraries the app loaded that the resource hooks do not see, if they are on."""
    resources = sys.modules.get("chaos.probe.resources")
    return resources.unhooked_loaded() if resources is not None else []


_STATUS_FIELDS: dict[Any, str] = {}


def _status_field(code: Any) -> str:
    """A response's status as its line writes it (`,"status":200`), remembered for the next response."""
    field = f',"status":{int(code)}'
    if len(_STATUS_FIELDS) < 1000 and type(code) is int:
        _STATUS_FIELDS[code] = field
    return field


def _write_response_start(append: Callable[[bytes], None], status: str, tail: str) -> str:
    """A response's start line, when its end does not carry its status; the status left to carry: none."""
    append(f'{{"t":{monotonic_ns()},"kind":{_RESPONSE_START}{status}{tail}'.encode())
    return ""


async def _send_last(send: Send, message: Message, append: Callable[[bytes], None], tail: str) -> None:
    """The response's last body message, then its end line (and its status, when it came in one body)."""
    await send(message)
    append(f'{{"t":{monotonic_ns()},"kind":{_RESPONSE_END}{tail}'.encode())


_LIFESPAN_SENT = {
    "lifespan.startup.complete": Kind.STARTUP_COMPLETE,
    "lifespan.startup.failed": Kind.STARTUP_FAILED,
    "lifespan.shutdown.complete": Kind.SHUTDOWN_COMPLETE,
    "lifespan.shutdown.failed": Kind.SHUTDOWN_FAILED,
}


def _request_id(scope: Scope) -> str:
    """The id the driver sent (`REQUEST_ID_HEADER`), or one of this process's own."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            return str(value.decode("latin-1"))
    return _new_id("s")


# --- built-in endpoints -------------------------------------------------------------------------

BUILTIN_PREFIX = "/__drainspec/"


async def _builtin(scope: Scope, receive: Receive, send: Send) -> None:
    """
    Endpoints the probe answers itself, so any app can be driven without changing it.

    `/__drainspec/hold?seconds=S` holds a request in flight for S seconds;
    `/__drainspec/background?seconds=S` answers at once, then runs an S-second background task
    inside the same ASGI call, exactly as Starlette does; `/__drainspec/stream?seconds=S` streams
    a chunk every 0.1 s for S seconds (`inf` for ever).
    """
    token = current_request.set(_request_id(scope))
    try:
        record(Kind.REQUEST_START, method=scope["method"], path=scope["path"])
        import urllib.parse  # here: the harness imports this module too, before it spawns a server

        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
        seconds = float(query.get("seconds", ["1"])[0])
        action = scope["path"][len(BUILTIN_PREFIX) :]
        if action not in ("hold", "background", "stream"):
            await _respond(send, 404, b"unknown drainspec endpoint\n")
            record(Kind.REQUEST_END, outcome="returned")
            return
        try:
            if action == "hold":
                await asyncio.sleep(seconds)
                await _respond(send, 200, b"held\n")
            elif action == "stream":
                await _stream(send, seconds)
            else:
                await _respond(send, 200, b"queued\n")
                await _builtin_background_task(seconds)
        except asyncio.CancelledError:
            record(Kind.REQUEST_END, outcome="cancelled")
            raise
        record(Kind.REQUEST_END, outcome="returned")
    finally:
        current_request.reset(token)


async def _builtin_background_task(seconds: float) -> None:
    task_id = _new_id("t")
    record(Kind.TASK_QUEUED, task=task_id, name="drainspec.background", sync=False)
    record(Kind.TASK_STARTED, task=task_id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record(Kind.TASK_CANCELLED, task=task_id)
        raise
    record(Kind.TASK_FINISHED, task=task_id)


STREAM_CHUNK_SECONDS = 0.1


async def _stream(send: Send, seconds: float) -> None:
    """A chunk every 0.1 s for `seconds` (`inf`: for ever, like an SSE feed)."""
    record(Kind.RESPONSE_START, status=200)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    sent = 0.0
    while sent < seconds:
        await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
        await asyncio.sleep(STREAM_CHUNK_SECONDS)
        sent += STREAM_CHUNK_SECONDS
    await send({"type": "http.response.body", "body": b"end\n"})
    record(Kind.RESPONSE_END)


async def _builtin_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """`/__drainspec/ws`: an echo socket; journals how and when the server closes it."""
    token = current_request.set(_request_id(scope))
    try:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        record(Kind.WEBSOCKET_OPEN, path=scope["path"])
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:
                record(Kind.WEBSOCKET_CLOSED, code=None, outcome="cancelled")
                raise
            if message["type"] == "websocket.disconnect":
                record(Kind.WEBSOCKET_CLOSED, code=message.get("code"), outcome="disconnect")
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
    finally:
        current_request.reset(token)


async def _respond(send: Send, status: int, body: bytes) -> None:
    record(Kind.RESPONSE_START, status=status)
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    record(Kind.RESPONSE_END)
