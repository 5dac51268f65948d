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
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from chaos.errors import SetupError
from chaos.judge.verdict import Status, VerdictName, fate_of
from chaos.outcome import RunResult
from chaos.runner import execute
from chaos.scenario import Scenario
from chaos.servers import SERVERS

MATRIX_SCHEMA = "drainspec.matrix/1"

# Each server as it ships, and with the knob that bounds its drain (`chaos.servers`).
DEFAULT_KNOBS: Mapping[str, tuple[tuple[str, ...], ...]] = {name: spec.knobs for name, spec in SERVERS.items()}


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
    missing: tuple[str, ...] = ()  # what the run lacked for its verdicts to be trusted: it judged nothing

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
        missing=tuple(result.missing_evidence),
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
                "missing_evidence": list(r.missing),
                "verdicts": {name: status.value for name, status in r.statuses.items()},
                "background_fates": dict(r.fates),
                "exit_code": r.exit_code,
                "drain_seconds": r.drain_seconds,
            }
            for r in results
        ],
    }


def write_json(path: Path, base: Scenario, results: Sequence[CellResult]) -> None:
    from chaos.outdir import write_file

    write_file(path, (json.dumps(to_dict(base, results), indent=2) + "\n").encode())


STATUS_WORD = {Status.FAIL: "FAIL", Status.PASS: "pass", Status.NOT_APPLICABLE: "n/a"}
STATUS_STYLE = {Status.FAIL: "bold red", Status.PASS: "green", Status.NOT_APPLICABLE: "dim"}


def print_table(console: Console, results: Sequence[CellResult]) -> None:
    """
    One block per cell: its verdicts grouped by status under their full names, its background
    tasks' fates and its exit, or the reason it could not run.

    Not a column per verdict: matrices are read in CI logs, 80 columns wide and not a terminal,
    where eleven verdict columns shrank to nothing and a failed cell's reason had no room. Here
    every line wraps under its label at the console's width instead of being cut, and nothing
    depends on colour. Verdicts that applied to no cell are named once, at the end.
    """
    ran = [result for result in results if result.error is None]
    applied = [
        name for name in VerdictName if any(r.statuses.get(name) not in (None, Status.NOT_APPLICABLE) for r in ran)
    ]
    width = max(console.width, 40)
    console.print(Text(f"drainspec matrix: {len(results)} cell(s)", style="bold"), soft_wrap=True)
    for result in results:
        console.print(Text(result.cell.label, style="bold"), soft_wrap=True)
        if result.error is not None:
            _field(console, width, Text("ERROR", style="yellow"), f"could not run: {result.error}")
            continue
        if result.missing and not result.failed:
            _field(
                console, width, Text("note", style="yellow"), f"not verified, it judged nothing: {result.missing[0]}"
            )
        for status in (Status.FAIL, Status.PASS, Status.NOT_APPLICABLE):
            names = [name for name in applied if result.statuses.get(name, Status.NOT_APPLICABLE) == status]
            if names:
                _field(console, width, Text(STATUS_WORD[status], style=STATUS_STYLE[status]), ", ".join(names))
        fates = ", ".join(f"{count} {fate}" for fate, count in sorted(result.fates.items()))
        _field(console, width, Text("tasks"), fates or "none")
        _field(console, width, Text("exit"), _exit_text(result))
    unused = [name for name in VerdictName if name not in applied]
    if unused and ran:
        for line in _wrap("not applicable in any cell: " + ", ".join(unused), width):
            console.print(Text(line, style="dim"), soft_wrap=True)


FIELD_WIDTH = 7  # the field's word ("ERROR", "tasks", ...) and the space after it
FIELD_INDENT = " " * (2 + FIELD_WIDTH)


def _field(console: Console, width: int, word: Text, text: str) -> None:
    """`  WORD   text`, the text wrapped at `width` under itself (a hanging indent)."""
    first, *rest = _wrap(text, width - len(FIELD_INDENT))
    console.print(Text("  ") + word + Text(" " * (FIELD_WIDTH - len(word)) + first), soft_wrap=True)
    for line in rest:
        console.print(Text(FIELD_INDENT + line), soft_wrap=True)


def _wrap(text: str, width: int) -> list[str]:
    # Never at a hyphen: verdict names and flags are hyphenated words that must stay whole.
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _exit_text(result: CellResult) -> str:
    if result.exit_code is None:
        return "no exit recorded"
    if result.drain_seconds is None:
        return f"code {result.exit_code}"
    return f"code {result.exit_code}, {result.drain_seconds:g}s after the signal"
