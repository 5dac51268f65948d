"""
The matrix as a CI log shows it: 80 columns, not a terminal. Every verdict's status and every
reason a cell could not run must be in the text, whole (`| cat` once printed empty verdict
columns, "pa…", and "could not run" without the reason).
"""

from __future__ import annotations

import io

from rich.console import Console

from chaos.judge.verdict import Status, VerdictName
from chaos.matrix import Cell, CellResult, print_table

P, F, NA = Status.PASS, Status.FAIL, Status.NOT_APPLICABLE
ROUTED, ROLLOUT = VerdictName.NO_REFUSED_WHILE_ROUTED, VerdictName.ROLLOUT_ZERO_FAILED
FIELDS = ("FAIL", "pass", "n/a", "tasks", "exit", "ERROR", "note")


def statuses(**overrides: Status) -> dict[str, Status]:
    """Every verdict: pass, except the two that never apply outside `drainspec k8s`, and the overrides."""
    base = {name.value: P for name in VerdictName} | {ROUTED.value: NA, ROLLOUT.value: NA}
    return base | {name.replace("_", "-"): status for name, status in overrides.items()}


RESULTS = [
    CellResult(Cell("uvicorn", "TERM"), statuses(), {"completed": 4}, 143, 2.003),
    CellResult(
        Cell("uvicorn", "TERM", ("--timeout-graceful-shutdown", "1")),
        statuses(inflight_completed=F, teardown_after_drain=F, no_use_after_close=F, data_integrity=NA),
        {"cancelled": 2, "completed": 2},
        143,
        1.19,
    ),
    CellResult(
        Cell("granian", "INT", ("--workers-kill-timeout", "1")),
        statuses(inflight_completed=F, teardown_ran=F, background_fate=F, teardown_after_drain=NA),
        {"killed": 2, "dropped": 2},
        0,
        1.05,
    ),
    CellResult(
        Cell("gunicorn", "TERM", ("--graceful-timeout", "1")),
        {},
        {},
        None,
        None,
        error="gunicorn is not installed here; install it: pip install 'gunicorn>=23' 'uvicorn-worker>=0.3'",
    ),
    CellResult(
        Cell("hypercorn", "TERM"),
        {},
        {},
        None,
        None,
        error="hypercorn 0.16.0 is older than drainspec supports (hypercorn >= 0.17); upgrade it: "
        "pip install --upgrade 'hypercorn>=0.17'",
    ),
]


def rendered(results: list[CellResult]) -> str:
    console = Console(width=80, file=io.StringIO(), force_terminal=False)
    print_table(console, results)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def blocks(output: str) -> dict[str, dict[str, str]]:
    """Each cell's block, by its label: field -> text, the lines a field wrapped onto joined again."""
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    field = ""
    for line in output.splitlines():
        if not line.startswith(" "):
            current = found.setdefault(line.strip(), {})
            continue
        assert current is not None, output
        first, _, rest = line.strip().partition(" ")
        if first in FIELDS and line.startswith("  " + first):
            field = first
            current[field] = rest.strip()
        else:
            current[field] += " " + line.strip()
    return found


def test_every_status_and_reason_is_whole_at_80_columns():
    output = rendered(RESULTS)
    assert "…" not in output and "\x1b" not in output, output
    assert all(len(line) <= 80 for line in output.splitlines()), output
    found = blocks(output)
    for result in RESULTS:
        block = found[result.cell.label]
        if result.error is not None:
            assert block == {"ERROR": f"could not run: {result.error}"}, output
            continue
        shown = {
            name: Status.FAIL if word == "FAIL" else Status.PASS if word == "pass" else Status.NOT_APPLICABLE
            for word in ("FAIL", "pass", "n/a")
            for name in block.get(word, "").split(", ")
            if name
        }
        # Every verdict that applied in some cell has its status in every block that ran.
        expected = {name: status for name, status in result.statuses.items() if name not in (ROUTED, ROLLOUT)}
        assert shown == expected, output
        assert block["exit"] == f"code {result.exit_code}, {result.drain_seconds:g}s after the signal"
        for fate, count in result.fates.items():
            assert f"{count} {fate}" in block["tasks"]


def test_verdicts_that_applied_nowhere_are_named_once():
    output = rendered(RESULTS)
    assert output.count(ROUTED.value) == 1 and output.count(ROLLOUT.value) == 1, output
    assert f"not applicable in any cell: {ROUTED.value}, {ROLLOUT.value}" in " ".join(output.split())


def test_a_matrix_where_no_cell_ran_still_says_why_for_each():
    output = rendered(RESULTS[3:])
    assert "not applicable in any cell" not in output
    for result in RESULTS[3:]:
        assert blocks(output)[result.cell.label] == {"ERROR": f"could not run: {result.error}"}


def test_a_cell_without_an_exit_says_so():
    result = CellResult(Cell("uvicorn", "TERM"), statuses(), {}, None, None)
    block = blocks(rendered([result]))[result.cell.label]
    assert block["exit"] == "no exit recorded" and block["tasks"] == "none"


def test_a_cell_that_judged_nothing_says_so_above_its_passes():
    """Nothing in flight at its signal: its passes prove nothing, and the block says it first."""
    nothing = "nothing was in flight at the stop signal: every request had been answered"
    result = CellResult(Cell("uvicorn", "TERM"), statuses(), {}, 0, 0.1, missing=(nothing,))
    block = blocks(rendered([result]))[result.cell.label]
    assert block["note"] == f"not verified, it judged nothing: {nothing}"
    assert list(block)[0] == "note"
