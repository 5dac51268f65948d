"""
One scenario across servers, stop signals and shutdown knobs, as a table of verdicts.

Servers differ at shutdown in ways their docs do not say (which drop background tasks, which
SIGKILL workers at a timeout and skip teardown, which cancel requests with a 500): the matrix
measures them on the user's own app, one real run per cell, run one after another so that the
cells do not compete for the machine.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from chaos.errors import SetupError
from chaos.judge.verdict import Status, VerdictName, fate_of
from chaos.outcome import RunResult
from chaos.runner import execute
from chaos.scenario import Scenario
from chaos.servers import SERVERS

MATRIX_SCHEMA = "drainspec.matrix/1"

# Each server as it ships, and with the knob that bounds its drain (`chaos.servers`).
DEFAULT_KNOBS: Mapping[str, tuple[tuple[str, ...], ...]] = {name: spec.knobs for name, spec in SERVERS.items()}
MARK = {Status.PASS: "[green]pass[/]", Status.FAIL: "[bold red]FAIL[/]", Status.NOT_APPLICABLE: "[dim]-[/]"}


@dataclass(frozen=True)
class Cell:
    server: str
    signal: str
    knob: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " ".join([self.server, *self.knob, f"SIG{self.signal}"])

    @property
    def slug(self) -> str:
        return "-".join(word.strip("-") for word in self.label.split()).lower()


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    statuses: Mapping[str, Status]
    fates: Mapping[str, int]
    exit_code: int | None
    drain_seconds: float | None
    error: str | None = None

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(name for name, status in self.statuses.items() if status == Status.FAIL)


def cells(
    servers: Sequence[str],
    signals: Sequence[str],
    knobs: Mapping[str, Sequence[tuple[str, ...]]] | None = None,
) -> list[Cell]:
    unknown = [server for server in servers if server not in SERVERS]
    if unknown:
        raise SetupError(f"unknown server {unknown[0]!r} in the matrix; choose from {', '.join(SERVERS)}")
    chosen = {**DEFAULT_KNOBS, **(knobs or {})}
    return [
        Cell(server, signal.upper().removeprefix("SIG"), tuple(knob))
        for server in servers
        for knob in chosen.get(server, ((),))
        for signal in signals
    ]


def run_cell(base: Scenario, cell: Cell, out: Path) -> CellResult:
    scenario = dataclasses.replace(
        base, server=cell.server, signal=cell.signal, server_args=(*base.server_args, *cell.knob), command=None
    )
    try:
        events = execute(scenario, out / cell.slug)
    except SetupError as exc:
        return CellResult(cell, {}, {}, None, None, error=str(exc))
    result = RunResult.of(events)
    timeline, verdicts = result.timeline, result.verdicts
    fates = Counter(str(fate_of(timeline, task)) for task in timeline.tasks.values())
    exit_event = timeline.exit
    drain = None
    if timeline.signal is not None and exit_event is not None:
        drain = round(timeline.seconds(timeline.signal, exit_event.t), 3)
    return CellResult(
        cell,
        {verdict.name: verdict.status for verdict in verdicts},
        dict(fates),
        int(exit_event.get("exit_code")) if exit_event is not None else None,
        drain,
    )


def run_matrix(
    base: Scenario,
    matrix: Iterable[Cell],
    out: Path,
    progress: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    results = []
    for cell in matrix:
        result = run_cell(base, cell, out)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def to_dict(base: Scenario, results: Sequence[CellResult]) -> dict[str, Any]:
    return {
        "schema": MATRIX_SCHEMA,
        "scenario": base.to_dict(),
        "cells": [
            {
                "server": r.cell.server,
                "signal": r.cell.signal,
                "knob": list(r.cell.knob),
                "error": r.error,
                "verdicts": {name: status.value for name, status in r.statuses.items()},
                "background_fates": dict(r.fates),
                "exit_code": r.exit_code,
                "drain_seconds": r.drain_seconds,
            }
            for r in results
        ],
    }


def write_json(path: Path, base: Scenario, results: Sequence[CellResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(base, results), indent=2) + "\n")


SHORT = {
    VerdictName.INFLIGHT_COMPLETED: "inflight",
    VerdictName.TEARDOWN_AFTER_DRAIN: "after-drain",
    VerdictName.NO_USE_AFTER_CLOSE: "pool",
    VerdictName.BACKGROUND_FATE: "background",
    VerdictName.TEARDOWN_RAN: "teardown",
    VerdictName.LOOP_NOT_BLOCKED: "loop",
    VerdictName.NO_REFUSED_WHILE_ROUTED: "routed",
    VerdictName.WITHIN_GRACE: "grace",
    VerdictName.SIGNAL_REACHES_APP: "signal",
    VerdictName.DATA_INTEGRITY: "data",
    VerdictName.ROLLOUT_ZERO_FAILED: "rollout",
}


def print_table(console: Console, results: Sequence[CellResult]) -> None:
    """Verdicts as columns (those that applied somewhere), cells as rows, then a legend."""
    ran = [result for result in results if result.error is None]
    names = [
        name for name in VerdictName if any(r.statuses.get(name) not in (None, Status.NOT_APPLICABLE) for r in ran)
    ]
    table = Table(title="drainspec matrix")
    table.add_column("server, knob, signal", no_wrap=True)
    for name in names:
        table.add_column(SHORT[name], justify="center")
    table.add_column("background tasks")
    table.add_column("exit", justify="right", no_wrap=True)
    for result in results:
        if result.error is not None:
            table.add_row(result.cell.label, f"[yellow]could not run: {result.error}[/]")
            continue
        fates = " ".join(f"{count} {fate}" for fate, count in sorted(result.fates.items())) or "-"
        exit_text = "-" if result.exit_code is None else f"{result.exit_code} after {result.drain_seconds}s"
        table.add_row(
            result.cell.label,
            *(MARK[result.statuses.get(name, Status.NOT_APPLICABLE)] for name in names),
            fates,
            exit_text,
        )
    console.print(table)
    console.print("[dim]" + "; ".join(f"{SHORT[name]} = {name}" for name in names) + "[/]")
