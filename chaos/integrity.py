"""
Data-integrity checks as users write them: a function named by `--integrity MODULE:FUNCTION`,
run after the server has exited, that says what is wrong with the data (an empty list: nothing).

    def check(run: IntegrityRun) -> list[str]: ...          # sync
    async def check(run: IntegrityRun) -> list[str]: ...    # async: awaited on a loop of its own
    def check(events, environ) -> list[str]: ...            # the older two-argument form

`run.confirmed` lists every write the client saw succeed (its request id, the `{id}` value it
was sent with, method, path, status and body), so a check can look for exactly those rows, also
in a database that outlives runs. The check runs in a thread, outside drainspec's event loop,
so it may call `asyncio.run` itself. A check that raises is a broken check, not a data verdict:
its traceback is journaled and the run ends with exit 2.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.errors import SetupError
from chaos.journal import Event, Kind
from chaos.scenario import Scenario

CONFIRMING_ROLES = ("slow", "background")


@dataclass(frozen=True)
class ConfirmedWrite:
    """One request of the scenario that the client saw answered with an expected status."""

    request: str  # the journal's id: r1, b2
    id: str  # what `{id}` was filled with: unique per run
    method: str
    path: str
    status: int
    body: str | None = None


@dataclass(frozen=True)
class IntegrityRun:
    """What a check gets: the run's journal, the confirmed writes, the server's environment."""

    events: Sequence[Event]
    confirmed: Sequence[ConfirmedWrite]
    environ: Mapping[str, str] = field(default_factory=dict)


Check = Callable[..., Any]


def load_check(import_string: str) -> Check:
    from uvicorn.importer import ImportFromStringError, import_from_string

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        check = import_from_string(import_string)
    except ImportFromStringError as exc:
        raise SetupError(f"--integrity: {exc}") from None
    except Exception as exc:
        raise SetupError(f"--integrity: importing {import_string!r} raised {exc!r}") from None
    if not callable(check):
        raise SetupError(f"--integrity: {import_string!r} is not a function")
    return check


def confirmed_writes(events: Sequence[Event], scenario: Scenario) -> list[ConfirmedWrite]:
    """The scenario's requests that the client saw succeed, in the order they were sent."""
    writes = []
    for event in events:
        if event.kind != Kind.CLIENT_REQUEST or event.get("role") not in CONFIRMING_ROLES:
            continue
        if event.get("outcome") != "ok":
            continue
        request = str(event.get("id"))
        filled = str(event.get("filled_id") or request)
        writes.append(
            ConfirmedWrite(
                request=request,
                id=filled,
                method=str(event.get("method")),
                path=str(event.get("path")),
                status=int(event.get("status") or 0),
                body=_body(scenario, filled, event),
            )
        )
    return writes


def _body(scenario: Scenario, filled: str, event: Event) -> str | None:
    body = scenario.json_body if scenario.json_body is not None else scenario.data
    if body is None:
        return None
    seconds = scenario.request_seconds if event.get("role") == "slow" else scenario.background_seconds
    return body.replace("{id}", filled).replace("{seconds}", f"{seconds}")


async def run_check(check: Check, run: IntegrityRun) -> tuple[list[str] | None, str | None]:
    """(problems, None), or (None, the traceback) when the check itself broke."""
    try:
        result = await asyncio.to_thread(_call, check, run)
    except Exception:
        return None, traceback.format_exc()
    if not isinstance(result, list | tuple) or not all(isinstance(item, str) for item in result):
        return None, f"the check returned {type(result).__name__}, not a list of problems (strings)"
    return list(result), None


def _call(check: Check, run: IntegrityRun) -> Any:
    """In a worker thread: call the check the way its signature asks, awaiting it if async."""
    try:
        parameters = len(inspect.signature(check).parameters)
    except (TypeError, ValueError):
        parameters = 1
    result = check(run.events, run.environ) if parameters >= 2 else check(run)
    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
