"""
What to run: the server, the app, the work to put in flight, and how to stop it.

One configuration flows whole through a run, as uvicorn's `Server(config=config)` does:
`Scenario` says what every run mode has (server, traffic, signal, grace), and `K8sOptions` adds
what only a Kubernetes replay has (how slow the routers are, the PID namespace, router chaos).
A `Scenario` is plain data, journaled whole at the start of a run (`run.start`), so the verdicts
and every report can be rebuilt from the journal alone.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from chaos.errors import SetupError
from chaos.redact import redact_env, redact_headers, redact_text
from chaos.servers import SCRIPT_LAUNCHER

BackgroundPolicy = Literal["complete", "allow-cancel"]
SignalAt = Literal["in-flight", "ready", "startup"]
SIGNAL_AT: tuple[SignalAt, ...] = ("in-flight", "ready", "startup")
SIGNAL_MOMENTS: Mapping[str, str] = MappingProxyType(
    {"ready": "once ready, with nothing in flight", "startup": "during the lifespan startup"}
)
"""When the stop signal comes, for each `signal_at` but in-flight, as the words after "the stop signal"."""

HOLD_PATH = "GET /__drainspec/hold?seconds={seconds}"
BACKGROUND_PATH = "GET /__drainspec/background?seconds={seconds}"
CLIENT_SLACK_SECONDS = 5.0  # beyond the grace and the longest work, before a client gives up


SIGNALS = {  # the stop signals a scenario or a manifest may name, by their names without SIG
    "TERM": signal.SIGTERM,
    "INT": signal.SIGINT,
    "QUIT": signal.SIGQUIT,
    "HUP": signal.SIGHUP,
    "USR1": signal.SIGUSR1,
    "USR2": signal.SIGUSR2,
    "WINCH": signal.SIGWINCH,
    "KILL": signal.SIGKILL,
}


def parse_signal(name: str) -> signal.Signals:
    """`TERM`, `SIGTERM`, `sigterm` or `15` to a signal; ValueError names the valid choices."""
    text = name.strip().upper().removeprefix("SIG")
    if text.isdigit():
        try:
            return signal.Signals(int(text))
        except ValueError:
            pass
    elif text in SIGNALS:
        return SIGNALS[text]
    raise ValueError(f"unknown signal {name!r}; use one of {', '.join(SIGNALS)}")


@dataclass(frozen=True)
class Scenario:
    """
    One shutdown experiment.

    - `requests` slow requests of `request_seconds` each, and `background` requests that each
      leave a background task of `background_seconds` running, are put in flight;
    - once the journal shows all of them inside the app (and `signal_delay` seconds more),
      `signal` goes to the server's main process; after `grace` seconds whatever is left is
      SIGKILLed;
    - `faults` (see `chaos.faults`) are injected around the signal.
    """

    app: str
    server: str = "uvicorn"
    server_args: tuple[str, ...] = ()
    command: str | None = None
    workers: int = 1
    port: int | None = None
    requests: int = 3
    request_seconds: float = 1.0
    request_path: str = HOLD_PATH
    background: int = 1
    background_seconds: float = 1.0
    background_path: str = BACKGROUND_PATH
    signal: str = "TERM"
    grace: float = 30.0
    ready_timeout: float = 20.0
    stall_ms: float = 250.0
    background_policy: BackgroundPolicy = "complete"
    integrity: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    faults: tuple[str, ...] = ()
    signal_delay: float = 0.0
    # What real endpoints need, for the request and background specs alike.
    headers: tuple[str, ...] = ()  # "Name: value"
    json_body: str | None = None
    data: str | None = None
    expect_status: str = "2xx"
    signal_at: SignalAt = "in-flight"
    instrument: bool = True  # the probe's automatic view of pools and clients (`chaos.probe.resources`)

    def to_dict(self) -> dict[str, Any]:
        """The scenario as journaled and reported: secrets redacted, unused paths left out."""
        data = dataclasses.asdict(self)
        data["server_args"] = list(self.server_args)
        data["faults"] = list(self.faults)
        data["env"] = redact_env(self.env)
        data["headers"] = redact_headers(self.headers)
        if self.command is not None:
            data["command"] = redact_text(self.command)
        if not self.requests:
            data.pop("request_path")
        if not self.background:
            data.pop("background_path")
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("server_args", "faults", "headers"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def subject(self) -> str:
        """
        What ran, for a report's first line: `app.main:app on uvicorn`; the command alone when it
        is the app's own script (`python main.py`), whose name is then the app's.
        """
        if self.command is not None and self.app in self.command.split():
            return self.command.replace(f" -m {SCRIPT_LAUNCHER} ", " ")  # a replay runs it through the launcher
        return f"{self.app or '(no app)'} on {self.command or self.server}"

    @property
    def workload(self) -> str:
        """What the stop signal meets, for a report's first line."""
        if self.signal_at == "startup":
            return f"the stop signal {SIGNAL_MOMENTS['startup']}, nothing sent"
        if self.signal_at == "ready":
            return f"the stop signal {SIGNAL_MOMENTS['ready']}"
        return f"{self.requests} request(s) and {self.background} background request(s) put in flight"

    @property
    def client_timeout(self) -> float:
        """
        How long a client waits for its answer: the whole grace (a drain may use all of it),
        the longest work it asked for, and some slack. The one formula every run mode uses.
        """
        longest = max(self.request_seconds, self.background_seconds, 1.0)
        if not math.isfinite(longest):  # an endless stream: the grace and SIGKILL end it
            longest = 1.0
        return self.grace + longest + CLIENT_SLACK_SECONDS

    @property
    def in_flight_timeout(self) -> float:
        """How long the work may take to get inside the app before the run gives up."""
        return max(10.0, self.ready_timeout)


@dataclass(frozen=True)
class K8sOptions:
    """
    What a Kubernetes replay needs beyond its `Scenario` (the manifest gives the command, the
    stop signal and the grace): how long routers keep sending new connections after the pod's
    deletion, and the router's chaos.
    """

    propagation: tuple[float, float] = (1.0, 1.0)
    seed: int | None = None
    steady_path: str | None = None
    namespace: bool = True
    latency: float = 0.0
    reset_rate: float = 0.0
    ingress: str = "builtin"  # builtin (drainspec's router), nginx or haproxy (`chaos.k8s.ingress`)
    ingress_options: tuple[str, ...] = ()  # KEY=VALUE overrides of the ingress's defaults
    load_rate: float = 0.0  # requests/s of paced keep-alive load (`traffic.paced_load`); 0: one per 50 ms
    load_connections: int = 8  # keep-alive connections the paced load spreads its requests over
    load_bursts: int = 0  # bursts of POSTs at the server's keep-alive timeout before the deletion (`traffic.Bursts`)
    link_delay: float = 0.0  # one-way network delay between the ingress proxy and each pod (`chaos.k8s.link`)

    def pick_propagation(self) -> float:
        """The propagation delay of this replay: fixed, or drawn from the range by `seed`."""
        low, high = self.propagation
        if low == high:
            return low
        return round(random.Random(self.seed).uniform(low, high), 3)


def parse_range(text: str, *, option: str = "--propagation") -> tuple[float, float]:
    """`1.5` or `0.5..3` (seconds; an optional trailing `s`) to a (low, high) pair."""
    cleaned = text.strip().rstrip("s")
    low_text, sep, high_text = cleaned.partition("..")
    try:
        low = float(low_text)
        high = float(high_text.rstrip("s")) if sep else low
    except ValueError:
        raise SetupError(f"{option} {text!r} must be seconds, like 1.5 or 0.5..3") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
        raise SetupError(f"{option} {text!r} must be a finite, non-negative range, low..high")
    return low, high
