"""
The one outcome path: a run's journal, folded into a timeline, judged, and turned into what
people and CI read. Every mode (`run`, `k8s`, a rollout, `report`, `chaos`, `matrix`, the pytest
plugin, the test suite) gets its verdicts here and nowhere else.

Exit codes, one meaning each:

    0  every verdict passed, on complete evidence
    1  a verdict failed
    2  bad input, an unusable environment, or incomplete evidence (nothing exits 0 on it)
    3  drainspec itself crashed (the traceback is saved to a file, one line on stderr)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaos.errors import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_FAILED, EXIT_PASSED, exception_line
from chaos.journal import Event, Kind
from chaos.judge.timeline import Timeline, build
from chaos.judge.verdict import Status, Verdict, judge
from chaos.scenario import Scenario

__all__ = ["EXIT_BAD_INPUT", "EXIT_CRASHED", "EXIT_FAILED", "EXIT_PASSED", "RunResult"]

REPORT_FILE = "report.json"
HTML_FILE = "timeline.html"
JUNIT_FILE = "junit.xml"


@dataclass(frozen=True)
class RunResult:
    """The verdicts of one run, with the timeline they were decided from."""

    timeline: Timeline
    verdicts: list[Verdict]
    run_dir: Path | None = None

    @classmethod
    def of(cls, events: Sequence[Event], run_dir: Path | None = None) -> RunResult:
        """Judge a journal: the only place where a timeline is built and verdicts decided."""
        timeline = build(events)
        return cls(timeline, judge(timeline), run_dir)

    @property
    def events(self) -> Sequence[Event]:
        return self.timeline.events

    @property
    def failed(self) -> set[str]:
        return {v.name for v in self.verdicts if v.failed}

    def verdict(self, name: str) -> Verdict:
        for verdict in self.verdicts:
            if verdict.name == name:
                return verdict
        raise KeyError(f"no verdict named {name!r}")

    def status(self, name: str) -> Status:
        return self.verdict(name).status

    @property
    def missing_evidence(self) -> list[str]:
        """What the journal lacks for its verdicts to be trusted; empty when it is whole."""
        kinds = {event.kind for event in self.timeline.events}
        missing = []
        if Kind.RUN_START not in kinds:
            missing.append("the journal has no run.start: it is not the journal of a whole run")
        if kinds & {Kind.SIGNAL_SENT, Kind.POD_DELETED} and Kind.SERVER_EXITED not in kinds:
            missing.append("the server's exit is not in the journal: the run did not finish")
        scenario = self.timeline.scenario
        crashed = self.timeline.integrity.get("error") if self.timeline.integrity is not None else None
        if crashed:
            missing.append(f"the integrity check crashed ({exception_line(crashed)}); its traceback is in the report")
        if scenario is not None and scenario.integrity and Kind.INTEGRITY_CHECKED not in kinds:
            missing.append(f"the integrity check {scenario.integrity} was asked for; its result is not in the journal")
        if all(v.status == Status.NOT_APPLICABLE for v in self.verdicts):
            missing.append("no verdict applied: nothing was judged")
        elif self._nothing_in_flight(scenario):
            missing.append(
                "nothing was in flight at the stop signal: every request had been answered and every task "
                "had ended; make the work outlast the start (a longer --request-seconds, a slower endpoint)"
            )
        return missing

    def _nothing_in_flight(self, scenario: Scenario | None) -> bool:
        """The scenario put work in flight, yet none of it was in flight when the signal came."""
        timeline = self.timeline
        if scenario is None or scenario.signal_at != "in-flight" or timeline.signal is None or timeline.rollout:
            return False
        if not (scenario.requests or scenario.background):
            return False
        return not timeline.in_flight_at_signal() and not timeline.tasks_running_at_signal()

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_FAILED
        if self.missing_evidence:
            return EXIT_BAD_INPUT
        return EXIT_PASSED

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_PASSED

    def explain(self) -> str:
        """Every verdict with its evidence, as plain text (for assertion messages and logs)."""
        lines = []
        for verdict in self.verdicts:
            lines.append(f"{verdict.status.value:>14} {verdict.name}: {verdict.summary}")
            lines.extend(f"{'':>16}- {item}" for item in verdict.evidence)
        lines.extend(f"{'incomplete':>14}: {item}" for item in self.missing_evidence)
        return "\n".join(lines)

    def write(self, out: Path, *, junit: Path | None = None) -> None:
        """report.json, timeline.html and JUnit XML (in `out`, or JUnit where asked)."""
        from chaos.reports.html import write_html
        from chaos.reports.json import write_json
        from chaos.reports.junit import write_junit

        write_json(out / REPORT_FILE, self.timeline, self.verdicts)
        write_html(out / HTML_FILE, self.timeline, self.verdicts)
        write_junit(junit or out / JUNIT_FILE, self.timeline, self.verdicts)
