"""
Resources the app opens, seen without a code change: database engines and pools, caches, HTTP
clients. For each one the probe journals its opening (`resource.open`: a stable id, the library,
what it is, and a name with no credentials in it, such as `postgresql://db.internal:5432/shop`),
its closing (`resource.closed`), and every use (a query, a command, a request): one
`resource.use` line when it ends, with its `start` and its `error` when it raised, or, on a
resource already closed, one line when it begins and a `resource.use_end` when it ends, so that
a use after close is seen even if it never returns. Each line names the request, the background
task and the thread that made it (as `chaos.probe.record` does), so a use after close is named
with who made it.

- SQLAlchemy engines, sync and async: opened when created, closed by `dispose()`; a use is
  each statement (where the engine's dialect runs it), and a connection checked out before the
  dispose and given back after it;
- asyncpg pools: opened by `create_pool`, closed by `close()` / `terminate()`; a use is each
  query on a pooled connection, an `acquire()` the pool refused, or a connection given back
  after the close;
- psycopg 3 connections: `connect()` / `close()` (or the end of their `with`); each `execute`;
- psycopg_pool pools: opened, `close()`; each query on a pooled connection, or a refused
  `getconn()`;
- psycopg2's pools: opened, `closeall()`; a refused `getconn()`, or a connection given back
  after the close (its queries run in C cursors, which are not seen);
- peewee's connections: opened by `connect()` or a query's autoconnect (one per thread),
  closed by `close()`; each `execute_sql`. playhouse's pooled databases give a connection back
  to their pool on `close()`, which reads as its close; their `close_all()` is not judged.
  peewee 4's asyncio databases (`playhouse.pwasyncio`) run their own connections: not seen here
  (their asyncpg pools are, as asyncpg pools);
- redis connection pools, redis.asyncio's and the sync client's (a client's own, or one the app
  made): created, `aclose()` / `close()` / `disconnect()` (a client's `aclose()` or `close()`
  closes the pool it owns); each command and pipeline, and each pub/sub command and read on one
  of its connections. Celery's own pools (kombu's broker transport) are not the app's: not seen;
- httpx `Client` / `AsyncClient`: created, `close()` / `aclose()` or the end of its `with`;
  each `send`;
- aiohttp `ClientSession`: created, `close()`; each request.

How, and why this way:

- Classes are patched, not module functions: `from sqlalchemy import create_engine` binds the
  function before anyone could replace it, while every engine is still an `Engine`.
- Lazily: an import hook patches a library the moment the app imports it, and one already
  imported is patched at once. Nothing is imported that the app does not import itself.
- Never at the app's expense: each hook is guarded. A library whose version lacks what a hook
  expects gets one `probe.warning` in the journal, and the app runs on, unhooked.
- Beside OpenTelemetry, not through it: its instrumentations record operations as spans, and
  none of them sees a pool or a client close, which is what the verdicts judge. They wrap the
  same methods with `wrapt`; the hooks here call whatever the class holds through its
  descriptor, so a `wrapt` wrapper installed before or after keeps working and an app that
  already uses OpenTelemetry is seen once by each.
- Nothing is counted twice: the connections a SQLAlchemy engine or a psycopg_pool pool opens
  are not resources of their own, and their queries are uses of that engine or pool; asyncpg
  connections opened outside a pool (SQLAlchemy's) are not seen at the driver level either.

Off with `DRAINSPEC_INSTRUMENT=0` (the probe then sees only what the app records itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quote  # the C encoder of one JSON string
from time import monotonic_ns
from types import FrameType, ModuleType
from typing import Any, cast
from urllib.parse import urlsplit

from chaos import probe
from chaos.environment import INSTRUMENT_ENV
from chaos.journal import Kind
from chaos.probe import _journal, current_request, record
from chaos.probe.imports import when_imported
from chaos.redact import redact_text

"""Set to `0` (or `false`, `no`, `off`) to run the probe without resource instrumentation."""

_OFF = frozenset({"0", "false", "no", "off"})
_ATTRIBUTE = "_drainspec_resource"
_MAX_OP = 60
_MAX_ERROR = 300
_OWNER_FRAMES = 60  # how far up the stack a connect looks for the engine or pool that owns it


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether resource instrumentation is on (it is unless `DRAINSPEC_INSTRUMENT` says off)."""
    return environ.get(INSTRUMENT_ENV, "1").strip().lower() not in _OFF


# --- the bookkeeping ----------------------------------------------------------------------------


class _Resource:
    """The probe's handle on one resource: its journal id (and that id as JSON), and whether it was closed."""

    __slots__ = ("closed", "id", "quoted")

    def __init__(self, resource_id: str) -> None:
        self.id = resource_id
        self.quoted = _quote(resource_id)
        self.closed = False


_resource_ids = itertools.count(1)
_use_ids = itertools.count(1)
_token = os.urandom(3).hex()  # pids repeat across pods (PID 1 each): ids must not
_side: weakref.WeakKeyDictionary[Any, _Resource] = weakref.WeakKeyDictionary()  # objects with __slots__
# Objects that take neither an attribute nor a weak reference (asyncpg's `Pool` has __slots__
# without __weakref__): kept alive here, so their id is never reused. Pools are few and long-lived.
_pinned: dict[int, tuple[Any, _Resource]] = {}


def _resource_of(obj: Any) -> _Resource | None:
    if _pinned:  # first: a missing attribute on a __slots__ object costs an exception
        entry = _pinned.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
    found = getattr(obj, _ATTRIBUTE, None)
    if isinstance(found, _Resource):
        return found
    if _side:
        try:
            found = _side.get(obj)
        except TypeError:
            found = None
        if found is not None:
            return found
    return None


def _attach(obj: Any, resource: _Resource) -> bool:
    try:
        object.__setattr__(obj, _ATTRIBUTE, resource)  # past any __setattr__ that warns (aiohttp)
        return True
    except (AttributeError, TypeError):
        pass
    try:
        _side[obj] = resource
        return True
    except TypeError:
        pass
    _pinned[id(obj)] = (obj, resource)
    return True


def _open(obj: Any, *, library: str, what: str, name: str) -> _Resource | None:
    """Journal a resource's opening, once per object."""
    existing = _resource_of(obj)
    if existing is not None:
        return existing
    resource = _new_resource()
    if not _attach(obj, resource):
        return None
    _record_open(resource, library=library, what=what, name=name)
    return resource


def _new_resource() -> _Resource:
    return _Resource(f"{os.getpid()}.{_token}.{next(_resource_ids)}")


def _record_open(resource: _Resource, *, library: str, what: str, name: str) -> None:
    fields = {"main_rerun": True} if rerunning_main else {}
    record(Kind.RESOURCE_OPEN, resource=resource.id, name=redact_text(name), library=library, type=what, **fields)


# True while a spawned child re-runs the app's own script as `__mp_main__` (`chaos.probe.spawned`):
# what it opens then and never uses is that re-run's, not the app's.
rerunning_main = False


def _close(obj: Any, how: str) -> None:
    resource = _resource_of(obj)
    if resource is not None:
        _mark_closed(resource, how)


def _mark_closed(resource: _Resource, how: str) -> None:
    """Journal a resource's closing, once."""
    if resource.closed:
        return
    resource.closed = True
    record(Kind.RESOURCE_CLOSED, resource=resource.id, how=how)


Use = tuple[_Resource, int, str, "str | None", "str | None"]
"""A use begun: its resource, start (monotonic ns), op, host, and its id when journaled at its start."""


def _use_start(resource: _Resource, op: str, host: str | None = None) -> Use:
    """
    Begin a use. It is journaled once, at its end, with its start in it (one line per query keeps
    the overhead low), except on a resource already closed: then at once (`use`), so that a use
    after close is seen even if it never returns, and its end (`resource.use_end`) follows.
    """
    if resource.closed:
        use = f"u{next(_use_ids)}"
        fields = {"host": host} if host else {}
        record(Kind.RESOURCE_USE, resource=resource.id, use=use, op=op, **fields)
        return resource, 0, op, host, use
    return resource, time.monotonic_ns(), op, host, None


def _use_end(begun: Use, error: BaseException | str | None = None) -> None:
    """End a use: with its error (an exception, or what a pool's refusal says) when it failed."""
    resource, start, op, host, use = begun
    text = None if error is None else error if isinstance(error, str) else _error_text(error)
    if use is not None:
        fields = {"error": text} if text is not None else {}
        record(Kind.RESOURCE_USE_END, resource=resource.id, use=use, **fields)
        return
    _write_use(resource, op, start, host, text)


_USE_KIND = _quote(Kind.RESOURCE_USE.value)


def _write_use(resource: _Resource, op: str, start: int, host: str | None, error: str | None) -> None:
    """
    `record(Kind.RESOURCE_USE, ...)`, the same line with the same fields (request, task and
    thread included), written out by hand: every query of the app comes through here, and a
    dict, a dataclass and `json.dumps` per query were most of the instrumentation's cost. The
    probe's own pid is read as it keeps it (updated in a forked worker), not asked of the system
    per query, and the task and thread fields are the probe's own (`_whose`). It is written at
    once, a copy into the process's journal segment: no system call hands the GIL to the app's
    other threads (aiosqlite's, a thread pool's), which a write per query did.
    """
    writer = probe._writer or _journal()
    if writer is None:
        return
    line = (
        f'{{"t":{monotonic_ns()},"pid":{probe._pid_text},"kind":{_USE_KIND},"resource":{resource.quoted},'
        f'"op":{_quote(op)},"start":{start}'
    )
    if host:
        line += f',"host":{_quote(host)}'
    if error is not None:
        line += f',"error":{_quote(error)}'
    request = current_request.get()
    if request is not None:
        line += f',"request":{_quote(request)}'
    writer.append_line(f"{line}{probe._whose()}}}\n".encode())


def _error_text(exc: BaseException) -> str:
    """The exception's type and first line; a cancellation's type alone (anyio's says which scope, no more)."""
    if isinstance(exc, asyncio.CancelledError):
        return type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact_text(described[:_MAX_ERROR])


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn(library: str, what: str, exc: BaseException) -> None:
    """One `probe.warning` per distinct problem: the app goes on, the report says what was not seen."""
    message = f"{what}: {_error_text(exc)}"
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    with contextlib.suppress(Exception):  # the journal itself failing is not the app's problem
        record(Kind.PROBE_WARNING, library=library, version=_version(library), error=message)


def _version(library: str) -> str:
    try:
        from importlib.metadata import version

        return version(library)
    except Exception:
        return "?"


# --- patching methods -----------------------------------------------------------------------------


def _original(cls: type, name: str) -> Any:
    """The attribute `name` as the class holds it (a function, a descriptor, a wrapt wrapper)."""
    for klass in cls.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    raise AttributeError(f"{cls.__qualname__} has no {name}")


def _caller(original: Any) -> Callable[..., Any]:
    """
    `call(self, *args)` as `self.name(*args)` would: through the descriptor unless a plain function.
    The type is checked exactly: a wrapt wrapper (OpenTelemetry's) passes `isinstance` as a function,
    but must be bound through `__get__` to see its instance.
    """
    if type(original) is types.FunctionType:
        return cast(Callable[..., Any], original)

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original.__get__(self, type(self))(*args, **kwargs)

    return call


def _is_async(original: Any) -> bool:
    return inspect.iscoroutinefunction(original) or inspect.iscoroutinefunction(getattr(original, "__wrapped__", None))


Builder = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def _wrap(cls: type, name: str, build: Builder) -> None:
    """Replace `cls.name` with what `build(call_original, is_async)` returns; once per class."""
    original = _original(cls, name)
    if getattr(original, "_drainspec", False):  # hooked already, here or on a base class it inherits from
        return
    new = build(_caller(original), _is_async(original))
    if name == "__init__" and type(original) is types.FunctionType:
        new = _with_parameters_of(original, new)
    with contextlib.suppress(AttributeError, TypeError):
        functools.update_wrapper(new, original)
    new._drainspec = True  # type: ignore[attr-defined]
    setattr(cls, name, new)


def _with_parameters_of(original: types.FunctionType, wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """
    A function with `original`'s own parameters that calls `wrapper` with them. Libraries read
    a constructor's parameters from its code: SQLAlchemy's `create_engine` hands `Engine.__init__`
    only the keywords that function names (`echo`, `logging_name`, ...) and refuses the rest, so
    a `(self, *args, **kwargs)` wrapper made `create_engine(url, echo=True)` raise.
    """
    signature = inspect.signature(original)
    names: dict[str, Any] = {"_wrapper": wrapper}
    declared, passed = [], []
    star = False
    for number, parameter in enumerate(signature.parameters.values()):
        default = ""
        if parameter.default is not inspect.Parameter.empty:
            names[f"_default{number}"] = parameter.default
            default = f"=_default{number}"
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            declared.append(f"*{parameter.name}")
            passed.append(f"*{parameter.name}")
            star = True
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            declared.append(f"**{parameter.name}")
            passed.append(f"**{parameter.name}")
        elif parameter.kind is inspect.Parameter.KEYWORD_ONLY:
            if not star:
                declared.append("*")
                star = True
            declared.append(f"{parameter.name}{default}")
            passed.append(f"{parameter.name}={parameter.name}")
        else:
            declared.append(f"{parameter.name}{default}")
            passed.append(parameter.name)
            if parameter.kind is inspect.Parameter.POSITIONAL_ONLY and (
                number + 1 == len(signature.parameters)
                or list(signature.parameters.values())[number + 1].kind is not inspect.Parameter.POSITIONAL_ONLY
            ):
                declared.append("/")
    source = f"def {original.__name__}({', '.join(declared)}):\n    return _wrapper({', '.join(passed)})\n"
    # The source holds only the original's parameter names; its defaults are passed as objects.
    exec(compile(source, f"<drainspec: {original.__qualname__}>", "exec"), names)
    return cast(Callable[..., Any], names[original.__name__])


def _guarded(library: str, what: str, func: Callable[..., Any], *args: Any) -> Any:
    try:
        return func(*args)
    except Exception as exc:
        _warn(library, what, exc)
        return None


def _after(cls: type, name: str, library: str, then: Callable[[Any], Any]) -> None:
    """After `cls.name` returns (or its coroutine completes), `then(self)`."""

    def build(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def after_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                result = await call(self, *args, **kwargs)
                _guarded(library, f"{cls.__qualname__}.{name}", then, self)
                return result

            return after_async

        def after(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = call(self, *args, **kwargs)
            _guarded(library, f"{cls.__qualname__}.{name}", then, self)
            return result

        return after

    _wrap(cls, name, build)


Target = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def _self(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return obj


def _closing(
    cls: type, name: str, library: str, *, target: Target = _self, when: Target | None = None, how: str | None = None
) -> None:
    """`cls.name` closes its resource: journaled as it is called (`how`, its name by default), before it waits."""
    how = how or (name.strip("_").removeprefix("a") if name in ("__exit__", "__aexit__") else name)

    def close(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if when is None or when(self, args, kwargs):
            obj = target(self, args, kwargs)
            _close(obj, "end of its with block" if how == "exit" else how)

    def build(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def closing_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                _guarded(library, f"{cls.__qualname__}.{name}", close, self, args, kwargs)
                return await call(self, *args, **kwargs)

            return closing_async

        def closing(self: Any, *args: Any, **kwargs: Any) -> Any:
            _guarded(library, f"{cls.__qualname__}.{name}", close, self, args, kwargs)
            return call(self, *args, **kwargs)

        return closing

    _wrap(cls, name, build)


Describe = Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[str, str | None]]
Resolve = Callable[[Any, tuple[Any, ...], dict[str, Any]], "_Resource | None"]


def _using(cls: type, name: str, library: str, resolve: Resolve, describe: Describe) -> None:
    """
    Each call of `cls.name` is a use of the resource `resolve(self, args, kwargs)` finds (none: not
    journaled). Every query of an app goes through here, so it is written for speed: no call
    that is not needed, and one guard around the bookkeeping.
    """
    label = f"{cls.__qualname__}.{name}"

    def begin(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Use | None:
        try:
            resource = resolve(self, args, kwargs)
            if resource is None:
                return None
            op, host = describe(self, args, kwargs)
            return _use_start(resource, op, host)
        except Exception as exc:
            _warn(library, label, exc)
            return None

    def end(begun: Use, error: BaseException | None) -> None:
        try:
            _use_end(begun, error)
        except Exception as exc:
            _warn(library, label, exc)

    def build(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def using_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                begun = begin(self, args, kwargs)
                if begun is None:
                    return await call(self, *args, **kwargs)
                try:
                    result = await call(self, *args, **kwargs)
                except BaseException as exc:
                    end(begun, exc)
                    raise
                end(begun, None)
                return result

            return using_async

        def using(self: Any, *args: Any, **kwargs: Any) -> Any:
            begun = begin(self, args, kwargs)
            if begun is None:
                return call(self, *args, **kwargs)
            try:
                result = call(self, *args, **kwargs)
            except BaseException as exc:
                end(begun, exc)
                raise
            end(begun, None)
            return result

        return using

    _wrap(cls, name, build)


def _refusing(cls: type, name: str, library: str, refusal: Callable[[Any], str | None], op: str) -> None:
    """
    A checkout (`cls.name`) on a pool that will refuse it, because it is closing or closed, is a
    use after close: journaled before the call, with the refusal. A checkout the pool serves is
    not journaled, as the query on it is: one use is not counted twice, and the call runs
    unwrapped (a sync check in front of the library's own coroutine, no extra frame).
    """
    label = f"{cls.__qualname__}.{name}"

    def check(self: Any) -> None:
        try:
            reason = refusal(self)
            resource = _resource_of(self) if reason else None
            if resource is not None and reason is not None:
                _use_end(_use_start(resource, op), reason)
        except Exception as exc:
            _warn(library, label, exc)

    def build(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        def refusing(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(self)
            return call(self, *args, **kwargs)

        return refusing

    _wrap(cls, name, build)


def _returning(cls: type, name: str, library: str, resolve: Resolve) -> None:
    """
    A connection given back (`cls.name`) to a pool that has already closed was in use across the
    close: the pool was closed under it. Journaled as a use after close, by whoever gives it
    back; any other return costs one check and is not journaled.
    """
    label = f"{cls.__qualname__}.{name}"

    def check(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            resource = resolve(self, args, kwargs)
            if resource is not None and resource.closed:
                _use_end(_use_start(resource, "connection given back (checked out before the close)"))
        except Exception as exc:
            _warn(library, label, exc)

    def build(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        def returning(self: Any, *args: Any, **kwargs: Any) -> Any:
            check(self, args, kwargs)
            return call(self, *args, **kwargs)

        return returning

    _wrap(cls, name, build)


def _itself(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
    """The object is the resource (a client)."""
    return _resource_of(obj)


def _own_methods(cls: type, *names: str) -> list[str]:
    """The names `cls` defines itself (a subclass that inherits them is patched through its base)."""
    return [name for name in names if name in cls.__dict__]


# --- naming ---------------------------------------------------------------------------------------


def _db_name(scheme: str, host: Any, port: Any, database: Any) -> str:
    """`postgresql://host:port/db`: never a user or a password."""
    where = str(host) if host else "localhost"
    if where.startswith("/"):  # a Unix socket directory
        where = f"[{where}]"
    if port:
        where += f":{port}"
    return f"{scheme}://{where}/{database or ''}"


def _dsn_name(dsn: str, scheme: str = "postgresql") -> str:
    try:
        parts = urlsplit(dsn)
        if parts.scheme:
            database = parts.path.lstrip("/")
            return _db_name(scheme, parts.hostname, parts.port, database)
    except ValueError:
        pass
    return scheme + "://?"


_ops: dict[str, str] = {}  # an app runs the same few statements again and again
_MAX_CACHED_OPS = 1024


def _sql_op(statement: Any) -> str:
    """The statement's first words, never a literal: `SELECT 1`, `INSERT INTO users`, `UPDATE outbox SET`."""
    if isinstance(statement, str):
        cached = _ops.get(statement)
        if cached is not None:
            return cached
    elif isinstance(statement, bytes):
        return _sql_op(statement[:200].decode("utf-8", errors="replace"))
    else:
        return type(statement).__name__
    op = " ".join(statement[:200].split(None, 3)[:3])
    for stop in ("'", '"', ";", "--", "/*"):
        cut = op.find(stop)
        if cut >= 0:
            op = op[:cut]
    op = op[:_MAX_OP].rstrip() or "query"
    if len(_ops) < _MAX_CACHED_OPS:
        _ops[statement] = op
    return op


def _host_of(url: Any) -> str:
    host = str(getattr(url, "host", "") or "")
    port = getattr(url, "port", None)
    return f"{host}:{port}" if host and port else host


def _opened_inside(prefixes: tuple[str, ...]) -> bool:
    """Whether the current call comes from one of these packages (an engine or pool connecting)."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_OWNER_FRAMES):
        if frame is None:
            return False
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.startswith(prefixes):
            return True
        frame = frame.f_back
    return False


# --- SQLAlchemy -----------------------------------------------------------------------------------


def _root_engine(engine: Any) -> Any:
    """An `engine.execution_options(...)` engine shares its parent's pool: the resource is the parent."""
    for _ in range(8):
        proxied = getattr(engine, "_proxied", None)
        if proxied is None:
            return engine
        engine = proxied
    return engine


def _sqlalchemy_name(url: Any) -> str:
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database
        return f"sqlite:///{database}" if database and database != ":memory:" else "sqlite (in memory)"
    return _db_name(backend, url.host, url.port, url.database)


_EXECUTES = {"do_execute": 3, "do_executemany": 3, "do_execute_no_params": 2}
"""The dialect methods every statement of an engine goes through, and where their `context` is."""


def _engine_of_context(index: int) -> Resolve:
    def resolve(dialect: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
        context = args[index] if len(args) > index else kwargs.get("context")
        connection = getattr(context, "root_connection", None)
        if connection is None:  # the dialect's own first-connect queries
            return None
        return _resource_of(_root_engine(connection.engine))

    return resolve


def _statement(dialect: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return _sql_op(args[1] if len(args) > 1 else kwargs.get("statement", "")), None


def _open_engine(engine: Any) -> None:
    _hook_dialect(type(engine.dialect))
    what = "SQLAlchemy async engine" if getattr(engine.dialect, "is_async", False) else "SQLAlchemy engine"
    _open(engine, library="sqlalchemy", what=what, name=_sqlalchemy_name(engine.url))


def _hook_dialect(dialect_class: type) -> None:
    """
    An engine's statements are seen where its dialect runs them (`do_execute` and its two
    siblings), patched on the dialect's class at its first engine. Not through SQLAlchemy's
    event listeners: a listener on every engine turns on the event pipeline of every
    connection, which cost more than the rest of the instrumentation together.
    """
    for name, context_at in _EXECUTES.items():
        if hasattr(dialect_class, name):
            _using(dialect_class, name, "sqlalchemy", _engine_of_context(context_at), _statement)


def _disposes(engine: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """`dispose(close=False)` only forgets a forked parent's connections: not a close."""
    close = args[0] if args else kwargs.get("close", True)
    return close is not False


_CHECKOUT = "_drainspec_checked_out_of"


def _checked_out(conn: Any) -> None:
    """Remember the engine a connection was checked out of, if it was open then."""
    resource = _resource_of(_root_engine(conn.engine))
    if resource is not None and not resource.closed:
        conn.__dict__[_CHECKOUT] = resource


def _engine_of_connection(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
    """
    The engine a closing connection goes back to, when it was checked out before the engine's
    `dispose()`. One checked out after the dispose is not reported again: its statements are.
    """
    resource = conn.__dict__.get(_CHECKOUT)
    return resource if isinstance(resource, _Resource) else None


def _hook_sqlalchemy(base: ModuleType) -> None:
    engine = base.Engine
    _after(engine, "__init__", "sqlalchemy", _open_engine)
    _closing(engine, "dispose", "sqlalchemy", target=lambda e, a, k: _root_engine(e), when=_disposes)
    _after(base.Connection, "__init__", "sqlalchemy", _checked_out)
    _returning(base.Connection, "close", "sqlalchemy", _engine_of_connection)


# --- asyncpg ----------------------------------------------------------------------------------------


_ASYNCPG_QUERIES = (
    "execute",
    "executemany",
    "fetch",
    "fetchval",
    "fetchrow",
    "fetchmany",
    "copy_from_table",
    "copy_from_query",
    "copy_to_table",
    "copy_records_to_table",
)


def _asyncpg_name(pool: Any) -> str:
    for holder in getattr(pool, "_holders", ()) or ():
        con = getattr(holder, "_con", None)
        if con is not None:
            addr, params = getattr(con, "_addr", None), getattr(con, "_params", None)
            host, port = addr if isinstance(addr, tuple) else (addr, None)
            return _db_name("postgresql", host, port, getattr(params, "database", None))
    args = getattr(pool, "_connect_args", ()) or ()
    kwargs = getattr(pool, "_connect_kwargs", {}) or {}
    dsn = args[0] if args else kwargs.get("dsn")
    if isinstance(dsn, str) and dsn:
        return _dsn_name(dsn)
    return _db_name("postgresql", kwargs.get("host"), kwargs.get("port"), kwargs.get("database"))


def _asyncpg_refusal(pool: Any) -> str | None:
    if getattr(pool, "_closing", False):
        return "InterfaceError: pool is closing"
    if getattr(pool, "_closed", False):
        return "InterfaceError: pool is closed"
    return None


def _open_asyncpg_pool(pool: Any) -> None:
    _open(pool, library="asyncpg", what="asyncpg pool", name=_asyncpg_name(pool))


def _asyncpg_pool_of(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
    """
    A query's pool: the connection's proxy leads to its holder and its pool (none: not pooled).
    The pool's own `RESET ALL` on each connection it takes back is not the app's use.
    """
    proxy = getattr(con, "_proxy", None)
    if proxy is None or (args and args[0] is getattr(con, "_reset_query", None)):
        return None
    holder = getattr(proxy, "_holder", None)
    return _resource_of(getattr(holder, "_pool", None))


def _asyncpg_op(name: str) -> Describe:
    def describe(con: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
        first = args[0] if args else kwargs.get("query", kwargs.get("table_name", ""))
        return f"{name} {_sql_op(first)}".strip(), None

    return describe


def _hook_asyncpg(pool_module: ModuleType) -> None:
    pool = pool_module.Pool
    _after(pool, "_async__init__", "asyncpg", _open_asyncpg_pool)
    _closing(pool, "close", "asyncpg")
    _closing(pool, "terminate", "asyncpg")
    _refusing(pool, "_acquire", "asyncpg", _asyncpg_refusal, "acquire")
    _returning(pool, "release", "asyncpg", _itself)
    connection = pool_module.connection.Connection
    for name in _ASYNCPG_QUERIES:
        if hasattr(connection, name):
            _using(connection, name, "asyncpg", _asyncpg_pool_of, _asyncpg_op(name))


# --- psycopg 3 and psycopg_pool -----------------------------------------------------------------


_PSYCOPG_OWNERS = ("sqlalchemy.", "psycopg_pool.", "peewee", "playhouse.")


def _psycopg_name(conn: Any) -> str:
    info = conn.info
    return _db_name("postgresql", info.host, info.port, info.dbname)


def _open_psycopg(conn: Any) -> None:
    _open(conn, library="psycopg", what="psycopg connection", name=_psycopg_name(conn))


def _patch_connect(cls: type) -> None:
    """`Connection.connect` is a classmethod: a connection opened by an engine or a pool is theirs."""
    original = _original(cls, "connect")
    if getattr(original, "_drainspec", False):
        return
    label = f"{cls.__qualname__}.connect"

    def call(klass: type, *args: Any, **kwargs: Any) -> Any:
        return original.__get__(None, klass)(*args, **kwargs)

    if _is_async(getattr(original, "__func__", original)):

        async def connect_async(klass: type, *args: Any, **kwargs: Any) -> Any:
            owned = _guarded("psycopg", label, _opened_inside, _PSYCOPG_OWNERS)
            conn = await call(klass, *args, **kwargs)
            if owned is False:
                _guarded("psycopg", label, _open_psycopg, conn)
            return conn

        connect: Callable[..., Any] = connect_async
    else:

        def connect_sync(klass: type, *args: Any, **kwargs: Any) -> Any:
            owned = _guarded("psycopg", label, _opened_inside, _PSYCOPG_OWNERS)
            conn = call(klass, *args, **kwargs)
            if owned is False:
                _guarded("psycopg", label, _open_psycopg, conn)
            return conn

        connect = connect_sync
    connect._drainspec = True  # type: ignore[attr-defined]
    wrapped = classmethod(connect)
    wrapped._drainspec = True  # type: ignore[attr-defined]
    cls.connect = wrapped  # type: ignore[attr-defined]


def _psycopg_owner(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
    """A query's resource: the pool its connection came from, else the connection itself."""
    conn = getattr(cursor, "_conn", None)
    if conn is None:
        return None
    pool = getattr(conn, "_pool", None)
    if pool is not None:
        return _resource_of(pool)
    return _resource_of(conn)


def _psycopg_op(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return _sql_op(args[0] if args else kwargs.get("query", "")), None


def _hook_psycopg_connection(module: ModuleType) -> None:
    for name in ("Connection", "AsyncConnection"):
        cls = getattr(module, name, None)
        if cls is not None:
            _patch_connect(cls)
            _closing(cls, "close", "psycopg")
    # `psycopg.connect` is bound to `Connection.connect` when the package finishes loading; if it
    # already has, point it at the hooked one.
    package = sys.modules.get("psycopg")
    if package is not None and hasattr(module, "Connection") and getattr(package, "connect", None) is not None:
        setattr(package, "connect", module.Connection.connect)  # noqa: B010  (a module attribute mypy cannot see)


def _hook_psycopg_cursor(module: ModuleType) -> None:
    for name in ("Cursor", "AsyncCursor"):
        cls = getattr(module, name, None)
        if cls is not None:
            for method in _own_methods(cls, "execute", "executemany"):
                _using(cls, method, "psycopg", _psycopg_owner, _psycopg_op)


def _psycopg_pool_name(pool: Any) -> str:
    conninfo = pool.conninfo if isinstance(getattr(pool, "conninfo", None), str) else ""
    kwargs = pool.kwargs if isinstance(getattr(pool, "kwargs", None), dict) else {}
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(conninfo, **kwargs)
    except Exception:
        return _dsn_name(conninfo) if "://" in conninfo else "postgresql://?"
    return _db_name("postgresql", params.get("host"), params.get("port"), params.get("dbname"))


def _psycopg_pool_refusal(pool: Any) -> str | None:
    return "PoolClosed: the pool is closed" if getattr(pool, "_closed", False) else None


def _hook_psycopg_pool(module: ModuleType) -> None:
    for name in ("ConnectionPool", "AsyncConnectionPool"):
        cls = getattr(module, name, None)
        if cls is None:
            continue
        what = "psycopg_pool " + ("async pool" if name.startswith("Async") else "pool")

        def opened(pool: Any, what: str = what) -> None:
            _open(pool, library="psycopg_pool", what=what, name=_psycopg_pool_name(pool))

        _after(cls, "_open", "psycopg_pool", opened)
        _closing(cls, "close", "psycopg_pool")
        _refusing(cls, "getconn", "psycopg_pool", _psycopg_pool_refusal, "getconn")
        _returning(cls, "putconn", "psycopg_pool", _itself)


# --- psycopg2's pools ------------------------------------------------------------------------------


def _psycopg2_pool_name(pool: Any) -> str:
    """Where the pool connects, from its `connect()` arguments: a DSN (URL or `key=value`) and keywords."""
    args = getattr(pool, "_args", ())
    kwargs = getattr(pool, "_kwargs", {})
    dsn = args[0] if args and isinstance(args[0], str) else kwargs.get("dsn") or ""
    return _libpq_name(dsn, {key: value for key, value in kwargs.items() if key != "dsn"})


def _libpq_name(dsn: str, keywords: Mapping[str, Any]) -> str:
    """Where libpq connects, given a DSN (URL or `key=value`) and keywords over it."""
    if "://" in dsn:
        return _dsn_name(dsn)
    try:
        from psycopg2.extensions import parse_dsn

        params = {**parse_dsn(dsn), **keywords}
    except Exception:
        return "postgresql://?"
    return _db_name(
        "postgresql", params.get("host"), params.get("port"), params.get("dbname") or params.get("database")
    )


def _open_psycopg2_pool(pool: Any) -> None:
    _open(pool, library="psycopg2", what="psycopg2 pool", name=_psycopg2_pool_name(pool))


def _psycopg2_refusal(pool: Any) -> str | None:
    return "PoolError: connection pool is closed" if getattr(pool, "closed", False) else None


_PSYCOPG2_ALIASES = {"getconn": "_getconn", "putconn": "_putconn", "closeall": "_closeall"}
"""`SimpleConnectionPool`'s public methods are the base's own functions, bound when the class was made."""


def _hook_psycopg2_pool(module: ModuleType) -> None:
    """
    psycopg2's pools (`SimpleConnectionPool`, `ThreadedConnectionPool`), written in Python over its
    C connections: opened when made, closed by `closeall()`, a `getconn()` the closed pool refused
    and a connection given back after the close are uses after close. Its queries run in C
    cursors, which no hook can reach: they are not seen.
    """
    base = module.AbstractConnectionPool
    originals = {name: base.__dict__[name] for name in _PSYCOPG2_ALIASES.values()}
    _after(base, "__init__", "psycopg2", _open_psycopg2_pool)
    _closing(base, "_closeall", "psycopg2", how="closeall")
    _refusing(base, "_getconn", "psycopg2", _psycopg2_refusal, "getconn")
    _returning(base, "_putconn", "psycopg2", _itself)
    for cls in vars(module).values():
        if isinstance(cls, type) and issubclass(cls, base) and cls is not base:
            for public, private in _PSYCOPG2_ALIASES.items():
                if cls.__dict__.get(public) is originals[private]:
                    setattr(cls, public, base.__dict__[private])


# --- peewee ---------------------------------------------------------------------------------------

_peewee_connections: dict[int, _Resource] = {}
"""
The resource of each connection a peewee database holds open, by the connection's id: a
driver's connection takes neither an attribute nor (sqlite3's) a weak reference, and pinning it
would keep alive what the app dropped. The entry goes when the connection closes, or is dropped
by `dispose()`.
"""


def _peewee_name(db: Any) -> str:
    """`postgresql://host:port/db`, `mysql://...` or `sqlite:///path`, from the database's own settings."""
    database = str(getattr(db, "database", None) or "")
    classes = {klass.__name__ for klass in type(db).__mro__}
    if "SqliteDatabase" in classes:
        return f"sqlite:///{database}" if database and database != ":memory:" else "sqlite (in memory)"
    params = getattr(db, "connect_params", None)
    params = params if isinstance(params, dict) else {}
    where = {key: params[key] for key in ("host", "port") if params.get(key)}
    if "PostgresqlDatabase" in classes:
        if "://" in database or "=" in database:  # a DSN given as the database, which libpq expands
            return _libpq_name(database, where)
        return _db_name("postgresql", where.get("host"), where.get("port"), database)
    scheme = "mysql" if "MySQLDatabase" in classes else type(db).__name__.lower()
    return (
        _dsn_name(database, scheme)
        if "://" in database
        else _db_name(scheme, where.get("host"), where.get("port"), database)
    )


def _peewee_connection(db: Any) -> Any:
    """The connection the database holds open for this thread (peewee's state is per thread), or None."""
    state = db._state
    return None if state.closed else state.conn


def _open_peewee(db: Any) -> None:
    conn = _peewee_connection(db)
    if conn is None or id(conn) in _peewee_connections:
        return
    resource = _new_resource()
    _peewee_connections[id(conn)] = resource
    _record_open(resource, library="peewee", what="peewee connection", name=_peewee_name(db))


def _close_peewee(conn: Any, how: str) -> None:
    resource = _peewee_connections.pop(id(conn), None)
    if resource is not None and how:
        _mark_closed(resource, how)


def _peewee_used(
    db: Any, args: tuple[Any, ...], kwargs: dict[str, Any], start: int, error: BaseException | None
) -> None:
    """A query, journaled at its end: the connection it ran on is only known then (peewee connects on first use)."""
    conn = _peewee_connection(db)
    resource = _peewee_connections.get(id(conn)) if conn is not None else None
    if resource is not None:
        op = _sql_op(args[0] if args else kwargs.get("sql", ""))
        _use_end((resource, start, op, None, None), error)


def _hook_peewee(module: ModuleType) -> None:
    """
    peewee's databases (SQLite, PostgreSQL, MySQL): each connection a database opens, by
    `connect()` or by a query's autoconnect, is a resource until `close()`; each `execute_sql`
    is a use of it. peewee keeps a connection per thread and its guide opens and closes one per
    request, so a query after the close is not a use of a closed connection but a new one,
    opened after the teardown and never closed (which `resources-closed` names).
    """
    base = module.Database
    _after(base, "connect", "peewee", _open_peewee)

    def closing(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        def close(self: Any, *args: Any, **kwargs: Any) -> Any:
            conn = _guarded("peewee", "Database.close", _peewee_connection, self)
            result = call(self, *args, **kwargs)  # refused inside a transaction: then nothing closed
            if conn is not None:
                _guarded("peewee", "Database.close", _close_peewee, conn, "close")
            return result

        return close

    def disposing(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        def dispose(self: Any, *args: Any, **kwargs: Any) -> Any:
            conn = _guarded("peewee", "Database.dispose", _peewee_connection, self)
            if conn is not None:  # dropped, not closed: it stays open, and is said so
                _guarded("peewee", "Database.dispose", _close_peewee, conn, "")
            return call(self, *args, **kwargs)

        return dispose

    def executing(call: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        def execute_sql(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = monotonic_ns()
            try:
                result = call(self, *args, **kwargs)
            except BaseException as exc:
                _guarded("peewee", "Database.execute_sql", _peewee_used, self, args, kwargs, start, exc)
                raise
            _guarded("peewee", "Database.execute_sql", _peewee_used, self, args, kwargs, start, None)
            return result

        return execute_sql

    _wrap(base, "close", closing)
    if "dispose" in base.__dict__:
        _wrap(base, "dispose", disposing)
    _wrap(base, "execute_sql", executing)


# --- redis.asyncio ------------------------------------------------------------------------------


def _redis_name(pool: Any) -> str:
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"redis+unix://{kwargs['path']}"
    scheme = "rediss" if "SSL" in getattr(pool.connection_class, "__name__", "") else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


# Celery's broker and result backend (kombu's transport) keep pools of their own for the life of
# the process: the app neither opens nor closes those.
_REDIS_OWNERS = ("kombu.", "celery.")


def _open_redis_pool(pool: Any) -> None:
    if _opened_inside(_REDIS_OWNERS):
        return
    what = "redis.asyncio pool" if type(pool).__module__.startswith("redis.asyncio") else "redis pool"
    _open(pool, library="redis", what=what, name=_redis_name(pool))


def _disconnects_all(pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """`disconnect(inuse_connections=False)` is a failover's reset (Sentinel), not a close."""
    inuse = args[0] if args else kwargs.get("inuse_connections", True)
    return inuse is not False


def _redis_command(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    command = args[0] if args else "command"
    if isinstance(command, bytes):
        command = command.decode("ascii", errors="replace")
    return str(command).upper()[:_MAX_OP], None


def _redis_pipeline(pipe: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return f"pipeline of {len(getattr(pipe, 'command_stack', ()) or ())} command(s)", None


def _pool_of_client(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Resource | None:
    return _resource_of(getattr(client, "connection_pool", None))


def _hook_redis_connection(module: ModuleType) -> None:
    for name in ("ConnectionPool", "BlockingConnectionPool"):
        cls = getattr(module, name, None)
        if cls is None:
            continue
        if "__init__" in cls.__dict__:
            _after(cls, "__init__", "redis", _open_redis_pool)
        for method in _own_methods(cls, "aclose", "close", "disconnect"):
            _closing(cls, method, "redis", when=_disconnects_all if method == "disconnect" else None)


def _pubsub_read(pubsub: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    return "pub/sub read", None


def _hook_redis_client(module: ModuleType) -> None:
    _using(module.Redis, "execute_command", "redis", _pool_of_client, _redis_command)
    pipeline = getattr(module, "Pipeline", None)
    if pipeline is not None and "execute" in pipeline.__dict__:
        _using(pipeline, "execute", "redis", _pool_of_client, _redis_pipeline)
    # A pub/sub holds a connection of the client's pool: its (un)subscribes are commands of their
    # own, and each read (`get_message`, `listen`) waits on that connection, so a listener still
    # reading when the pool closes, or a stream that unsubscribes after it, is seen.
    pubsub = getattr(module, "PubSub", None)
    if pubsub is not None:
        for method in _own_methods(pubsub, "execute_command", "parse_response"):
            describe = _redis_command if method == "execute_command" else _pubsub_read
            _using(pubsub, method, "redis", _pool_of_client, describe)


# --- httpx and aiohttp --------------------------------------------------------------------------


def _library_class(obj: Any, package: str) -> str:
    """The library's own class name, even for an app's subclass (`AsyncClient`, `ClientSession`)."""
    for klass in type(obj).__mro__:
        if klass.__module__.startswith(package):
            return klass.__name__
    return type(obj).__name__


def _open_httpx(client: Any) -> None:
    target = _host_of(client.base_url)
    name = f"httpx {_library_class(client, 'httpx')}" + (f" to {target}" if target else "")
    _open(client, library="httpx", what="HTTP client", name=name)


def _http_op(method: Any, url: Any) -> tuple[str, str | None]:
    host = _host_of(url)
    path = str(getattr(url, "path", "") or "")
    return f"{method} {host}{path}"[:_MAX_OP], host or None


def _httpx_send(client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    request = args[0] if args else kwargs.get("request")
    return _http_op(getattr(request, "method", "?"), getattr(request, "url", None))


def _hook_httpx(module: ModuleType) -> None:
    for name, closer, exit_name in (("Client", "close", "__exit__"), ("AsyncClient", "aclose", "__aexit__")):
        cls = getattr(module, name)
        _after(cls, "__init__", "httpx", _open_httpx)
        _closing(cls, closer, "httpx")
        _closing(cls, exit_name, "httpx")
        _using(cls, "send", "httpx", _itself, _httpx_send)


def _open_aiohttp(session: Any) -> None:
    target = _host_of(getattr(session, "_base_url", None))
    name = "aiohttp ClientSession" + (f" to {target}" if target else "")
    _open(session, library="aiohttp", what="HTTP client", name=name)


def _aiohttp_request(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str | None]:
    method = args[0] if args else kwargs.get("method", "?")
    url = args[1] if len(args) > 1 else kwargs.get("str_or_url", "")
    if isinstance(url, str):
        base = getattr(session, "_base_url", None)
        try:
            import yarl

            url = base.join(yarl.URL(url)) if base is not None else yarl.URL(url)
        except Exception:
            url = urlsplit(url)
            return f"{method} {url.netloc}{url.path}"[:_MAX_OP], url.netloc or None
    return _http_op(method, url)


def _hook_aiohttp(module: ModuleType) -> None:
    session = module.ClientSession
    _after(session, "__init__", "aiohttp", _open_aiohttp)
    _closing(session, "close", "aiohttp")
    _using(session, "_request", "aiohttp", _itself, _aiohttp_request)


# --- installing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """Patch `module` with `patch` once it is imported; `library` is the distribution warnings name."""

    module: str
    library: str
    patch: Callable[[ModuleType], None]


PATCHES: dict[str, dict[str, Callable[[ModuleType], None]]] = {
    "sqlalchemy": {"sqlalchemy.engine.base": _hook_sqlalchemy},
    "asyncpg": {"asyncpg.pool": _hook_asyncpg},
    "psycopg": {
        "psycopg.connection": _hook_psycopg_connection,
        "psycopg.connection_async": _hook_psycopg_connection,
        "psycopg.cursor": _hook_psycopg_cursor,
        "psycopg.cursor_async": _hook_psycopg_cursor,
    },
    "psycopg_pool": {"psycopg_pool.pool": _hook_psycopg_pool, "psycopg_pool.pool_async": _hook_psycopg_pool},
    "psycopg2": {"psycopg2.pool": _hook_psycopg2_pool},
    "peewee": {"peewee": _hook_peewee},
    "redis": {
        "redis.asyncio.connection": _hook_redis_connection,
        "redis.asyncio.client": _hook_redis_client,
        "redis.connection": _hook_redis_connection,
        "redis.client": _hook_redis_client,
    },
    "httpx": {"httpx._client": _hook_httpx},
    "aiohttp": {"aiohttp.client": _hook_aiohttp},
}
"""Per library (the distribution its warnings name), the modules to patch and how."""
HOOKS: tuple[Hook, ...] = tuple(
    Hook(module, library, patch) for library, modules in PATCHES.items() for module, patch in modules.items()
)
LIBRARIES: tuple[str, ...] = tuple(dict.fromkeys(hook.library for hook in HOOKS))
"""The libraries drainspec sees by itself, in the order the README lists them."""


UNHOOKED: dict[str, str] = {
    "psycopg2": "psycopg2",  # its connections; its pools are hooked
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
    "aiomysql": "aiomysql",
    "asyncmy": "asyncmy",
    "aiosqlite": "aiosqlite",
    "tortoise": "Tortoise ORM",
    "databases": "databases",
    "pymongo": "pymongo",
    "motor": "motor",
    "beanie": "beanie",
    "valkey": "valkey",
    "aioredis": "aioredis",
    "aio_pika": "aio-pika",
    "aiokafka": "aiokafka",
    "nats": "nats-py",
    "elasticsearch": "elasticsearch",
}
"""
Client libraries no hook here sees, by the module the app imports: named when a run saw no
resource at all, so that "no resource was seen" does not read as "the app holds none".
"""


def unhooked_loaded() -> list[str]:
    """The `UNHOOKED` libraries the app has loaded by now (none when the hooks are off)."""
    return [name for module, name in UNHOOKED.items() if module in sys.modules] if _installed else []


def _apply(hook: Hook, module: ModuleType) -> None:
    try:
        hook.patch(module)
    except Exception as exc:
        _warn(hook.library, f"cannot hook {hook.module}; its resources are not seen", exc)


_installed = False


def install(hooks: Sequence[Hook] = HOOKS) -> None:
    """
    Hook every library of `hooks`: at once when the app has already imported it, else the
    moment it does (`chaos.probe.imports`). Idempotent.
    """
    global _installed
    if _installed:
        return
    _installed = True
    for hook in hooks:
        when_imported(hook.module, functools.partial(_apply, hook))
