"""
The work a scenario puts in flight, checked before anything starts: each request's spec (method,
path, headers, body and the statuses it must answer with, from the command line's
`--request-path`, `--header`, `--json`, `--data` and `--expect-status`) and the plan of the run's
slow (`r1..`) and background (`b1..`) requests.

Nothing here sends a request (that is `chaos.traffic`), and nothing here loads asyncio: a run
checks its workload before its server is spawned, and spawns it before the rest of drainspec
loads (`chaos.runner`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.errors import SetupError
from chaos.scenario import Scenario

STATUS_WORD = re.compile(r"^(?:([1-5])xx|(\d{3})(?:-(\d{3}))?)$")


@dataclass(frozen=True)
class StatusSet:
    """
    The statuses a request may answer with and still count as served: `2xx` by default for the
    scenario's requests (a 404 from a typo'd path or a 401 from a missing token is not a
    graceful shutdown), `2xx,3xx`, `200,201`, `200-299`.
    """

    ranges: tuple[tuple[int, int], ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> StatusSet:
        ranges = []
        for word in (part.strip().lower() for part in str(text).split(",")):
            match = STATUS_WORD.match(word)
            if match is None:
                raise ValueError(f"expected status {text!r}: use 2xx, 200, 200-299, or a comma-separated list")
            klass, low, high = match.groups()
            if klass:
                ranges.append((int(klass) * 100, int(klass) * 100 + 99))
            else:
                first, last = int(low), int(high or low)
                if not 100 <= first <= last <= 599:
                    raise ValueError(f"expected status {text!r}: statuses are 100-599, low-high")
                ranges.append((first, last))
        return cls(tuple(ranges), ",".join(part.strip() for part in str(text).split(",")))

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(low <= status <= high for low, high in self.ranges)


SUCCESS = StatusSet(((200, 299),), "2xx")
ANSWERED = StatusSet(((100, 499),), "below 500")
"""What counts as served for traffic that is not the scenario's (steady load, faults, preStop)."""

PLACEHOLDER = re.compile(r"\{(id|seconds)\}")


@dataclass(frozen=True)
class RequestSpec:
    """
    One request to make: method, path with query, headers, a body (JSON or raw), and the
    statuses it must answer with. `{id}` and `{seconds}` are filled anywhere in the path, the
    header values and the body; other braces (JSON's) are left alone.
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    expect: StatusSet = ANSWERED

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        headers: Sequence[str] = (),
        json_body: str | None = None,
        data: str | None = None,
        expect: str | None = None,
    ) -> RequestSpec:
        """`METHOD /path?query` plus the CLI's `--header`, `--json`, `--data` and `--expect-status`."""
        method, _, path = text.strip().rpartition(" ")
        method = method.strip().upper() or "GET"
        if not path.startswith("/"):
            raise ValueError(f"request path {text!r} must start with '/', e.g. 'GET /slow'")
        if any(char in path for char in "\r\n ") or any(char in method for char in "\r\n"):
            raise ValueError(f"request path {text!r} must not hold spaces or line breaks")
        unknown = [name for name in re.findall(r"\{([^{}]*)\}", path) if name not in ("id", "seconds")]
        if unknown:
            raise ValueError(f"request path {text!r}: unknown placeholder {{{unknown[0]}}}; use {{id}} and {{seconds}}")
        pairs = [_header(item) for item in headers]
        if json_body is not None and data is not None:
            raise ValueError("give a body with --json or with --data, not both")
        body = json_body if json_body is not None else data
        if json_body is not None:
            _check_json(json_body)
            if not any(name.lower() == "content-type" for name, _ in pairs):
                pairs.append(("content-type", "application/json"))
        return cls(method, path, tuple(pairs), body, StatusSet.parse(expect) if expect else SUCCESS)

    def render(self, *, seconds: float, request_id: str) -> RequestSpec:
        """The request with `{id}` and `{seconds}` filled (`request_id` is what `{id}` becomes)."""
        values = {"id": request_id, "seconds": f"{seconds}"}

        def fill(text: str) -> str:
            return PLACEHOLDER.sub(lambda match: values[match[1]], text)

        headers = tuple((name, fill(value)) for name, value in self.headers)
        body = None if self.body is None else fill(self.body)
        return dataclasses.replace(self, path=fill(self.path), headers=headers, body=body)


def _header(item: str) -> tuple[str, str]:
    name, sep, value = item.partition(":")
    if not sep or not name.strip() or any(char in item for char in "\r\n"):
        raise ValueError(f"header {item!r} must look like 'Name: value' on one line")
    return name.strip(), value.strip()


def _check_json(text: str) -> None:
    """A JSON body must parse once `{id}` and `{seconds}` are filled (with stand-ins here)."""
    try:
        json.loads(PLACEHOLDER.sub("0", text))
    except ValueError as exc:
        raise ValueError(f"--json body is not valid JSON: {exc}") from None


@dataclass(frozen=True)
class Plan:
    """One request of the scenario: its journal id (`r1`, `b2`), role, spec and duration."""

    id: str
    role: str
    spec: RequestSpec
    seconds: float


def plan_traffic(scenario: Scenario) -> list[Plan]:
    """The scenario's slow requests (`r1..`) and background-task requests (`b1..`)."""
    try:
        slow = _spec(scenario, scenario.request_path)
        background = _spec(scenario, scenario.background_path)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    plans = [Plan(f"r{n}", "slow", slow, scenario.request_seconds) for n in range(1, scenario.requests + 1)]
    plans += [
        Plan(f"b{n}", "background", background, scenario.background_seconds) for n in range(1, scenario.background + 1)
    ]
    return plans


def durations_not_carried(scenario: Scenario) -> list[str]:
    """
    A note for each duration the requests cannot carry: `--request-seconds` (or
    `--background-seconds`) set away from its default while the request has no `{seconds}` in
    its path, headers or body. The requests then last as long as the endpoint takes, and the
    value only stretches the client's timeout: a user who meant "3 s in flight" must be told.
    """
    defaults = {field.name: field.default for field in dataclasses.fields(Scenario)}
    notes = []
    for flag, count, seconds, path in (
        ("--request-seconds", scenario.requests, scenario.request_seconds, scenario.request_path),
        ("--background-seconds", scenario.background, scenario.background_seconds, scenario.background_path),
    ):
        if not count or seconds == defaults[flag[2:].replace("-", "_")]:
            continue
        try:
            spec = _spec(scenario, path)
        except ValueError:
            continue  # plan_traffic says what is wrong with it
        texts = [spec.path, spec.body or "", *(value for _, value in spec.headers)]
        if not any("{seconds}" in text for text in texts):
            notes.append(
                f"{flag} {seconds:g} is not in the request {path!r} (no {{seconds}} in it): the requests last "
                "as long as the endpoint takes; the value only stretches the client's timeout"
            )
    return notes


def _spec(scenario: Scenario, path: str) -> RequestSpec:
    return RequestSpec.parse(
        path,
        headers=scenario.headers,
        json_body=scenario.json_body,
        data=scenario.data,
        expect=scenario.expect_status,
    )
