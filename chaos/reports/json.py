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

from chaos.judge.timeline import Timeline
from chaos.judge.verdict import Verdict
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
        "timeline": timeline_lines(timeline, limit=10_000),
    }


def write_json(path: Path, timeline: Timeline, verdicts: Sequence[Verdict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_dict(timeline, verdicts), indent=2) + "\n")
