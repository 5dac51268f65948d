"""
`report.json`: one run's verdicts, their evidence and its timeline, for machines, rebuilt from
the journal alone. Each evidence item is an object: its sentence (`text`), then the request,
task, worker pid and journal time it names, when it names them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos.journal import Kind
from chaos.judge.timeline import Timeline
from chaos.judge.verdict import Verdict
from chaos.outdir import write_file
from chaos.reports.console import timeline_lines

REPORT_SCHEMA = "drainspec.report/2"


def to_dict(timeline: Timeline, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "scenario": timeline.scenario.to_dict() if timeline.scenario else None,
        "result": "fail" if any(verdict.failed for verdict in verdicts) else "pass",
        "verdicts": [
            {
                "name": verdict.name,
                "status": verdict.status.value,
                "summary": verdict.summary,
                "evidence": [item.to_dict() for item in verdict.evidence],
            }
            for verdict in verdicts
        ],
        "replay": timeline.replay or None,
        "rollout": timeline.rollout or None,
        "findings": [dict(event.fields) for event in timeline.findings],
        "escaped_processes": escaped_processes(timeline),
        "timeline": timeline_lines(timeline, limit=10_000),
    }


def escaped_processes(timeline: Timeline) -> list[dict[str, Any]]:
    """Processes the app started that outlived the run; drainspec killed each at the end."""
    return [
        {"pid": event.get("target"), "command": event.get("command"), "found": event.get("found")}
        for event in timeline.events
        if event.kind == Kind.PROCESS_ESCAPED
    ]


def write_json(path: Path, timeline: Timeline, verdicts: Sequence[Verdict]) -> None:
    """Write report.json (never through a link: `chaos.outdir.write_file`)."""
    text = json.dumps(to_dict(timeline, verdicts), indent=2, default=str) + "\n"
    write_file(path, text.encode())
