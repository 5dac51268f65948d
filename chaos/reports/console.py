"""
Reports of one run, every one rebuilt from the journal alone: the console view (verdicts with
their evidence, then a compact timeline), `report.json` (schema `REPORT_SCHEMA`) and JUnit XML
(one testcase per verdict).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from chaos.journal import Event, Kind
from chaos.judge.timeline import Timeline
from chaos.judge.verdict import Status, Verdict

REPORT_SCHEMA = "drainspec.report/1"
STATUS_STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.NOT_APPLICABLE: "dim"}
STATUS_LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_APPLICABLE: "n/a "}


def exit_code(verdicts: Sequence[Verdict]) -> int:
    """0 when nothing failed, 1 when any verdict failed (2 is for bad input, before a run)."""
    return 1 if any(verdict.failed for verdict in verdicts) else 0


# --- timeline -----------------------------------------------------------------------------------


def _line_for(timeline: Timeline, event: Event) -> str | None:
    kind, fields = event.kind, event.fields
    who = f"[{event.pid}]"
    if kind == Kind.SIGNAL_SENT:
        return f"harness  {fields.get('signal')} sent to pid {fields.get('target')}"
    if kind == Kind.SIGKILL_SENT:
        return f"harness  SIGKILL to pid {fields.get('target')}: grace of {fields.get('after')}s ran out"
    if kind == Kind.SERVER_EXITED:
        how = "killed" if fields.get("killed") else "exited"
        return f"harness  server {how}, exit code {fields.get('exit_code')}"
    if kind in (Kind.PRESTOP_START, Kind.PRESTOP_END):
        return f"kubelet  {kind} {fields.get('detail', '')}".rstrip()
    if kind == Kind.POD_DELETED:
        return f"kubelet  pod deleted; grace {fields.get('grace')}s starts"
    if kind == Kind.ROUTER_TERMINATING:
        return f"router   endpoint terminating; still routed for {fields.get('propagation')}s"
    if kind == Kind.ROUTER_REMOVED:
        return "router   endpoint removed: no new connections to the pod"
    if kind == Kind.CLIENT_REQUEST and fields.get("role") == "steady" and fields.get("outcome") == "ok":
        return None
    if kind == Kind.CLIENT_REQUEST:
        status = f" HTTP {fields['status']}" if "status" in fields else ""
        request = f"{fields.get('id')} {fields.get('method')} {fields.get('path')}"
        return f"client   {request}: {fields.get('outcome')}{status}"
    if kind in (
        Kind.SHUTDOWN_RECEIVED,
        Kind.SHUTDOWN_COMPLETE,
        Kind.SHUTDOWN_FAILED,
        Kind.POOL_CLOSED,
        Kind.POOL_USE_AFTER_CLOSE,
        Kind.LOOP_STALL,
    ):
        extra = ""
        if kind == Kind.POOL_USE_AFTER_CLOSE:
            extra = f" ({fields.get('use')}, {fields.get('request') or fields.get('thread') or '?'})"
        elif kind == Kind.LOOP_STALL:
            extra = f" in {fields.get('frame')}"
        return f"app{who:>8} {kind}{extra}"
    if kind == Kind.REQUEST_END and event.t >= timeline.origin:
        return f"app{who:>8} request {fields.get('request')} {fields.get('outcome')}"
    if kind in (Kind.TASK_FINISHED, Kind.TASK_CANCELLED, Kind.TASK_FAILED) and event.t >= timeline.origin:
        task = timeline.tasks.get(str(fields.get("task")))
        label = task.name.rsplit(".", 1)[-1] if task else "?"
        return f"app{who:>8} task {label} [{fields.get('task')}] {kind.split('.')[1]}"
    return None


def timeline_lines(timeline: Timeline, limit: int = 60) -> list[str]:
    """One line per notable event; runs of steady-load failures with one outcome share a line."""
    lines: list[str] = []
    run: list[Event] = []

    def flush() -> None:
        if not run:
            return
        first, last = run[0], run[-1]
        fields = first.fields
        ids = str(fields.get("id")) if len(run) == 1 else f"{fields.get('id')}..{last.get('id')} ({len(run)} requests)"
        status = f" HTTP {fields['status']}" if "status" in fields else ""
        request = f"{ids} {fields.get('method')} {fields.get('path')}"
        lines.append(f"{timeline.at(first.t):>9}  client   {request}: {fields.get('outcome')}{status}")
        run.clear()

    for event in timeline.events:
        if event.kind == Kind.CLIENT_REQUEST and event.get("role") == "steady" and event.get("outcome") != "ok":
            if run and (run[-1].get("outcome"), run[-1].get("status")) != (event.get("outcome"), event.get("status")):
                flush()
            run.append(event)
            continue
        text = _line_for(timeline, event)
        if text is not None:
            flush()
            lines.append(f"{timeline.at(event.t):>9}  {text}")
    flush()
    if len(lines) > limit:
        hidden = len(lines) - limit
        lines = lines[: limit // 2] + [f"           ... {hidden} more lines ..."] + lines[-limit // 2 :]
    return lines


# --- console ------------------------------------------------------------------------------------


def print_console(console: Console, timeline: Timeline, verdicts: Sequence[Verdict]) -> None:
    scenario = timeline.scenario
    if scenario is not None:
        console.print(
            f"[bold]drainspec[/] {escape(scenario.app)} on {escape(scenario.command or scenario.server)}: "
            f"{scenario.requests} request(s) and {scenario.background} background request(s) in "
            f"flight, {scenario.signal} with a {scenario.grace:g}s grace"
        )
    console.print()
    zero = "the pod's deletion" if timeline.deleted is not None else "the stop signal"
    console.print(f"[bold]Timeline[/] (seconds from {zero})")
    for line in timeline_lines(timeline):
        console.print("  " + escape(line), highlight=False)
    console.print()
    console.print("[bold]Verdicts[/]")
    for verdict in verdicts:
        style = STATUS_STYLE[verdict.status]
        label = STATUS_LABEL[verdict.status]
        console.print(f"  [{style}]{label}[/] {verdict.name:<24} {escape(verdict.summary)}", highlight=False)
        for item in verdict.evidence:
            console.print(f"       [dim]-[/] {escape(item)}", highlight=False)
    failures = [v.name for v in verdicts if v.failed]
    console.print()
    if failures:
        console.print(f"[bold red]{len(failures)} verdict(s) failed:[/] {', '.join(failures)}")
    else:
        console.print("[bold green]graceful shutdown verified[/]")


# --- files --------------------------------------------------------------------------------------


def to_dict(timeline: Timeline, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "scenario": timeline.scenario.to_dict() if timeline.scenario else None,
        "result": "fail" if exit_code(verdicts) else "pass",
        "verdicts": [
            {
                "name": v.name,
                "status": v.status.value,
                "summary": v.summary,
                "evidence": list(v.evidence),
            }
            for v in verdicts
        ],
        "replay": timeline.replay or None,
        "findings": [dict(event.fields) for event in timeline.findings],
        "timeline": timeline_lines(timeline, limit=10_000),
    }


def write_json(path: Path, timeline: Timeline, verdicts: Sequence[Verdict]) -> None:
    path.write_text(json.dumps(to_dict(timeline, verdicts), indent=2) + "\n")


def write_junit(path: Path, timeline: Timeline, verdicts: Sequence[Verdict], suite: str = "drainspec") -> None:
    """One testcase per verdict: failures carry the evidence, not-applicable ones are skipped."""
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(verdicts)),
        failures=str(sum(v.status == Status.FAIL for v in verdicts)),
        skipped=str(sum(v.status == Status.NOT_APPLICABLE for v in verdicts)),
    )
    for verdict in verdicts:
        case = ET.SubElement(root, "testcase", classname=suite, name=verdict.name)
        if verdict.status == Status.FAIL:
            failure = ET.SubElement(case, "failure", message=verdict.summary)
            failure.text = "\n".join(verdict.evidence)
        elif verdict.status == Status.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=verdict.summary)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
