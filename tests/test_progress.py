"""The status line follows a real run's journal through its phases, and stops with the run."""

from __future__ import annotations

import dataclasses
import io
import threading

from rich.console import Console

from chaos.lifecycle import JOURNAL_FILE, prepare_run_dir
from chaos.reports.progress import Phase, status
from chaos.runner import execute
from tests.conftest import REFERENCE, ROOT


def test_phase_follows_the_journal_of_a_real_run(run_scenario):
    result = run_scenario(requests=1, background=0)
    phase = Phase(ready_timeout=20)
    seen = []
    for event in result.timeline.events:
        phase.advance(event)
        if not seen or seen[-1] != phase.text:
            seen.append(phase.text)
    assert seen[1].startswith("waiting up to 20s for the server")
    assert seen[2] == "waiting for the work to be inside the app"
    assert seen[3].startswith("draining after SIGTERM")
    assert seen[-1] == "server exited; collecting the journal"


def test_status_line_runs_beside_a_run_and_stops_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    journal = prepare_run_dir(tmp_path / "run") / JOURNAL_FILE
    scenario = dataclasses.replace(REFERENCE, requests=1, background=0, integrity=None)
    with status(console, journal, ready_timeout=20):
        execute(scenario, tmp_path / "run")
    assert not [t for t in threading.enumerate() if t.name == "drainspec-status"]
    assert "waiting" in out.getvalue() or "draining" in out.getvalue()
