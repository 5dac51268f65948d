"""
A Deployment or Pod manifest, read the way the kubelet reads it, and what can be wrong with it
before anything runs.

Only what shapes termination is kept: the container's argv (command + args, `$(VAR)` expanded),
env, ports, the readiness probe, `lifecycle.preStop`, `lifecycle.stopSignal` and
`terminationGracePeriodSeconds`, each with Kubernetes' default; `resolve_fenceposts` resolves a
rolling update's maxSurge / maxUnavailable as the Deployment controller does. The checks of the
research table of misconfigurations live in `chaos.k8s.findings` (`static_findings`, re-exported
here); `recommend_budget` turns measured numbers into preStop / grace / server timeout.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from chaos.errors import ManifestError
from chaos.servers import (
    FACTORY_FLAG,
    FASTAPI_CLI,
    FASTAPI_COMMANDS,
    HOST,
    PROBE_APP,
    SCRIPT_LAUNCHER,
    SERVERS,
    TLS_OPTIONS,
    ConfigFile,
    Script,
    names_text,
    own_script,
)
from chaos.validate import MAX_MANIFEST_BYTES, load_yaml_documents, read_text

if TYPE_CHECKING:
    from chaos.k8s.findings import Finding as Finding
    from chaos.k8s.findings import static_findings as static_findings
    from chaos.k8s.image import ImageConfig

DEFAULT_GRACE = 30.0
MARGIN = 2  # seconds a budget keeps between the end of a bounded drain and SIGKILL (T >= S + D + M)
JITTER = 1  # seconds added to a propagation delay for the preStop sleep
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod")
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh"})
INITS = frozenset({"tini", "dumb-init", "catatonit", "docker-init"})
SERVER_NAMES = frozenset(SERVERS)
IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(\(\))?$")
VAR_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class SleepHook:
    seconds: float


@dataclass(frozen=True)
class ExecHook:
    command: tuple[str, ...]


@dataclass(frozen=True)
class HttpGetHook:
    path: str
    port: int | str | None = None


Hook = SleepHook | ExecHook | HttpGetHook


@dataclass(frozen=True)
class ProbeSpec:
    """A readiness (or liveness) probe with Kubernetes' defaults filled in."""

    path: str | None = None
    period: float = 10.0
    failure_threshold: int = 3
    timeout: float = 1.0
    termination_grace: float | None = None

    @property
    def seconds_to_fail(self) -> float:
        return self.period * self.failure_threshold


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    prestop: Hook | None = None
    stop_signal: str | None = None  # lifecycle.stopSignal
    # No `command:`: the image's ENTRYPOINT runs, with `argv` (the manifest's args, if any) or the
    # image's CMD after it; `with_image` fills them in from the Dockerfile.
    from_image: bool = False
    image_stop_signal: str | None = None  # the Dockerfile's STOPSIGNAL
    command_from: str | None = None  # the Dockerfile `with_image` read the command from

    @property
    def signal(self) -> str:
        """The stop signal the kubelet sends: lifecycle.stopSignal, else the image's STOPSIGNAL, else TERM."""
        return self.stop_signal or self.image_stop_signal or "TERM"


@dataclass(frozen=True)
class PodSpec:
    """A workload's pod template, with Kubernetes' defaults for what the manifest leaves out."""

    kind: str
    name: str
    grace: float  # terminationGracePeriodSeconds
    containers: tuple[ContainerSpec, ...]
    replicas: int = 1
    # The rolling update's strategy, as written (a count or a percentage): `resolve_fenceposts`.
    max_surge: int | str = "25%"
    max_unavailable: int | str = "25%"
    os_name: str | None = None


@dataclass(frozen=True)
class Budget:
    """The recommended settings, in whole seconds, and the arithmetic that led to them."""

    prestop: int
    grace: int  # terminationGracePeriodSeconds
    # The server's own drain bound, under what is left of the grace after preStop.
    server_timeout: int
    lines: tuple[str, ...]


# -- reading -------------------------------------------------------------------------------------


def load_manifest(path: Path) -> PodSpec:
    """
    The first workload in a (multi-document) YAML file. Only a regular file of at most
    `MAX_MANIFEST_BYTES` is read (`/dev/zero` or a FIFO is refused at once, not read forever).
    """
    text = read_text(path, limit=MAX_MANIFEST_BYTES, what="Deployment or Pod manifest", error=ManifestError)
    return parse_manifest(text, source=str(path))


def parse_manifest(text: str, *, source: str = "manifest") -> PodSpec:
    """
    The first workload of a YAML text, loaded within bounds (`chaos.validate.load_yaml_documents`:
    size, nesting depth, alias expansion), so a hostile manifest is one line, never a hang.
    """
    try:
        documents = [doc for doc in load_yaml_documents(text, source=source, error=ManifestError) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(f"{source}: invalid YAML{where}: {problem}") from None
    kinds = []
    for document in documents:
        if not isinstance(document, dict):
            raise ManifestError(f"{source}: every YAML document must be a mapping with apiVersion and kind")
        kind = document.get("kind")
        kinds.append(str(kind))
        if kind in WORKLOAD_KINDS:
            return _workload(document, source)
    found = ", ".join(kinds) or "nothing"
    raise ManifestError(f"{source}: found {found}; drainspec replays one of {', '.join(WORKLOAD_KINDS)}")


def _workload(document: dict[str, Any], source: str) -> PodSpec:
    kind = str(document["kind"])
    name = str(_mapping(document.get("metadata"), f"{source}: metadata").get("name") or kind.lower())
    where = f"{source}: {kind}/{name}"
    spec = _mapping(document.get("spec"), f"{where}: spec")
    replicas: Any = 1
    max_surge: Any = "25%"
    max_unavailable: Any = "25%"
    if kind == "Pod":
        pod_spec = spec
    else:
        template = _mapping(spec.get("template"), f"{where}: spec.template")
        pod_spec = _mapping(template.get("spec"), f"{where}: spec.template.spec")
        replicas = spec.get("replicas", 1)
        rolling = _mapping(_mapping(spec.get("strategy"), "strategy").get("rollingUpdate"), "rollingUpdate")
        max_surge = rolling.get("maxSurge", max_surge)
        max_unavailable = rolling.get("maxUnavailable", max_unavailable)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ManifestError(f"{where}: spec.replicas must be a non-negative integer")
    grace = _seconds(
        pod_spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE), f"{where}: terminationGracePeriodSeconds"
    )
    raw_containers = pod_spec.get("containers")
    if not isinstance(raw_containers, list) or not raw_containers:
        raise ManifestError(f"{where}: the pod spec has no containers")
    containers = tuple(_container(raw, f"{where}: containers[{n}]") for n, raw in enumerate(raw_containers))
    os_name = _mapping(pod_spec.get("os"), f"{where}: os").get("name")
    return PodSpec(
        kind=kind,
        name=name,
        grace=grace,
        containers=containers,
        replicas=replicas,
        max_surge=_int_or_percent(max_surge, f"{where}: maxSurge"),
        max_unavailable=_int_or_percent(max_unavailable, f"{where}: maxUnavailable"),
        os_name=str(os_name) if os_name else None,
    )


def _container(raw: Any, where: str) -> ContainerSpec:
    raw = _mapping(raw, where)
    name = str(raw.get("name") or "")
    if not name:
        raise ManifestError(f"{where}: a container needs a name")
    where = f"{where.rsplit(':', 1)[0]}: container {name}"
    env = _env(raw.get("env"), where)
    command = _words(raw.get("command"), f"{where}: command")
    args = _words(raw.get("args"), f"{where}: args")
    argv = tuple(expand_references(word, env) for word in (*command, *args))
    lifecycle = _mapping(raw.get("lifecycle"), f"{where}: lifecycle")
    stop_signal = lifecycle.get("stopSignal")
    ports = tuple(
        int(port["containerPort"])
        for port in raw.get("ports") or []
        if isinstance(port, dict) and isinstance(port.get("containerPort"), int)
    )
    return ContainerSpec(
        name=name,
        image=str(raw.get("image") or ""),
        argv=argv,
        env=env,
        ports=ports,
        readiness=_probe(raw.get("readinessProbe"), f"{where}: readinessProbe"),
        liveness=_probe(raw.get("livenessProbe"), f"{where}: livenessProbe"),
        prestop=_hook(lifecycle.get("preStop"), f"{where}: lifecycle.preStop"),
        stop_signal=str(stop_signal) if stop_signal else None,
        from_image=not command,
    )


def _hook(raw: Any, where: str) -> Hook | None:
    if raw is None:
        return None
    raw = _mapping(raw, where)
    if "sleep" in raw:
        seconds = _seconds(_mapping(raw["sleep"], f"{where}.sleep").get("seconds"), f"{where}.sleep.seconds")
        return SleepHook(seconds)
    if "exec" in raw:
        command = _words(_mapping(raw["exec"], f"{where}.exec").get("command"), f"{where}.exec.command")
        if not command:
            raise ManifestError(f"{where}.exec.command is empty")
        return ExecHook(tuple(command))
    if "httpGet" in raw:
        get = _mapping(raw["httpGet"], f"{where}.httpGet")
        path = str(get.get("path") or "/")
        return HttpGetHook(path if path.startswith("/") else "/" + path, get.get("port"))
    if "tcpSocket" in raw:
        raise ManifestError(f"{where}: tcpSocket is not a working lifecycle handler; use sleep, exec or httpGet")
    raise ManifestError(f"{where}: expected one of sleep, exec or httpGet")


def _probe(raw: Any, where: str) -> ProbeSpec | None:
    if raw is None:
        return None
    raw = _mapping(raw, where)
    get = raw.get("httpGet")
    path = str(_mapping(get, f"{where}.httpGet").get("path") or "/") if get is not None else None
    grace = raw.get("terminationGracePeriodSeconds")
    return ProbeSpec(
        path=path,
        period=_seconds(raw.get("periodSeconds", 10), f"{where}.periodSeconds"),
        failure_threshold=int(_seconds(raw.get("failureThreshold", 3), f"{where}.failureThreshold")),
        timeout=_seconds(raw.get("timeoutSeconds", 1), f"{where}.timeoutSeconds"),
        termination_grace=_seconds(grace, f"{where}.terminationGracePeriodSeconds") if grace is not None else None,
    )


def _env(raw: Any, where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    if raw is None:
        return env
    if not isinstance(raw, list):
        raise ManifestError(f"{where}: env must be a list of name/value pairs")
    for item in raw:
        if not isinstance(item, dict) or not item.get("name"):
            raise ManifestError(f"{where}: every env entry needs a name")
        if "value" in item:  # valueFrom (secrets, field refs) cannot be resolved offline
            env[str(item["name"])] = expand_references(str(item["value"]), env)
    return env


def expand_references(word: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return VAR_REFERENCE.sub(replace, word)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be a mapping")
    return value


def _words(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raise ManifestError(f"{where} must be a list of strings (exec form), not one string")
    if not isinstance(value, list) or not all(isinstance(word, str | int | float) for word in value):
        raise ManifestError(f"{where} must be a list of strings")
    return [str(word) for word in value]


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise ManifestError(f"{where} must be a non-negative number of seconds, not {value!r}")
    return float(value)


def _int_or_percent(value: Any, where: str) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+%", value):
        return value
    raise ManifestError(f"{where} must be an integer or a percentage like 25%")


def select_container(pod: PodSpec, name: str | None) -> ContainerSpec:
    if name is None:
        return pod.containers[0]
    for container in pod.containers:
        if container.name == name:
            return container
    names = ", ".join(c.name for c in pod.containers)
    raise ManifestError(f"{pod.kind}/{pod.name} has no container {name!r}; its containers: {names}")


def _copied_here(argv: Sequence[str], image: ImageConfig) -> tuple[tuple[str, ...], list[str]]:
    """
    The image's files that the command names (`/entrypoint.sh`) as the build context holds them
    here (`container/entrypoint.sh`, by the Dockerfile's COPY), so that the replay can run them.
    """
    words, notes = [], []
    for word in argv:
        path_like = word.startswith(("/", "./", "../")) or ("/" in word and not word.startswith("-"))
        local = image.local_path(image.in_workdir(word)) if path_like and not Path(word).exists() else None
        if local is not None and Path(local).is_file():
            notes.append(f"{word} in the image is {local} here (copied by {image.source})")
            word = str(Path(local).resolve())  # absolute: the command may run in the laid-out WORKDIR
        words.append(word)
    return tuple(words), notes


def with_image(pod: PodSpec, container: ContainerSpec, image: ImageConfig | None) -> tuple[ContainerSpec, list[str]]:
    """
    The container as the kubelet runs it from its image (`chaos.k8s.image`), and what was
    assumed to get there. Without `command:` the image's ENTRYPOINT runs, followed by the
    manifest's `args:` or else the image's CMD; the image's ENV lies under the manifest's `env:`,
    and its STOPSIGNAL applies where `lifecycle.stopSignal` is not set.
    """
    where = f"{pod.kind}/{pod.name}: container {container.name}"
    if image is None:
        if container.from_image:
            from chaos.k8s.image import dockerfiles_here

            found = next(iter(dockerfiles_here()), "PATH")
            raise ManifestError(
                f"{where}: no command: it runs its image's ENTRYPOINT and CMD, which drainspec cannot "
                f"read from a registry; pass the Dockerfile the image is built from (--dockerfile {found}), "
                "or spell the command out in `command:` (exec form)"
            )
        return container, []
    notes = []
    argv = container.argv
    if container.from_image:
        entrypoint = image.entrypoint
        if entrypoint is None:
            entrypoint = ()
            notes.append(f"{image.source} sets no ENTRYPOINT: taken as none from its base image {image.base}")
        if container.argv:
            argv = (*entrypoint, *container.argv)
        elif image.cmd is not None:
            argv = (*entrypoint, *image.cmd)
        elif entrypoint:
            argv = entrypoint
        else:
            raise ManifestError(
                f"{where}: no command, and {image.source} sets neither ENTRYPOINT nor CMD (its base image "
                f"{image.base} does, and drainspec cannot read it offline); spell it out in `command:` (exec form)"
            )
        if not argv:
            raise ManifestError(f"{where}: no command, and {image.source} runs nothing; spell it out in `command:`")
        notes.append(f"the command is the image's, from {image.source}: {shlex.join(argv)}")
    argv, copied = _copied_here(argv, image)
    notes += copied
    resolved = dataclasses.replace(
        container,
        argv=argv,
        env={**image.env, **container.env},
        image_stop_signal=image.stop_signal,
        from_image=False,
        command_from=image.source if container.from_image else None,
    )
    return resolved, notes


# -- the command: shells, inits, servers ---------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """How PID 1 reaches the app: through an init, a shell, both or neither."""

    init: str | None
    shell: str | None
    script: str | None  # what the shell runs: its `-c` text, or the text of the script file it runs
    server: str | None
    app_execs: bool  # the app replaces the shell (exec, or bash running one simple command)
    # The script file the shell runs (`sh ./boot.sh`, or `./boot.sh` with a shell's `#!`), read
    # from the directory the replay runs in, as the image's working directory would hold it.
    script_file: str | None = None
    shebang: tuple[str, ...] = ()  # the interpreter line of a script file run by itself


MAX_SCRIPT_BYTES = 64 * 1024  # an entrypoint script; anything larger is not read


def analyse(argv: Sequence[str]) -> Command:
    words = list(argv)
    init = None
    if words and Path(words[0]).name in INITS:
        init = Path(words[0]).name
        words = words[1:]
        while words and words[0].startswith("-"):
            flag = words.pop(0)
            if flag == "--":
                break
    shell = script = script_file = None
    shebang: tuple[str, ...] = ()
    passed: list[str] = []  # the words a script file is given: its "$@"
    if words and Path(words[0]).name in SHELLS:
        shell = Path(words[0]).name
        flags, rest = _shell_options(words[1:])
        if any("c" in flag.lstrip("-+") for flag in flags if not flag.startswith("--")) and rest:
            script = rest[0]
        elif rest:  # a script file: its text when it can be read here
            script, script_file, passed = read_script(rest[0]), rest[0], rest[1:]
    elif words and (text := read_script(words[0])) is not None and (line := _shell_line(text)):
        shell, script, script_file, shebang, passed = Path(line[0]).name, text, words[0], line, words[1:]
    server = _server_in(shlex_words(script) if script is not None else words)
    if server is None and script_file is not None and script is not None and passed:
        runs_arguments = RUNS_ARGUMENTS.search(script)
        if runs_arguments is not None:  # `exec "$@"`: the image's CMD, given to its ENTRYPOINT script
            inner = analyse(passed)
            if runs_arguments["exec"]:  # what it is given replaces the shell as PID 1
                return dataclasses.replace(inner, init=init or inner.init)
            return dataclasses.replace(inner, init=init, shell=shell, app_execs=False)
    return Command(init, shell, script, server, _app_execs(shell, script), script_file, shebang)


# A script's line that runs what the script was given: `exec "$@"` (the docker-entrypoint idiom).
RUNS_ARGUMENTS = re.compile(r'^[ \t]*(?P<exec>exec[ \t]+)?"\$(?:@|\{@\})"[ \t]*(?:#.*)?$', re.M)


def _shell_options(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """
    A shell's options and what follows them (the `-c` string or the script file, then its
    arguments): `-o NAME` takes a value (`bash -euo pipefail -c ...`), `--` ends the options.
    """
    flags: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            index += 1
            break
        if not word.startswith(("-", "+")) or word in ("-", "+"):
            break
        flags.append(word)
        if re.fullmatch(r"[-+][A-Za-z]*[oO]", word) and index + 1 < len(words):
            index += 1  # `-o`, or a cluster ending in it (`-euo`): its value names an option, not the script
        index += 1
    return flags, list(words[index:])


def locate_script(path: str) -> Path | None:
    """
    Where the script file an image runs is here: `path` itself, or, for an absolute path in the
    image (`/app/entrypoint.sh`, its WORKDIR's copy of the checkout), the same file below the
    directory drainspec runs in, its leading directories dropped one by one (`app/entrypoint.sh`,
    then `entrypoint.sh`).
    """
    file = Path(path)
    parts = file.parts[1:] if file.is_absolute() else ()
    for candidate in (file, *(Path(*parts[start:]) for start in range(len(parts)))):
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a word no file could be named (too long): a manifest's, not drainspec's, to say
            continue
    return None


def read_script(path: str) -> str | None:
    """
    The text of a shell script file at `path` (`locate_script`), or None when there is no such
    readable text file of a sensible size.
    """
    file = locate_script(path)
    try:
        if file is None or file.stat().st_size > MAX_SCRIPT_BYTES:
            return None
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if "\0" not in text else None


def _shell_line(text: str) -> tuple[str, ...]:
    """A script's `#!` line when it names a shell (`#!/bin/sh -e`, `#!/usr/bin/env bash`), as words."""
    first = text.split("\n", 1)[0]
    if not first.startswith("#!"):
        return ()
    words = tuple(first[2:].split())
    if len(words) >= 2 and Path(words[0]).name == "env":
        words = words[1:]
    return words if words and Path(words[0]).name in SHELLS else ()


def shlex_words(script: str) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:
        return script.split()


def _server_in(words: Sequence[str]) -> str | None:
    for n, word in enumerate(words):
        name = Path(word).name
        if name in SERVER_NAMES:
            return name
        if word == "-m" and n + 1 < len(words) and words[n + 1] in SERVER_NAMES:
            return words[n + 1]
    return None


def _app_execs(shell: str | None, script: str | None) -> bool:
    if shell is None:
        return True
    if script is None:
        return False  # a shell running a script file it could not read: only the file knows
    if "\n" in script.strip():  # a script of many lines: the app replaces the shell if a line execs
        return any(line.lstrip().startswith("exec ") for line in script.splitlines())
    words = shlex_words(script)
    commands: list[list[str]] = [[]]
    for word in words:
        if word in (";", "&&", "||", "|", "&", "\n"):
            commands.append([])
        else:
            commands[-1].append(word)
    commands = [c for c in commands if c]
    if not commands:
        return False
    if commands[-1][0] == "exec":
        return True
    # bash (not dash) execs a lone simple command itself.
    return shell == "bash" and len(commands) == 1 and len(words) == len(commands[0])


def localize(
    argv: Sequence[str], *, port: int, container_ports: Sequence[int] = (), env: Mapping[str, str] | None = None
) -> tuple[list[str], str | None]:
    """
    The container's argv made to run here: bound to 127.0.0.1:`port`, the app wrapped in the
    probe. Returns the new argv and the app's import string (None when no known server
    runs an app: then only the port is mapped, and there is nothing to probe). A script's server
    may take its app from a variable (`uvicorn "$APP_MODULE"`): its value in `env`, the
    environment the pod gets, is the app.
    """
    command = analyse(argv)
    words = list(argv)
    if command.script is not None and command.script_file is not None:
        # The file's text, localized, run as `sh -c TEXT FILE ARGS...`: its `$0` and arguments stay
        # its own. A shell given `-c` may exec the text's last command itself (bash does), which it
        # never does for a file: an `exit` of its status after it keeps that command a child.
        script, app = _localize_script(command.script, port, container_ports, env or {})
        index = words.index(command.script_file)
        interpreter = list(command.shebang) if command.shebang else []
        return [*words[:index], *interpreter, "-c", f"{script}\n{AS_A_FILE}", *words[index:]], app
    if command.script is not None:
        index = words.index(command.script)
        script, app = _localize_script(command.script, port, container_ports, env or {})
        words[index] = script
        return words, app
    return _localize_words(words, port, container_ports)


AS_A_FILE = "exit $?"  # the last line of a script file run with -c: its last command is not the text's


# What a replay leaves out of the server's own words: its address, and its TLS (a certificate
# mounted from a Secret is not here, and drainspec's requests are plain HTTP on 127.0.0.1).
BIND_OPTIONS = ("--host", "--port", "--bind", "-b")


def journaled_argv(localized: Sequence[str], original: Sequence[str]) -> list[str]:
    """
    The localized argv as the journal keeps it: a script file's text, which the manifest does not
    show and which may set secrets of its own, is named, not copied.
    """
    script_file = analyse(original).script_file
    if script_file is None:
        return list(localized)
    return [
        f"<{script_file}, run with the app on the probe>" if word not in original and "\n" in word else word
        for word in localized
    ]


def _localize_words(words: list[str], port: int, container_ports: Sequence[int]) -> tuple[list[str], str | None]:
    start = next((n for n, w in enumerate(words) if Path(w).name in SERVER_NAMES or w in SERVER_NAMES), None)
    if start is None and (found := _own_script_at(words)) is not None:
        n, script = found  # the app's own script, behind an init or not: its server is bound by `chaos.probe.script`
        return [*words[:n], *script.argv], script.name
    if start is None:
        mapped = [_map_port_word(word, port, container_ports) for word in words]
        if mapped == words:
            raise ManifestError(
                f"the command runs no {names_text()}, and none of its words is "
                f"a containerPort ({', '.join(map(str, container_ports)) or 'none declared'}); "
                "declare the port the command listens on under ports: containerPort"
            )
        return mapped, None
    server = Path(words[start]).name
    head, tail = words[: start + 1], words[start + 1 :]
    app = None
    out: list[str] = []
    skip = False
    for n, word in enumerate(tail):
        if skip:
            skip = False
            continue
        option, eq, value = word.partition("=")
        if option in (*BIND_OPTIONS, "--uds", "--fd", *TLS_OPTIONS):
            skip = not eq and n + 1 < len(tail)
            continue
        if app is None and IMPORT_STRING.match(word) and not (n and tail[n - 1] in ("-k", "--worker-class")):
            app = word
            out.append(PROBE_APP)
            continue
        if word == FACTORY_FLAG:
            continue
        out.append(word)
    if app is None:
        raise ManifestError(f"cannot find the app's import string (like app.main:app) in the {server} command")
    return [*head, *out, *SERVERS[server].bind_words(port)], app


VARIABLE = re.compile(r"\$(?:\{([A-Za-z_]\w*)\}|([A-Za-z_]\w*))")


def pod_env(container: ContainerSpec) -> dict[str, str]:
    """The environment the replayed container starts with: drainspec's own, under the container's."""
    return {**os.environ, **container.env}


def app_variable(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, str | None] | None:
    """
    The variable a script's server takes its app from (`APP_MODULE` of `uvicorn "${APP_MODULE}"`)
    when no import string is written out, and the app it holds in `env` (None when what it holds
    is not an import string); None when the app is written out, or no script runs a server.
    """
    command = analyse(argv)
    if command.script is None or command.server is None:
        return None
    words = shlex_words(command.script)
    if any(IMPORT_STRING.match(word) for word in words):
        return None
    return _app_in_variables(words, env)


def _app_in_variables(words: Sequence[str], env: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The first of the server's variables that holds an import string in `env`, else the first of them."""
    names = _app_variables(words)
    for name in names:
        if IMPORT_STRING.match(env.get(name, "")):
            return name, env[name]
    return (names[0], None) if names else None


def _app_variables(words: Sequence[str]) -> list[str]:
    """The variables a server's command line is given as words of their own (`"$APP_MODULE"`)."""
    names = []
    in_server = False
    for word in words:
        if Path(word).name in SERVER_NAMES:
            in_server = True
        elif word in SHELL_OPERATORS:
            in_server = False
        elif in_server and (match := VARIABLE.fullmatch(word)):
            names.append(match.group(1) or match.group(2))
    return names


SHELL_OPERATORS = frozenset({";", "&&", "||", "|", "&", "(", ")"})


def _localize_script(
    script: str, port: int, container_ports: Sequence[int], env: Mapping[str, str]
) -> tuple[str, str | None]:
    words = shlex_words(script)
    app = next((w for w in words if IMPORT_STRING.match(w)), None)
    reference = None
    if app is None and (found := _app_in_variables(words, env)) is not None and found[1] is not None:
        reference, app = found  # `uvicorn "${APP_MODULE}"`: the app is what the variable holds in the pod
    server = _server_in(words)
    if server is None and (own := _own_script_in(script, words)) is not None:
        return own
    if server is None or app is None:
        text = script
        for container_port in container_ports:
            text = re.sub(rf"(?<![\w.]){container_port}(?!\w)", str(port), text)
        text = text.replace("0.0.0.0", HOST)
        if text == script:
            raise ManifestError(
                "the shell script runs no known server and names no containerPort; "
                "declare the port it listens on under ports: containerPort"
            )
        return text, None
    replaced = "|".join(re.escape(option) for option in (*BIND_OPTIONS, *TLS_OPTIONS))
    text = re.sub(rf"(?<!\S)({replaced})(=|\s+)\S+", "", script)
    text = re.sub(rf"(?<!\S){FACTORY_FLAG}(?!\S)", "", text)
    bind = " ".join(SERVERS[server].bind_words(port))
    # Every command that names the app (an entrypoint's branches: debug, production) runs it on the probe.
    named = re.escape(app) if reference is None else rf"(\"?)\$(\{{{reference}\}}|{reference}(?!\w))\1"
    text = re.sub(rf"(?<!\S){named}(?!\S)", f"{PROBE_APP} {bind}", text)
    return text, app


def own_script_in(argv: Sequence[str]) -> str | None:
    """
    The app's own script the container runs (`main.py`, `app.main`), behind an init or inside a
    shell script; None when a known server runs, or nothing of the app's.
    """
    command = analyse(argv)
    if command.server is not None:
        return None
    if command.script is not None:
        own = _own_script_in(command.script, shlex_words(command.script))
        return own[1] if own is not None else None
    found = _own_script_at(list(argv))
    return found[1].name if found is not None else None


def _own_script_at(words: Sequence[str]) -> tuple[int, Script] | None:
    """Where in `words` the app's own script starts (`chaos.servers.own_script`), and its launcher."""
    for n in range(len(words)):
        if (script := own_script(words[n:])) is not None:
            return n, script
    return None


def _own_script_in(script: str, words: Sequence[str]) -> tuple[str, str] | None:
    """
    The shell script with the app's own script (`alembic upgrade head && exec python main.py`)
    run through `chaos.probe.script`, as `_localize_words` runs it outside a shell, and its name.
    The last one is the server: what comes before it prepares (`python manage.py migrate`).
    """
    for n in reversed(range(len(words))):
        if (own := own_script(words[n:])) is None:
            continue
        if Path(words[n]).name == FASTAPI_CLI:  # the CLI's own executable: its module, on the launcher
            if n and words[n - 1] == "-m":
                continue  # `python -m fastapi run`: the interpreter's own, found further on
            # Every command that runs it (an entrypoint's branches: dev, production) runs on the probe.
            pattern = rf"(?<!\S)(?<!-m\s){re.escape(words[n])}(?=\s+(?:{'|'.join(FASTAPI_COMMANDS)})(?!\S))"
            launched = f"{shlex.quote(sys.executable)} -m {SCRIPT_LAUNCHER} -m {FASTAPI_CLI}"
            text, found = re.subn(pattern, launched.replace("\\", r"\\"), script)
            if found:
                return text, own.name
            continue
        launcher = own.argv.index(SCRIPT_LAUNCHER)
        first = own.argv[launcher + 1]  # the script, or `-m` before the module
        target = rf"-m\s+{re.escape(own.argv[launcher + 2])}" if first == "-m" else re.escape(first)
        interpreter = re.escape(words[n])
        pattern = rf"(?<!\S)({interpreter}(?:\s+\S+)*?\s+)({target})(?!\S)"
        text, found = re.subn(pattern, rf"\1-m {SCRIPT_LAUNCHER} \2", script, count=1)
        if found:
            return text, own.name
    return None


def _map_port_word(word: str, port: int, container_ports: Sequence[int]) -> str:
    for container_port in container_ports:
        if word == str(container_port):
            return str(port)
        if word.endswith(f":{container_port}"):
            option, eq, _ = word.partition("=")
            return f"{option}={HOST}:{port}" if eq and option.startswith("-") else f"{HOST}:{port}"
    return HOST if word in ("0.0.0.0", "::") else word


# -- what the manifest says about termination ---------------------------------------------------


def prestop_seconds(hook: Hook | None) -> float | None:
    """How long the hook delays the stop signal, when that can be read: sleep, or `sleep N`."""
    if isinstance(hook, SleepHook):
        return hook.seconds
    if isinstance(hook, ExecHook):
        words = list(hook.command)
        if words and Path(words[0]).name in SHELLS and len(words) >= 3:
            words = shlex_words(words[-1])
        if len(words) == 2 and Path(words[0]).name == "sleep":
            try:
                return float(words[1].rstrip("s"))
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class DrainBound:
    """A command's server and its own bound on the drain, and where the bound was read."""

    server: str
    seconds: float | None  # None: unbounded, or a default that cannot be relied on
    source: str  # "--graceful-timeout", "GUNICORN_CMD_ARGS", "gunicorn.conf.py", "the default"
    # Why the bound could not be read where it is set (a config file not here, a computed value):
    # no finding may rest on `seconds` then.
    unread: str | None = None


def server_timeout(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> DrainBound | None:
    """
    The server's own bound on its drain, read where the server reads it, the stronger first: the
    command line, words in an environment variable (`GUNICORN_CMD_ARGS`), the flag's own
    variable (`UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN`), the config file (`-c`, else `gunicorn.conf.py`
    in `cwd`, where the replay runs the command), then the server's default
    (`chaos.servers.ServerSpec.drain_bound`). None when no known server runs.
    """
    command = analyse(argv)
    if command.server is None:
        return None
    server, spec, env = command.server, SERVERS[command.server], env or {}
    words = command_words(argv, command)
    env_words = shlex_words(env.get(spec.args_env) or "") if spec.args_env else []
    for source, found in (
        (spec.drain_flag, option_value(words, spec.drain_flag)),
        (spec.args_env, option_value(env_words, spec.drain_flag)),
    ):
        if found is not None:
            return DrainBound(server, number_or_none(found), str(source))
    if spec.drain_env and env.get(spec.drain_env):
        return DrainBound(server, number_or_none(env[spec.drain_env]), spec.drain_env)
    if spec.config is not None:
        named = option_value(words, *spec.config.flags) or option_value(env_words, *spec.config.flags)
        bound = _from_config_file(server, spec.config, named, cwd or Path.cwd())
        if bound is not None:
            return bound
    return DrainBound(server, spec.drain_bound, "the default")


def command_words(argv: Sequence[str], command: Command) -> list[str]:
    """The words the server's options are among: the shell script's, or the argv's."""
    return shlex_words(command.script) if command.script is not None else list(argv)


def option_value(words: Sequence[str], *names: str) -> str | None:
    """
    The value of the last of `names` in `words` (`--name=value` or `--name value`), None if
    absent: the last, as the servers' own parsers read a repeated option.
    """
    value = None
    for n, word in enumerate(words):
        option, eq, attached = word.partition("=")
        if option in names:
            value = attached if eq else (words[n + 1] if n + 1 < len(words) else "")
    return value


def number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _from_config_file(server: str, config: ConfigFile, named: str | None, cwd: Path) -> DrainBound | None:
    """The bound a Python config file sets; None when no file is read or it leaves the bound alone."""
    if named is None:
        path = cwd / config.default
        if not path.is_file():
            return None  # the server reads none either
        named = config.default
    elif named.startswith("python:"):
        return DrainBound(server, None, named, unread="a module, which drainspec does not import")
    else:
        path = cwd / named
        if not path.is_file():
            return DrainBound(server, None, named, unread="not a file here")
    value, problem = _literal_setting(path, config.drain_setting)
    if problem is not None:
        return DrainBound(server, None, named, unread=problem)
    return None if value is None else DrainBound(server, value, named)


def _literal_setting(path: Path, setting: str) -> tuple[float | None, str | None]:
    """
    `setting`'s number in a Python config file, read, never run (a config file may do anything):
    (value, None), (None, None) when the file does not set it, (None, why) when it is not a number
    written out.
    """
    import ast

    try:
        tree = ast.parse(path.read_bytes()[:MAX_MANIFEST_BYTES], filename=str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable: {exc}"
    value: float | None = None
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if not any(isinstance(t, ast.Name) and t.id == setting for t in targets):
            continue
        assigned = getattr(node, "value", None)
        if not isinstance(assigned, ast.Constant) or isinstance(assigned.value, bool):
            return None, f"its {setting} is computed when the server starts"
        if not isinstance(assigned.value, int | float):
            return None, f"its {setting} is not a number"
        value = float(assigned.value)
    return value, None


def resolve_fenceposts(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """
    maxSurge and maxUnavailable as pod counts, the Deployment controller's way
    (`ResolveFenceposts` in Kubernetes' deployment util): a percentage of `replicas` rounds UP
    for the surge and DOWN for the unavailable, so that 25% of 1 replica allows one extra pod and
    none missing. When both come to 0 (only by rounding: the API refuses two literal zeros),
    unavailable becomes 1, or the rollout could never progress.
    """
    surge = _scaled(max_surge, replicas, round_up=True, name="maxSurge")
    unavailable = _scaled(max_unavailable, replicas, round_up=False, name="maxUnavailable")
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _scaled(value: int | str, replicas: int, *, round_up: bool, name: str) -> int:
    """Kubernetes' `GetScaledValueFromIntOrPercent`: a count as is, a percentage of `replicas`."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+%", value):
        share = int(value[:-1]) * replicas  # integer arithmetic: 29% of 100 is exactly 29
        return -(-share // 100) if round_up else share // 100
    # Kubernetes refuses a string that is not a percentage ("5" is not 5).
    raise ManifestError(f"{name} must be a non-negative integer or a percentage like 25%, not {value!r}")


# -- the budget ----------------------------------------------------------------------------------


def recommend_budget(
    propagation: float,
    drain: float,
    margin: float = MARGIN,
    *,
    current_prestop: float | None = None,
    current_grace: float | None = None,
) -> Budget:
    """
    The research's budget: S >= P (+1 s jitter), server timeout >= D (+1 s), T >= ceil(S) + timeout + M.
    """
    prestop = math.ceil(propagation) + JITTER
    timeout = math.ceil(drain) + 1
    grace = prestop + timeout + math.ceil(margin)
    lines = [
        f"preStop sleep          S = ceil(P {propagation:.2f}s) + 1 s jitter             = {prestop} s",
        f"server shutdown timeout  = ceil(D {drain:.2f}s measured drain) + 1 s      = {timeout} s",
        f"terminationGracePeriod T = S {prestop} + timeout {timeout} + margin {math.ceil(margin)}         = {grace} s",
    ]
    if current_prestop is not None or current_grace is not None:
        have_s = "none" if current_prestop is None else f"{current_prestop:g} s"
        have_t = "?" if current_grace is None else f"{current_grace:g} s"
        ok = (current_prestop or 0) >= prestop and (current_grace or 0) >= grace
        verdict = "fits" if ok else "does not fit"
        lines.append(f"the manifest has preStop {have_s}, grace {have_t}: it {verdict}")
    return Budget(prestop=prestop, grace=grace, server_timeout=timeout, lines=tuple(lines))


if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """
        `Finding` and `static_findings`, re-exported from `chaos.k8s.findings` on first use: that
        module reads this one, so importing it here at the top would be an import cycle.
        """
        if name in ("Finding", "static_findings"):
            from chaos.k8s import findings

            return getattr(findings, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
