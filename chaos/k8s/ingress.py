"""
A real ingress proxy between the load and the pods: nginx standing for ingress-nginx, or HAProxy
standing for HAProxy Ingress, started on 127.0.0.1 with a config generated into the run
directory and reaped with the run like every other process.

It plays the same part as `chaos.k8s.router.Router` (`add`, `terminate`, `removed`, `close`),
with the proxy's own behaviour: its upstream keep-alive pool, its retries
(`proxy_next_upstream`), its 502s. Endpoint propagation is what a controller does: after the
propagation delay the upstream set is rewritten without the pod and the proxy reloaded
(`router.removed` is journaled once the reloaded workers took over). ingress-nginx itself changes
endpoints through its Lua balancer without a reload, so its pooled connections to a removed pod
outlive the change; a reload closes the old workers' idle pooled connections, which can only
make the keep-alive race rarer here than in a cluster.

The access log (one JSON line per request: its `x-drainspec-id`, status, every upstream attempt
with its address, status and connect time) and the error log (the text of each failed attempt,
joined to its request by the proxy's connection number) are read into the journal as
`proxy.request` events when the run ends, so the timeline shows which pod and which connection
and which error each 502 came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from chaos.errors import SetupError, UsageError
from chaos.journal import Event, Kind
from chaos.k8s.link import Link
from chaos.k8s.pod import handles_signal
from chaos.k8s.router import Endpoint, Routing
from chaos.target import HOST, free_port

if TYPE_CHECKING:
    from chaos.lifecycle import Run

INGRESSES = ("builtin", "nginx", "haproxy")
PROGRAMS = {"nginx": "nginx", "haproxy": "haproxy"}
PACKAGES = {"nginx": "nginx", "haproxy": "haproxy"}  # Debian packages
STANDS_FOR = {"nginx": "ingress-nginx", "haproxy": "HAProxy Ingress"}

# ingress-nginx's ConfigMap defaults (the keys are its ConfigMap keys).
NGINX_DEFAULTS: dict[str, str] = {
    "upstream-keepalive-connections": "320",
    "upstream-keepalive-timeout": "60",
    "upstream-keepalive-requests": "10000",
    "proxy-next-upstream": "error timeout",
    "proxy-next-upstream-tries": "3",
    "proxy-connect-timeout": "5",
    "proxy-read-timeout": "60",
    "proxy-send-timeout": "60",
    "proxy-buffering": "off",
    "keep-alive": "75",
    "keep-alive-requests": "1000",
}
# HAProxy Ingress's global defaults (its ConfigMap keys).
HAPROXY_DEFAULTS: dict[str, str] = {
    "timeout-connect": "5s",
    "timeout-client": "50s",
    "timeout-server": "50s",
    "timeout-keep-alive": "1m",
    "timeout-http-request": "5s",
    "timeout-queue": "5s",
    "http-reuse": "safe",
    "retries": "3",
}
DEFAULTS = {"nginx": NGINX_DEFAULTS, "haproxy": HAPROXY_DEFAULTS}

START_SECONDS = 10.0  # how long the proxy may take to listen
RELOAD_SECONDS = 3.0  # how long a reload may take to hand over to new workers
RESEND_SECONDS = 0.3  # a reload with no new worker after this is signalled again
POLL_SECONDS = 0.01


def parse_options(kind: str, items: Sequence[str]) -> dict[str, str]:
    """The ingress's defaults with `key=value` overrides; an unknown key is a usage error."""
    if kind == "builtin":
        if items:
            raise UsageError("--ingress-option needs --ingress nginx or haproxy")
        return {}
    options = dict(DEFAULTS[kind])
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in options:
            raise UsageError(
                f"--ingress-option {item!r}: use KEY=VALUE with a key of {STANDS_FOR[kind]}: {', '.join(options)}"
            )
        if not re.fullmatch(r"[A-Za-z0-9 ._-]+", value.strip()):
            raise UsageError(f"--ingress-option {item!r}: the value may hold letters, digits, spaces and . _ -")
        options[key] = value.strip()
    return options


def upstream_idle_timeout(kind: str, options: Mapping[str, str]) -> float | None:
    """How long the proxy keeps an idle pooled connection to a pod, in seconds."""
    text = options.get("upstream-keepalive-timeout") if kind == "nginx" else options.get("timeout-server")
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", text.strip())
    if match is None:
        return None
    value = float(match.group(1))
    return {"ms": value / 1000, "m": value * 60}.get(match.group(2) or "s", value)


def _seconds(value: str) -> str:
    """An ingress-nginx number of seconds (or an nginx time like `60s`) as an nginx time."""
    return f"{value}s" if value.isdigit() else value


def nginx_config(directory: Path, port: int, upstreams: Sequence[int], options: Mapping[str, str]) -> str:
    """An nginx config that behaves as ingress-nginx does toward the pods."""
    servers = "".join(f"    server {HOST}:{p} max_fails=0;\n" for p in upstreams)
    if upstreams:
        location = (
            "      proxy_pass http://pods;\n"
            "      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n'
            "      proxy_set_header Host $host;\n"
            f"      proxy_next_upstream {options['proxy-next-upstream']};\n"
            f"      proxy_next_upstream_tries {options['proxy-next-upstream-tries']};\n"
            f"      proxy_connect_timeout {_seconds(options['proxy-connect-timeout'])};\n"
            f"      proxy_read_timeout {_seconds(options['proxy-read-timeout'])};\n"
            f"      proxy_send_timeout {_seconds(options['proxy-send-timeout'])};\n"
            f"      proxy_buffering {options['proxy-buffering']};\n"
        )
        upstream = (
            "  upstream pods {\n"
            f"{servers}"
            f"    keepalive {options['upstream-keepalive-connections']};\n"
            f"    keepalive_timeout {_seconds(options['upstream-keepalive-timeout'])};\n"
            f"    keepalive_requests {options['upstream-keepalive-requests']};\n"
            "  }\n"
        )
    else:  # no endpoint left: ingress-nginx answers 503 from its default backend
        location, upstream = "      return 503;\n", ""
    fields = {
        "msec": "$msec",
        "id": "$http_x_drainspec_id",
        "request": "$request",
        "status": "$status",
        "upstream_status": "$upstream_status",
        "upstream_addr": "$upstream_addr",
        "upstream_connect_time": "$upstream_connect_time",
        "connection": "$connection",
        "connection_requests": "$connection_requests",
    }
    log_format = json.dumps(fields).replace("'", "")
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = directory / "tmp"
    return (
        "# Generated by drainspec for one run: nginx standing for ingress-nginx.\n"
        f"# {', '.join(f'{k}={v}' for k, v in options.items())}\n"
        f"{user}"
        "daemon off;\n"
        "master_process on;\n"
        "worker_processes 1;\n"
        f"pid {directory / 'nginx.pid'};\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 4096; }\n"
        "http {\n"
        f"  log_format drainspec escape=json '{log_format}';\n"
        f"  access_log {directory / 'access.log'} drainspec;\n"
        f"  client_body_temp_path {temp / 'body'};\n"
        f"  proxy_temp_path {temp / 'proxy'};\n"
        f"  fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"  uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"  scgi_temp_path {temp / 'scgi'};\n"
        f"  keepalive_timeout {_seconds(options['keep-alive'])};\n"
        f"  keepalive_requests {options['keep-alive-requests']};\n"
        f"{upstream}"
        "  server {\n"
        f"    listen {HOST}:{port};\n"
        "    location / {\n"
        f"{location}"
        "    }\n"
        "  }\n"
        "}\n"
    )


def haproxy_config(directory: Path, port: int, upstreams: Sequence[int], options: Mapping[str, str]) -> str:
    """An HAProxy config with HAProxy Ingress's defaults toward the pods."""
    servers = "".join(f"  server pod{p} {HOST}:{p}\n" for p in upstreams)
    return (
        "# Generated by drainspec for one run: HAProxy standing for HAProxy Ingress.\n"
        f"# {', '.join(f'{k}={v}' for k, v in options.items())}\n"
        "global\n"
        "  maxconn 4096\n"
        "  log stdout format raw local0 info\n"
        "defaults\n"
        "  mode http\n"
        "  log global\n"
        "  option redispatch\n"
        f"  retries {options['retries']}\n"
        f"  http-reuse {options['http-reuse']}\n"
        f"  timeout connect {options['timeout-connect']}\n"
        f"  timeout client {options['timeout-client']}\n"
        f"  timeout server {options['timeout-server']}\n"
        f"  timeout http-keep-alive {options['timeout-keep-alive']}\n"
        f"  timeout http-request {options['timeout-http-request']}\n"
        f"  timeout queue {options['timeout-queue']}\n"
        "frontend web\n"
        f"  bind {HOST}:{port}\n"
        "  http-request capture req.hdr(x-drainspec-id) len 200\n"
        f"  log-format {HAPROXY_LOG_FORMAT}\n"
        "  default_backend pods\n"
        "backend pods\n"
        f"{servers}"
    )


# One JSON line per request on HAProxy's stdout: its id, status, the server it ended on, the
# connect time, how many times it retried and how the session ended (`%tsc`: `SC` the server
# refused the connection, `SH` it aborted before the response headers).
_HAPROXY_FIELDS = {
    "msec": "%Ts.%ms",
    "id": "%[capture.req.hdr(0)]",
    "request": "%r",
    "status": "%ST",
    "upstream_addr": "%si:%sp",
    "server": "%s",
    "upstream_connect_time": "%Tc",
    "retries": "%rc",
    "termination": "%tsc",
    "connection": "%ci:%cp",
}
HAPROXY_LOG_FORMAT = '"{' + ",".join(f'\\"{k}\\":\\"{v}\\"' for k, v in _HAPROXY_FIELDS.items()) + '}"'
HAPROXY_TERMINATION = {
    "SC": "the server refused or aborted the connection (connect() failed)",
    "SH": "the server aborted before sending the response headers (upstream prematurely closed connection)",
    "SD": "the server aborted while sending the response",
    "sC": "timed out connecting to the server",
    "sH": "timed out waiting for the response headers",
}


@dataclass
class Ingress(Routing):
    """One proxy process, its config and logs in `directory`; its endpoints, by pod name."""

    kind: str
    run: Run
    directory: Path
    options: dict[str, str]
    propagation: float
    link_delay: float = 0.0  # the emulated network between the proxy and each pod (`chaos.k8s.link`)
    port: int = 0
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _removals: set[asyncio.Task[None]] = field(default_factory=set)
    _reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wall_offset_ns: int = 0  # wall clock minus monotonic clock, to put the logs on the journal's axis

    def __post_init__(self) -> None:
        self.journal = self.run.journal

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.kind}.conf"

    def _upstream_port(self, endpoint: Endpoint) -> int:
        """Where the proxy sends a pod's traffic: the pod itself, or its end of the emulated network."""
        link = self.links.get(endpoint.name)
        return link.port if link is not None else endpoint.port

    def _write_config(self) -> None:
        upstreams = [self._upstream_port(e) for e in self.endpoints.values() if e.routed]
        make = nginx_config if self.kind == "nginx" else haproxy_config
        self.config_path.write_text(make(self.directory, self.port, upstreams, self.options))

    async def start(self) -> int:
        program = PROGRAMS[self.kind]
        path = shutil.which(program) or next(
            (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if os.access(p, os.X_OK)), None
        )
        if path is None:
            raise SetupError(
                f"--ingress {self.kind} needs {program}: install it (apt-get install {PACKAGES[self.kind]})"
            )
        self.directory.mkdir(mode=0o700, exist_ok=True)
        (self.directory / "tmp").mkdir(mode=0o700, exist_ok=True)
        self.port = free_port()
        self._write_config()
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        if self.kind == "nginx":
            argv = [
                path,
                "-p",
                str(self.directory),
                "-e",
                str(self.directory / "error.log"),
                "-c",
                str(self.config_path),
            ]
        else:
            argv = [path, "-W", "-db", "-f", str(self.config_path)]
        self.process = self.run.spawn(argv, log=self.directory / "proxy.out")
        await self._wait_listening()
        self.journal.write(
            Kind.PROXY_RELOADED, proxy=self.kind, port=self.port, config=str(self.config_path), options=self.options
        )
        return self.port

    async def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SetupError(f"{self.kind} exited at start; see {self.directory / 'proxy.out'}")
            if self._loaded():
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection(HOST, self.port)
                    writer.close()
                    return
            await asyncio.sleep(POLL_SECONDS)
        raise SetupError(f"{self.kind} did not listen on {HOST}:{self.port} within {START_SECONDS:g}s")

    @property
    def _reload_signal(self) -> signal.Signals:
        return signal.SIGHUP if self.kind == "nginx" else signal.SIGUSR2

    def _loaded(self) -> bool:
        """The master takes a reload signal only once it has a handler for it (read from /proc)."""
        return self.process is not None and bool(handles_signal(self.process.pid, self._reload_signal))

    def _workers(self) -> set[int]:
        if self.process is None:
            return set()
        with contextlib.suppress(psutil.Error):
            return {c.pid for c in psutil.Process(self.process.pid).children()}
        return set()

    async def reload(self, why: str) -> None:
        """Rewrite the upstream set and reload, as a controller does; return once new workers serve."""
        async with self._reload_lock:
            before = self._workers()
            self._write_config()
            if self.process is None or self.process.poll() is not None:
                raise SetupError(f"{self.kind} is no longer running; see {self.directory / 'proxy.out'}")
            os.kill(self.process.pid, self._reload_signal)
            now = time.monotonic()
            deadline, resend = now + RELOAD_SECONDS, now + RESEND_SECONDS
            while time.monotonic() < deadline and not (self._workers() - before and self._retired(before)):
                if time.monotonic() > resend and not self._workers() - before:
                    # HAProxy's master drops a reload signal that comes while it is still settling
                    # after its start: no new worker yet, so ask again (a reload is idempotent).
                    os.kill(self.process.pid, self._reload_signal)
                    resend = time.monotonic() + RESEND_SECONDS
                await asyncio.sleep(POLL_SECONDS)
            upstreams = [e.name for e in self.endpoints.values() if e.routed]
            self.journal.write(Kind.PROXY_RELOADED, proxy=self.kind, why=why, upstreams=upstreams)

    def _retired(self, workers: set[int]) -> bool:
        """Whether every one of these old workers stopped accepting (nginx logs it; haproxy: assumed)."""
        if self.kind != "nginx" or not workers:
            return True
        with contextlib.suppress(OSError):
            text = (self.directory / "error.log").read_text(errors="replace")
            return all(
                f"{pid}#{pid}: gracefully shutting down" in text or not psutil.pid_exists(pid) for pid in workers
            )
        return False

    # -- the Router's part ------------------------------------------------------------------------

    def add(self, name: str, port: int) -> None:
        if self.process is None:
            raise RuntimeError("start the proxy before adding endpoints")
        self.endpoints[name] = Endpoint(name, port)
        task = asyncio.get_running_loop().create_task(self._added(name, port), name=f"add:{name}")
        self._removals.add(task)

    async def _added(self, name: str, port: int) -> None:
        if self.link_delay > 0:
            link = Link(name, port, self.link_delay, self.journal)
            await link.start()
            self.links[name] = link
        await self.reload(f"endpoint {name} added")

    async def _unrouted(self, endpoint: Endpoint) -> None:
        await self.reload(f"endpoint {endpoint.name} removed")

    async def reloaded(self, timeout: float = RELOAD_SECONDS) -> None:
        """Wait until every endpoint change so far is in the proxy's config (bounded)."""
        pending = [task for task in self._removals if not task.done() and task.get_name().startswith("add:")]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def close(self) -> None:
        """Stop reloading and read the proxy's logs into the journal (the run reaps the process)."""
        for task in self._removals:
            task.cancel()
        await asyncio.gather(*self._removals, return_exceptions=True)
        for link in self.links.values():
            await link.close()
        read = read_nginx_logs if self.kind == "nginx" else read_haproxy_log
        for event in read(self.directory, self._names(), self._wall_offset_ns, pid=self._pid()):
            self.journal.write_event(event)

    def _pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def _names(self) -> dict[str, str]:
        names = {f"{HOST}:{e.port}": e.name for e in self.endpoints.values()}
        names.update({f"{HOST}:{link.port}": name for name, link in self.links.items()})
        return names

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        network = f"; {self.link_delay * 1000:g} ms emulated network to each pod" if self.link_delay else ""
        return f"{self.kind} ({STANDS_FOR[self.kind]} defaults: {options}){network}"


async def open_ingress(
    run: Run, kind: str, options: dict[str, str], propagation: float, *, link_delay: float = 0.0
) -> Ingress:
    ingress = Ingress(kind, run, run.run_dir / "ingress", options, propagation, link_delay)
    await ingress.start()
    return ingress


# -- the logs -----------------------------------------------------------------------------------

ERROR_LINE = re.compile(r"^\S+ \S+ \[(?P<level>\w+)\] \d+#\d+: \*(?P<conn>\d+) (?P<text>.*)$")


def read_nginx_logs(directory: Path, names: Mapping[str, str], wall_offset_ns: int, *, pid: int) -> list[Event]:
    """
    One `proxy.request` per access-log line, with each upstream attempt (address, pod, status,
    connect time) and the error log's text for its failed attempts, joined by the proxy's
    connection number in the order the proxy wrote them. nginx does not log whether an attempt
    reused a pooled connection (on loopback a new connect also takes under its 1 ms resolution):
    the error's text tells, `connect() failed` on a new connection, a read that found the
    connection closed or reset on one the pod had already accepted.
    """
    errors: dict[int, list[str]] = {}
    with contextlib.suppress(OSError):
        for line in (directory / "error.log").read_text(errors="replace").splitlines():
            match = ERROR_LINE.match(line)
            if match and match.group("level") in ("error", "warn") and "upstream" in match.group("text"):
                errors.setdefault(int(match.group("conn")), []).append(_short_error(match.group("text")))
    events = []
    with contextlib.suppress(OSError):
        for line in (directory / "access.log").read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            events.append(_request_event(entry, names, wall_offset_ns, errors, pid))
    return events


def _short_error(text: str) -> str:
    """The error's own words and its upstream, without the client and request details."""
    words = text.split(", client:", 1)[0]
    upstream = re.search(r'upstream: "([^"]*)"', text)
    return f"{words} (upstream {upstream.group(1)})" if upstream else words


def _split(value: object) -> list[str]:
    """nginx's `a, b : c` upstream lists (`:` separates upstream groups) as one flat list."""
    return [part.strip() for part in re.split(r"[,:](?!\d)", str(value or "")) if part.strip() and part.strip() != "-"]


def _request_event(
    entry: Mapping[str, object], names: Mapping[str, str], wall_offset_ns: int, errors: dict[int, list[str]], pid: int
) -> Event:
    statuses = _split(entry.get("upstream_status"))
    addresses = _split(entry.get("upstream_addr"))
    connects = _split(entry.get("upstream_connect_time"))
    connection = int(str(entry.get("connection") or 0) or 0)
    attempts = []
    for n, address in enumerate(addresses):
        status = statuses[n] if n < len(statuses) else ""
        connect = connects[n] if n < len(connects) else ""
        attempt: dict[str, object] = {"addr": address, "pod": names.get(address), "status": status, "connect": connect}
        if status in ("502", "504") or not status:
            queue = errors.get(connection, [])
            if queue:
                attempt["error"] = queue.pop(0)
        attempts.append(attempt)
    seconds = float(str(entry.get("msec") or 0) or 0)
    t = int(seconds * 1e9) - wall_offset_ns if seconds else 0
    status = str(entry.get("status") or "0")
    return Event(
        t=t,
        pid=pid,
        kind=Kind.PROXY_REQUEST,
        fields={
            "id": str(entry.get("id") or "") or None,
            "request": str(entry.get("request") or ""),
            "status": int(status) if status.isdigit() else 0,
            "proxy_connection": connection,
            "attempts": attempts,
        },
    )


def read_haproxy_log(directory: Path, names: Mapping[str, str], wall_offset_ns: int, *, pid: int) -> list[Event]:
    """
    One `proxy.request` per JSON line of HAProxy's output. HAProxy logs only the server a request
    ended on and how many times it retried (`%rc`); earlier attempts are listed without an address.
    """
    events = []
    with contextlib.suppress(OSError):
        for line in (directory / "proxy.out").read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            status = str(entry.get("status") or "0")
            termination = str(entry.get("termination") or "")[:2]
            retries_text = str(entry.get("retries") or "0").lstrip("+")
            retries = int(retries_text) if retries_text.isdigit() else 0
            attempts: list[dict[str, object]] = []
            if entry.get("server") not in (None, "", "<NOSRV>"):
                address = str(entry.get("upstream_addr") or "")
                error = HAPROXY_TERMINATION.get(termination)
                last: dict[str, object] = {
                    "addr": address,
                    "pod": names.get(address),
                    "status": status,
                    "connect": str(entry.get("upstream_connect_time") or ""),
                }
                if error is not None:
                    last["error"] = f"termination {termination}: {error}"
                # The attempts before the last: HAProxy logs only their count (with one pod, the same one).
                attempts = [{**last, "status": "-", "connect": ""} for _ in range(retries)] + [last]
            seconds = float(str(entry.get("msec") or 0) or 0)
            events.append(
                Event(
                    t=int(seconds * 1e9) - wall_offset_ns if seconds else 0,
                    pid=pid,
                    kind=Kind.PROXY_REQUEST,
                    fields={
                        "id": str(entry.get("id") or "").strip("-") or None,
                        "request": str(entry.get("request") or ""),
                        "status": int(status) if status.isdigit() else 0,
                        "proxy_connection": 0,
                        "attempts": attempts,
                    },
                )
            )
    return events
