"""
What to run: the server, the app, the work to put in flight, and how to stop it.

A `Scenario` is plain data. It is journaled whole at the start of a run (`run.start`), so the
verdicts and every report can be rebuilt from the journal alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BackgroundPolicy = Literal["complete", "allow-cancel"]

HOLD_PATH = "GET /__drainspec/hold?seconds={seconds}"
BACKGROUND_PATH = "GET /__drainspec/background?seconds={seconds}"


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

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["server_args"] = list(self.server_args)
        data["faults"] = list(self.faults)
        data["env"] = dict(self.env)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("server_args", "faults"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    @property
    def in_flight_timeout(self) -> float:
        """How long the work may take to get inside the app before the run gives up."""
        return max(10.0, self.ready_timeout)
