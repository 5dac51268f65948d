"""
Validation in one place: every value that comes from outside drainspec (a command line, a
manifest, a journal, an experiment file) is checked here against the type and bounds the rest
of the code relies on, so that bad input is one clear line and exit 2, never a traceback deep
inside a verdict or a report.

    files      `open_input`: regular files only (a FIFO would block forever, /dev/zero never
               ends), and a size cap read before anything is parsed
    YAML       `load_yaml`: a size cap, a nesting-depth cap and a cap on how far aliases expand
               (the "billion laughs"), checked on the parser's events before anything is built
    paths      `validate_request_path`, `validate_http_path`: an HTTP path that starts with `/`,
               holds no line break or control character, and only the placeholders drainspec
               fills; a path can never turn the loopback URL it is appended to into another host
    journals   `check_event`: the fields the timeline, verdicts and reports read, each with the
               type they assume (`"sent": "abc"` or a string `grace` is refused, not crashed on)
"""

from __future__ import annotations

import math
import os
import re
import stat
import types
import typing
from collections.abc import Iterator, Mapping
from typing import IO, Any

from chaos.errors import DrainspecError, capped

# --- input files ---------------------------------------------------------------------------------

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 200_000  # nodes once every alias is expanded; real manifests have a few hundred


def open_input(path: str | os.PathLike[str], *, limit: int, what: str, error: type[DrainspecError]) -> IO[bytes]:
    """
    Open a file drainspec is asked to read: a regular file of at most `limit` bytes, else
    `error` with one line saying why. Opened non-blocking, so a FIFO is refused, not waited on.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: no such file; give the path of a {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path} is {_file_kind(info.st_mode)}, not a {what} file; give the path of a regular file")
        if info.st_size > limit:
            raise error(
                f"{path} is {info.st_size / 1e6:.1f} MB, over the {limit / 1e6:.0f} MB drainspec reads "
                f"from a {what}; is it the right file?"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_text(path: str | os.PathLike[str], *, limit: int, what: str, error: type[DrainspecError]) -> str:
    """The whole of a small input file (`open_input`), as UTF-8 text."""
    with open_input(path, limit=limit, what=what, error=error) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path} grew past {limit / 1e6:.0f} MB while it was read; is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start}); is it the right file?") from None


# --- YAML ---------------------------------------------------------------------------------------


def load_yaml_documents(text: str, *, source: str, error: type[DrainspecError]) -> Iterator[Any]:
    """
    Every document of a YAML text, built only after the parser's events showed it within
    bounds: size, nesting depth, and the size it reaches once aliases are expanded. A YAML
    syntax error propagates as `yaml.YAMLError` for the caller to word.
    """
    import yaml  # here: the probe imports this module inside every server, and never reads YAML

    if len(text) > MAX_MANIFEST_BYTES:
        raise error(f"{source}: {len(text) / 1e6:.1f} MB of YAML, over the {MAX_MANIFEST_BYTES / 1e6:.0f} MB limit")
    _check_yaml_events(text, source=source, error=error)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ten times faster
    yield from yaml.load_all(text, Loader=loader)  # a safe loader, its input bounded above


def _check_yaml_events(text: str, *, source: str, error: type[DrainspecError]) -> None:
    """
    Depth and alias expansion, counted on the event stream before anything is built: each
    collection adds up the expanded size of what it holds (an alias counts as the whole node
    it names), so ten levels of ten aliases each are seen as ten billion nodes, not a hundred.
    """
    import yaml

    sizes: dict[str, int] = {}  # anchor -> expanded node count
    stack: list[tuple[str | None, int]] = []  # (anchor, expanded nodes so far) of each open collection
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.CollectionStartEvent):
            stack.append((event.anchor, 1))
            if len(stack) > MAX_YAML_DEPTH:
                raise error(f"{source}: YAML nested deeper than {MAX_YAML_DEPTH} levels; is it a manifest?")
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, size = stack.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.AliasEvent):
            size = sizes.get(str(event.anchor), 1)
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
        else:
            continue
        if stack:
            anchor, count = stack[-1]
            stack[-1] = (anchor, count + size)
            if count + size > MAX_YAML_NODES:
                raise error(
                    f"{source}: its YAML expands to more than {MAX_YAML_NODES} nodes once aliases are "
                    'resolved (a "billion laughs"); drainspec does not expand it'
                )


# --- HTTP paths ----------------------------------------------------------------------------------

PLACEHOLDERS = ("seconds", "id")
MAX_PATH_CHARS = 8192
_BRACES = re.compile(r"\{([^{}]*)\}")


def validate_http_path(path: str, *, where: str) -> None:
    """
    A path drainspec appends to `http://127.0.0.1:PORT`: it must start with `/` (so the URL's
    host can never change: `@192.0.2.2/x` would make it a user name), and hold no space, line
    break or other control character (a request with CR/LF in it cannot be sent at all).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{where} {path!r} must start with '/', e.g. /healthz")
    if len(path) > MAX_PATH_CHARS:
        raise ValueError(f"{where} is {len(path)} characters long; at most {MAX_PATH_CHARS}")
    bad = next((char for char in path if char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"{where} {path!r} holds {bad!r}; a path has no spaces, line breaks or control characters")
    if "#" in path:
        raise ValueError(f"{where} {path!r} holds a '#' fragment, which is never sent to a server")


def validate_request_path(text: str) -> None:
    """
    A `--request-path` / `--background-path` value, `'METHOD /path?query'` (the method may be
    left out): an HTTP path as `validate_http_path` wants it, a method that is one token, and
    `{placeholders}` only among `{seconds}` and `{id}`. Raises ValueError with what to change.
    """
    method, _, path = str(text).strip().rpartition(" ")
    method = method.strip()
    if method and not re.fullmatch(r"[A-Za-z]{1,20}", method):
        raise ValueError(f"request {text!r}: the method {method!r} must be one word, like GET or POST")
    validate_http_path(path, where=f"request path in {text!r}:")
    for name in _BRACES.findall(path):
        if name not in PLACEHOLDERS:
            raise ValueError(f"request path {text!r}: unknown placeholder {{{name}}}; use {{seconds}} and {{id}}")
    if re.search(r"\{[^{}]*$|^[^{}]*\}", _BRACES.sub("", path)):
        raise ValueError(f"request path {text!r} has an unmatched brace; use {{seconds}} and {{id}} only")


# --- journal events ------------------------------------------------------------------------------

MAX_EVENT_DEPTH = 16
SIGNAL_NAME = re.compile(r"[A-Za-z0-9+_-]{1,32}")
MAX_TIME = 2**63 - 1

_INT = "an integer"
_NUMBER = "a number"
_BOOL = "true or false"
_BOOL_OR_NULL = "true, false or null"
_SCALAR = "a string, a number or null"
_LIST = "a list"
_OBJECT = "an object"

FIELD_TYPES: dict[str, str] = {
    # times and counts the verdicts do arithmetic on
    "sent": _INT,
    "accepted": _INT,
    "status": _INT,
    "target": _INT,
    "returncode": _INT,
    "exit_code": _INT,
    "port": _INT,
    "bytes": _INT,
    "conn": _INT,
    "client_port": _INT,
    "after": _NUMBER,
    "grace": _NUMBER,
    "propagation": _NUMBER,
    "stalled_ms": _NUMBER,
    "lag_ms": _NUMBER,
    "elapsed": _NUMBER,
    "limit": _NUMBER,
    # flags
    "killed": _BOOL,
    "ok": _BOOL,
    "sync": _BOOL,
    "spawned": _BOOL,
    "cancel_requested": _BOOL,
    "namespaced": _BOOL,
    "connection_close": _BOOL,
    "terminating": _BOOL,
    "handled": _BOOL_OR_NULL,
    "handles_stop_signal": _BOOL_OR_NULL,
    # ids and words used as keys or compared
    "id": _SCALAR,
    "request": _SCALAR,
    "task": _SCALAR,
    "pod": _SCALAR,
    "endpoint": _SCALAR,
    "outcome": _SCALAR,
    "role": _SCALAR,
    "signal": _SCALAR,
    "decision": _SCALAR,
    "problems": _LIST,
    "unhooked": _LIST,
    "scenario": _OBJECT,
    "replay": _OBJECT,
    "rollout": _OBJECT,
}
"""The type of each field wherever it appears; a field not listed may hold any JSON value."""


def check_event(raw: Mapping[str, Any]) -> str | None:
    """What is wrong with one decoded journal line, or None when the judges can read it."""
    t, pid, kind = raw.get("t"), raw.get("pid"), raw.get("kind")
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= MAX_TIME:
        return '"t" must be a non-negative integer (monotonic nanoseconds)'
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 <= pid <= MAX_TIME:
        return '"pid" must be a non-negative integer'
    if not isinstance(kind, str) or not kind:
        return '"kind" must be a non-empty string'
    if _depth(raw) > MAX_EVENT_DEPTH:
        return f"nested deeper than {MAX_EVENT_DEPTH} levels"
    for name, value in raw.items():
        expected = FIELD_TYPES.get(name)
        if expected is not None and not _has_type(value, expected):
            return f'"{name}" must be {expected}, not {_short(value)}'
    if "scenario" in raw:
        problem = check_scenario(raw["scenario"])
        if problem is not None:
            return f'"scenario": {problem}'
    for name in ("replay", "rollout"):
        if name in raw and not all(_has_type(v, _SCALAR) for v in raw[name].values()):
            return f'"{name}" must map names to strings or numbers'
    if "problems" in raw and not all(_has_type(item, _SCALAR) for item in raw["problems"]):
        return '"problems" must be a list of strings'
    return None


def check_scenario(data: Mapping[str, Any], *, runnable: bool = False) -> str | None:
    """
    A `Scenario` as data (journaled, or from an experiment file): each known field of the type
    its dataclass declares, numbers not negative. One that is to be run (`runnable`) also needs
    finite numbers: an infinite grace would wait forever.
    """
    from chaos.scenario import Scenario

    if not isinstance(data, Mapping):
        return "must be an object"

    hints = _scenario_hints(Scenario)
    signal = data.get("signal", "TERM")
    if isinstance(signal, str) and not SIGNAL_NAME.fullmatch(signal):
        return f'"signal" must be a signal name like TERM or SIGINT, not {_short(signal)}'
    for name, value in data.items():
        hint = hints.get(name)
        if hint is None:
            continue  # from another version of drainspec: `Scenario.from_dict` leaves it out
        if not _conforms(value, hint):
            return f'"{name}" must be {_hint_text(hint)}, not {_short(value)}'
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0 or math.isnan(value):
                return f'"{name}" must not be negative: {_short(value)}'
            if runnable and math.isinf(value):
                return f'"{name}" must be a finite number, not {_short(value)}'
    return None


_HINTS: dict[type, dict[str, Any]] = {}


def _scenario_hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a dataclass field of type `hint` (lists for tuples)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple or hint is tuple:
        if not isinstance(value, list | tuple):
            return False
        item = args[0] if args else Any
        return all(_conforms(v, item) for v in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        key, item = args if len(args) == 2 else (Any, Any)
        return all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
    return True


def _hint_text(hint: Any) -> str:
    """A field type in words: `a number`, `a string or null`, `a list of strings`."""
    words = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
    if hint in words:
        return words[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_hint_text(arm) for arm in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin is tuple:
        return "a list of " + _hint_text(args[0] if args else Any).removeprefix("a ").removeprefix("an ") + "s"
    if origin in (dict, Mapping):
        return "an object of " + _hint_text(args[1] if len(args) == 2 else Any).removeprefix("a ") + "s"
    return "a value"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_type(value: Any, expected: str) -> bool:
    if expected == _INT:
        return _is_int(value)
    if expected == _NUMBER:
        return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    if expected == _BOOL:
        return isinstance(value, bool)
    if expected == _BOOL_OR_NULL:
        return value is None or isinstance(value, bool)
    if expected == _SCALAR:
        return value is None or (
            isinstance(value, str | int | float) and not (isinstance(value, float) and math.isnan(value))
        )
    if expected == _LIST:
        return isinstance(value, list)
    if expected == _OBJECT:
        return isinstance(value, dict)
    return True


def _depth(value: Any) -> int:
    """How deeply containers nest in `value`, walked without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_EVENT_DEPTH:
            return deepest
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _short(value: Any) -> str:
    return capped(repr(value), 40)
