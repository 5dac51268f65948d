"""
Everything drainspec knows about each ASGI server, one frozen record per server in one registry.

uvicorn's `config.py` keeps one table per axis (loops, protocols, interfaces), so that adding an
entry is one line and no other module needs to know the names. The same here: how a server is
launched on the probe, which packages (and which releases) it needs, how a manifest's command is
bound to loopback, which flag bounds its drain and what the server does without it. The launcher
(`chaos.target`), the manifest reader (`chaos.k8s.manifest`) and the matrix (`chaos.matrix`) read
`SERVERS` and nothing else.

Every flag drainspec adds to a server's command line on its own carries the first release that
accepts it: an older release stops at once with "unrecognized arguments", which would look like
a broken app. A flag is added only when the installed release accepts it, and a release older
than the supported minimum is refused up front with the pip command that fixes it.

This module imports nothing else from drainspec but `chaos.errors`, so that every other module
can import it without a cycle.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, MappingProxyType

from chaos.errors import SetupError

PROBE_APP = "chaos.probe.asgi:app"
# uvicorn's and granian's "the app is a factory". The probe's app is not one: the probe calls the
# user's factory itself (`chaos.probe.loader`), so the flag is dropped where the app's name is replaced.
FACTORY_FLAG = "--factory"
HOST = "127.0.0.1"

VersionOf = Callable[[str], str | None]
"""The installed version of a distribution (a pip name), or None when it is not installed."""


def installed_version(distribution: str) -> str | None:
    """
    The version pip installed, without importing the server: from the name of its
    `NAME-VERSION.dist-info` directory (the wheel format's own naming) in the first entry of
    `sys.path` that has one, as the interpreter would find it. Only when there is none (an
    `.egg-info`, or nothing installed) through `importlib.metadata`, whose import alone is
    16 ms of what drainspec adds to every run (`bench/overhead.py`).
    """
    wanted = _normalized(distribution)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # a zip file, a directory gone
            continue
        for name in names:
            stem, dot, _ = name.rpartition(".dist-info")
            project, _, version = stem.partition("-")
            if dot and version and _normalized(project) == wanted:
                return version
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _normalized(project: str) -> str:
    """A project name as the packaging specifications compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", project).lower()


def release(version: str) -> tuple[int, ...]:
    """
    The numeric release of a version string, trailing zeros dropped so that 25.1 == 25.1.0.
    Pre- and post-release tags are ignored (25.1.0rc1 counts as 25.1): the servers' flags are
    added in final releases, and a full version parser is not worth a dependency here.
    """
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    if match is None:
        raise SetupError(f"cannot read the version {version!r}; expected something like 25.3.0")
    parts = [int(part) for part in match.group(1).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def at_least(version: str, minimum: str) -> bool:
    return release(version) >= release(minimum)


@dataclass(frozen=True)
class Requirement:
    """
    A distribution a server needs, and the oldest release drainspec supports; `raised_by` raises
    that minimum where another installed distribution needs it: (other, from its release, the
    minimum then, what goes wrong below it).
    """

    distribution: str  # the pip name
    minimum: str
    raised_by: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def pip(self) -> str:
        """The requirement as one shell-safe pip argument (`>` would otherwise redirect)."""
        return shlex.quote(f"{self.distribution}>={self.minimum}")


@dataclass(frozen=True)
class Flag:
    """
    Words drainspec puts on a server's command line. `{app}`, `{host}`, `{port}` and `{workers}`
    are filled in at launch. `since` is the first release of the server that accepts the words
    (None: every supported release does); `min_workers` leaves out words that only matter with
    that many workers.
    """

    words: tuple[str, ...]
    since: str | None = None
    min_workers: int = 1

    def applies(self, version: str, workers: int) -> bool:
        return workers >= self.min_workers and (self.since is None or at_least(version, self.since))


@dataclass(frozen=True)
class ConfigFile:
    """
    A server's Python config file: the options that name it, the file it reads from its working
    directory when none is named, and the drain's setting in it (gunicorn: `-c`, `gunicorn.conf.py`,
    `graceful_timeout`).
    """

    flags: tuple[str, ...]
    default: str
    drain_setting: str


@dataclass(frozen=True)
class ServerSpec:
    """
    One server as drainspec runs and reads it.

    `name` is also the executable a manifest's command names; `module` is run with `python -m`
    so that the server comes from drainspec's own environment. `requires` lists the server's
    distribution first, then what it needs to run an ASGI app. `launch` is the argv on the probe,
    in order; `bind` is what replaces a manifest command's own host/port/bind options.

    `drain_flag` bounds the drain (each is accepted by every supported release: checked in the
    servers' sources at the minimum versions). `drain_default` is the server's own default for
    it, None when the drain is unbounded; `default_enforced` is False when that default cannot
    be relied on, so a command without the flag counts as unbounded.
    """

    name: str
    module: str
    requires: tuple[Requirement, ...]
    launch: tuple[Flag, ...]
    bind: tuple[str, ...]
    drain_flag: str
    drain_default: float | None
    default_enforced: bool = True
    # Where else the drain's bound may be set, in the order the server lets them override each
    # other (the command line first): words in an environment variable, the flag's own
    # environment variable, a config file. A manifest's static findings read all of them.
    args_env: str | None = None
    drain_env: str | None = None
    config: ConfigFile | None = None
    tls_flags: tuple[str, ...] = ()  # the options that make the server speak HTTPS
    # The stop signals the server drains on (without SIG); any other is not a graceful stop, and
    # those of `quick_on` stop it at once on purpose.
    drains_on: tuple[str, ...] = ("TERM", "INT")
    quick_on: tuple[str, ...] = ()

    @property
    def pip_command(self) -> str:
        return "pip install " + " ".join(requirement.pip for requirement in self.requires)

    @property
    def drain_bound(self) -> float | None:
        """How long a command without `drain_flag` may drain, as far as drainspec can rely on it."""
        return self.drain_default if self.default_enforced else None

    @property
    def knobs(self) -> tuple[tuple[str, ...], ...]:
        """The matrix's default cells: the server as it ships, and with its drain bounded at 1 s."""
        return ((), (self.drain_flag, "1"))

    def installed(self, version_of: VersionOf = installed_version) -> str:
        """
        The installed release of the server, after checking that it and everything it needs are
        installed and recent enough; a `SetupError` naming the pip command otherwise.
        """
        server, *companions = self.requires
        version = version_of(server.distribution)
        if version is None:
            raise SetupError(f"{self.name} is not installed here; install it: {self.pip_command}")
        self._check(server, version)
        for requirement in companions:
            found = version_of(requirement.distribution)
            if found is None:
                raise SetupError(
                    f"{self.name} needs {requirement.distribution}; install it: pip install {requirement.pip}"
                )
            self._check(requirement, found)
            for other, since, minimum, why in requirement.raised_by:
                beside = version_of(other)
                if beside is not None and at_least(beside, since) and not at_least(found, minimum):
                    raised = Requirement(requirement.distribution, minimum)
                    raise SetupError(
                        f"{requirement.distribution} {found} does not run on {other} {beside} ({why} on "
                        f"{other} >= {since}); upgrade it: pip install --upgrade {raised.pip}"
                    )
        return version

    def _check(self, requirement: Requirement, version: str) -> None:
        if not at_least(version, requirement.minimum):
            raise SetupError(
                f"{requirement.distribution} {version} is older than drainspec supports "
                f"({requirement.distribution} >= {requirement.minimum}); upgrade it: "
                f"pip install --upgrade {requirement.pip}"
            )

    def argv(
        self,
        port: int,
        *,
        workers: int = 1,
        extra: Sequence[str] = (),
        version: str | None = None,
    ) -> list[str]:
        """
        The argv that runs the probe on HOST:`port`. `version` is the server's release (the
        installed one, checked with `installed`, when None): it decides which of drainspec's own
        flags are added. `extra` (the user's arguments) is appended unchecked.
        """
        if version is None:
            version = self.installed()
        else:
            self._check(self.requires[0], version)
        values = {"app": PROBE_APP, "host": HOST, "port": port, "workers": workers}
        args = [word.format(**values) for flag in self.launch if flag.applies(version, workers) for word in flag.words]
        return [sys.executable, "-m", self.module, *args, *extra]

    def bind_words(self, port: int) -> list[str]:
        """What binds a manifest's command to HOST:`port` instead of its own address."""
        return [word.format(host=HOST, port=port) for word in self.bind]

    def timeout_advice(self, seconds: float) -> str:
        """How to bound the drain to `seconds` (whole seconds, at least 1: some servers take no fraction)."""
        return f"bound it: {self.name} {self.drain_flag} {max(1, math.floor(seconds))}"


APP = Flag(("{app}",))
HOST_PORT = ("--host", "{host}", "--port", "{port}")
BIND = ("--bind", "{host}:{port}")

UVICORN = ServerSpec(
    name="uvicorn",
    module="uvicorn",
    requires=(Requirement("uvicorn", "0.30"),),
    # `--workers 1` would be the same single process; it is left out so the argv reads as the default.
    launch=(APP, Flag(HOST_PORT), Flag(("--workers", "{workers}"), min_workers=2)),
    bind=HOST_PORT,
    drain_flag="--timeout-graceful-shutdown",
    drain_default=None,
    drain_env="UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN",  # click's auto_envvar_prefix="UVICORN"
    tls_flags=("--ssl-certfile", "--ssl-keyfile"),
)

GUNICORN = ServerSpec(
    name="gunicorn",
    module="gunicorn",
    # uvicorn 0.36 replaced the loop setup uvicorn-worker 0.3 calls.
    requires=(
        Requirement("gunicorn", "23"),
        Requirement("uvicorn-worker", "0.3", (("uvicorn", "0.36", "0.4", "its workers fail to boot"),)),
    ),
    launch=(
        APP,
        Flag(BIND),
        Flag(("--workers", "{workers}")),
        Flag(("--worker-class", "uvicorn_worker.UvicornWorker")),
        # From 25.1 gunicorn opens a control socket at one path per user by default; runs side by
        # side would share it. Older releases have no socket and reject the flag.
        Flag(("--no-control-socket",), since="25.1"),
    ),
    bind=BIND,
    drain_flag="--graceful-timeout",
    drain_default=30.0,  # then the arbiter SIGKILLs the workers, skipping lifespan shutdown
    args_env="GUNICORN_CMD_ARGS",
    config=ConfigFile(flags=("-c", "--config"), default="gunicorn.conf.py", drain_setting="graceful_timeout"),
    tls_flags=("--certfile", "--keyfile"),
    drains_on=("TERM",),
    quick_on=("INT", "QUIT"),
)

HYPERCORN = ServerSpec(
    name="hypercorn",
    module="hypercorn",
    requires=(Requirement("hypercorn", "0.17"),),
    launch=(APP, Flag(BIND), Flag(("--workers", "{workers}"))),
    bind=BIND,
    drain_flag="--graceful-timeout",
    # The 3 s default is not enforced on Python >= 3.12.1 while connections are open
    # (`server.wait_closed()` waits for them first, hypercorn #308), and a manifest does not say
    # which Python the image runs.
    drain_default=3.0,
    default_enforced=False,
    tls_flags=("--certfile", "--keyfile"),
)

GRANIAN = ServerSpec(
    name="granian",
    module="granian",
    requires=(Requirement("granian", "2.0"),),
    launch=(Flag(("--interface", "asgi")), Flag(HOST_PORT), Flag(("--workers", "{workers}")), APP),
    bind=HOST_PORT,
    drain_flag="--workers-kill-timeout",
    drain_default=None,  # disabled by default: the main process waits for its workers forever
    tls_flags=("--ssl-certificate", "--ssl-keyfile"),
)

SERVERS: Mapping[str, ServerSpec] = MappingProxyType(
    {spec.name: spec for spec in (UVICORN, GUNICORN, HYPERCORN, GRANIAN)}
)


WORKERS_OF: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    {"gunicorn": ("uvicorn", ("uvicorn_worker", "uvicorn.workers"))}
)
"""A server whose workers can be another server's: gunicorn's UvicornWorker serves with uvicorn's `Server`."""


def running_servers(frame: FrameType | None, modules: Mapping[str, object] = sys.modules) -> dict[str, str]:
    """
    The servers whose code is on the stack from `frame` up (the one importing the app), and the
    server its workers are (`WORKERS_OF`), with their releases, as the probe journals them. A
    server the app merely imports (`import uvicorn` for its `__main__`, or the probe's own use of
    uvicorn's importer) is not on the stack, and not named.
    """
    on_stack: set[str] = set()
    while frame is not None:
        name = frame.f_globals.get("__name__")
        if isinstance(name, str):
            on_stack.add(name.partition(".")[0])
        frame = frame.f_back
    for server, (worker, worker_modules) in WORKERS_OF.items():
        if server in on_stack and any(module in modules for module in worker_modules):
            on_stack.add(worker)
    return {
        spec.requires[0].distribution: _release_of(spec, modules[spec.module])
        for spec in SERVERS.values()
        if spec.module in on_stack and spec.module in modules
    }


def _release_of(spec: ServerSpec, module: object) -> str:
    """A running server's release: its `__version__`, else what pip installed (hypercorn has none), else `?`."""
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    return installed_version(spec.requires[0].distribution) or "?"


@dataclass(frozen=True)
class Flaw:
    """
    A shutdown bug of a server's releases older than `fixed_in`, measured by drainspec's own
    runs: a verdict it fails names it, so that what fixes it reads as an upgrade of the server
    and not as a change to the app.
    """

    distribution: str
    fixed_in: str
    does: str
    reference: str
    hangs: bool = False  # it never stops, and the deadline's SIGKILL ends it; else it exits without a shutdown

    def found_in(self, servers: Mapping[str, str]) -> str | None:
        """The flawed release among a process's `servers` (`running_servers`), or None."""
        version = servers.get(self.distribution)
        try:
            flawed = version is not None and not at_least(version, self.fixed_in)
        except (SetupError, ValueError):  # a release nobody can read (a journal's, a server's own odd one)
            return None
        return version if flawed else None

    def told(self, version: str) -> str:
        return (
            f"{self.distribution} {version} {self.does} (fixed in {self.fixed_in}, {self.reference}): "
            f"upgrade it, pip install {Requirement(self.distribution, self.fixed_in).pip}"
        )


SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP = Flaw(
    "uvicorn",
    "0.41.0",
    "returns without running the lifespan shutdown when the stop signal comes before its startup is over "
    "(the app's lifespan startup, then its sockets)",
    "uvicorn#2812",
)
WORKER_HANGS_AFTER_A_SIGNAL_IN_STARTUP = Flaw(
    "granian",
    "2.2.2",
    "never stops a worker the stop signal reaches before it serves: the worker runs on until SIGKILL",
    "measured by drainspec: 2.0.0 to 2.2.1 hang, 2.2.2 and later stop",
    hangs=True,
)
STARTUP_FLAWS = (SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP, WORKER_HANGS_AFTER_A_SIGNAL_IN_STARTUP)
"""What releases of the servers do when the stop signal comes before they serve (a pod deleted as it starts)."""


SCRIPT_LAUNCHER = "chaos.probe.script"
_PYTHON = re.compile(r"python(\d+(\.\d+)*)?$")
_OPTIONS_WITH_VALUE = frozenset({"-X", "-W", "-Q"})


@dataclass(frozen=True)
class Script:
    """A command that starts the app's own script (`python main.py`), made to run on the probe."""

    argv: list[str]  # the same interpreter and options, through `SCRIPT_LAUNCHER`
    name: str  # what runs, for the report: `main.py`, `app.main`


def own_script(words: Sequence[str]) -> Script | None:
    """
    `words` run through `chaos.probe.script` when they start the app's own script: a Python
    interpreter on a script (`python main.py`) or a module (`python -m app.main`) found here, in
    the directory drainspec runs in, or the FastAPI CLI (`fastapi run app/main.py`, `python -m
    fastapi run`), which hands uvicorn the app it finds in-process, as a script does. None for
    anything else: a known server (`python -m uvicorn`), and what is not the app's own code
    (`python -m http.server`).
    """
    if _is_fastapi_cli([os.path.basename(words[0]), *words[1:2]] if words else []):
        return Script([sys.executable, "-m", SCRIPT_LAUNCHER, "-m", FASTAPI_CLI, *words[1:]], _fastapi_app(words[1:]))
    if len(words) < 2 or not _PYTHON.match(os.path.basename(words[0])):
        return None
    index = 1
    while index < len(words):
        word = words[index]
        if word == "-m":
            if _is_fastapi_cli(words[index + 1 : index + 3]):
                launcher = [*words[:index], "-m", SCRIPT_LAUNCHER, *words[index:]]
                return Script(launcher, _fastapi_app(words[index + 2 :]))
            if index + 1 == len(words) or not _module_here(words[index + 1]):
                return None
            launcher = [*words[:index], "-m", SCRIPT_LAUNCHER, *words[index:]]
            return Script(launcher, words[index + 1])
        if word == "-c" or word == "-":
            return None
        if word in _OPTIONS_WITH_VALUE:
            index += 2
            continue
        if word.startswith("-"):
            index += 1
            continue
        if not os.path.isfile(word):
            return None
        return Script([*words[:index], "-m", SCRIPT_LAUNCHER, *words[index:]], word)
    return None


FASTAPI_CLI = "fastapi"  # the FastAPI CLI (fastapi-cli): `fastapi run` serves with uvicorn.run
FASTAPI_COMMANDS = ("run", "dev")
_FASTAPI_OPTIONS_WITH_VALUE = frozenset(
    {"--host", "--port", "--reload-dir", "--workers", "--root-path", "--app", "--forwarded-allow-ips", "--public-url"}
)


def runs_fastapi_cli(words: Sequence[str]) -> bool:
    """Whether a command's words (or a shell script's) start the FastAPI CLI's server anywhere."""
    return any(
        _is_fastapi_cli([os.path.basename(word), *words[n + 1 : n + 2]])
        or (word == "-m" and _is_fastapi_cli(words[n + 1 : n + 3]))
        for n, word in enumerate(words)
    )


def _is_fastapi_cli(words: Sequence[str]) -> bool:
    """`fastapi run` or `fastapi dev`: the CLI and one of its serving commands."""
    return len(words) >= 2 and words[0] == FASTAPI_CLI and words[1] in FASTAPI_COMMANDS


def _fastapi_app(args: Sequence[str]) -> str:
    """
    What the FastAPI CLI serves, for the report (`args` from `run` or `dev` on): its
    `--entrypoint`, else the path it is given (`app/main.py`), else `fastapi run` (the CLI finds
    the app itself: main.py, app/main.py, ...).
    """
    index = 1
    while index < len(args):
        option, eq, value = args[index].partition("=")
        if option in ("--entrypoint", "-e"):
            return value if eq else (args[index + 1] if index + 1 < len(args) else f"{FASTAPI_CLI} {args[0]}")
        if option in _FASTAPI_OPTIONS_WITH_VALUE:
            index += 1 if eq else 2
            continue
        if not args[index].startswith("-"):
            return args[index]
        index += 1
    return f"{FASTAPI_CLI} {args[0]}"


def _module_here(module: str) -> bool:
    path = module.replace(".", os.sep)
    return os.path.isfile(f"{path}.py") or os.path.isfile(os.path.join(path, "__main__.py"))


def own_script_of(command: str | None) -> Script | None:
    """
    The app's own script that `command` starts (`python main.py`, `python -m app.main`), run on
    the probe by `chaos.probe.script`; None for any other command, and for one that says where
    the app and the port go ({app}, {port}): drainspec then fills them in, as for any server.
    """
    if command is None or "{app}" in command or "{port}" in command:
        return None
    try:
        return own_script(shlex.split(command))
    except ValueError:
        return None


TLS_OPTIONS: tuple[str, ...] = tuple(sorted({option for spec in SERVERS.values() for option in spec.tls_flags}))
"""Every known server's options that make it speak HTTPS."""


def tls_option_in(words: Sequence[str]) -> str | None:
    """The first option among `words` that makes a known server speak HTTPS (`--ssl-certfile`), if any."""
    return next((word.partition("=")[0] for word in words if word.partition("=")[0] in TLS_OPTIONS), None)


def refuse_tls(words: Sequence[str]) -> None:
    """A server told to serve HTTPS would meet drainspec's plain-HTTP requests with closed connections."""
    if (option := tls_option_in(words)) is not None:
        raise SetupError(
            f"{option} makes the server speak HTTPS, and drainspec's requests are plain HTTP on 127.0.0.1: "
            "leave the TLS options out of the run"
        )


def names_text() -> str:
    """The servers as prose, for messages: "uvicorn, gunicorn, hypercorn or granian"."""
    *first, last = SERVERS
    return f"{', '.join(first)} or {last}"
