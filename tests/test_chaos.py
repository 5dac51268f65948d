"""
Faults around the stop signal, seeded repetition and experiment files, each on real servers.
Each fault is shown to change the verdicts it should, against the same run without it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.errors import SetupError
from chaos.experiment import Experiment, load_experiment, run_experiment, tally, unmet_expectations, wilson_interval
from chaos.faults import parse_fault
from tests.conftest import REFERENCE, ROOT

BASE = dataclasses.replace(REFERENCE, request_seconds=0.8, background=1, background_seconds=0.8, grace=3.0)

FAULT_CASES = [
    pytest.param(
        "second-signal:INT@0.2",
        {"inflight-completed", "teardown-ran", "background-fate", "resources-closed"},
        id="term-then-int",
    ),
    pytest.param(
        "sigkill@0.2", {"inflight-completed", "teardown-ran", "background-fate", "resources-closed"}, id="sigkill"
    ),
    pytest.param("teardown-delay:4", {"teardown-ran", "within-grace"}, id="slow-teardown"),
    pytest.param(
        "stream:inf", {"inflight-completed", "teardown-ran", "within-grace", "resources-closed"}, id="endless-stream"
    ),
    pytest.param("stall:0.4@0.1", set(), id="sigstop-stall"),
    pytest.param("websocket", set(), id="websocket"),
    pytest.param("keepalive@0.2", set(), id="idle-keepalive"),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("fault", "fails"), FAULT_CASES)
def test_fault_changes_exactly_these_verdicts(run_scenario, fault, fails):
    result = run_scenario(BASE, faults=(fault,))
    assert result.failed == fails, result.explain()


@pytest.mark.e2e
def test_second_sigterm_is_harmless(run_scenario):
    """uvicorn forces exit only on a second SIGINT: a second SIGTERM changes nothing."""
    result = run_scenario(BASE, faults=("second-signal:TERM@0.2",))
    assert result.failed == set(), result.explain()


@pytest.mark.e2e
def test_websocket_is_closed_with_1012(run_scenario):
    result = run_scenario(BASE, faults=("websocket",))
    closed = [e for e in result.timeline.events if e.kind == "client.websocket"]
    assert [e.get("code") for e in closed] == [1012]


@pytest.mark.e2e
def test_keepalive_connection_reused_after_signal_is_not_served(run_scenario):
    result = run_scenario(BASE, faults=("keepalive@0.2",))
    reuse = result.timeline.requests["ka2"].client
    assert reuse is not None and reuse.get("outcome") != "ok"  # uvicorn closed the idle connection


@pytest.mark.e2e
def test_stall_is_excused_but_a_real_block_is_not(run_scenario):
    result = run_scenario(BASE, faults=("stall:0.4@0.1",))
    assert "SIGSTOP" in result.verdict("loop-not-blocked").summary
    blocked = run_scenario(BASE, app="app.variants.blocking_background:app", faults=("stall:0.4@0.1",))
    assert "loop-not-blocked" in blocked.failed


@pytest.mark.e2e
def test_seeded_runs_replay_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    experiment = Experiment(
        scenario=BASE, faults=("second-signal:INT@0.1", "stall:0.2@0.1"), offset=0.6, runs=3, seed=11
    )
    outcomes = run_experiment(experiment, tmp_path / "a")
    assert [o.seed for o in outcomes] == experiment.run_seeds()
    again = run_experiment(experiment, tmp_path / "b", replay_seed=outcomes[0].seed)
    assert (again[0].offset, again[0].fault) == (outcomes[0].offset, outcomes[0].fault)
    rows = {row.name: row for row in tally(outcomes)}
    assert all(row.runs == 3 for row in rows.values())
    failing = [o for o in outcomes if "teardown-ran" in o.failed]
    assert rows["teardown-ran"].failing_seeds == tuple(o.seed for o in failing)


@pytest.mark.e2e
@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_files_meet_their_expectations(tmp_path, monkeypatch, path):
    monkeypatch.chdir(ROOT)
    experiment = load_experiment(path)
    outcomes = run_experiment(experiment, tmp_path)
    assert unmet_expectations(experiment, outcomes) == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("offset", "code", "says"),
    [
        pytest.param("0.1", 0, "0/2 inflight-completed", id="signal-with-the-work-in-flight"),
        pytest.param("1.5", 2, "not verified: 2 of 2 run(s) lack the evidence", id="signal-after-the-work-ended"),
    ],
)
def test_a_chaos_run_that_judged_nothing_is_no_pass(tmp_path, offset, code, says):
    """
    Seed 6 places the signals 0.8 and 1.2 s after 0.3 s requests went in (with --offset 1.5):
    nothing is in flight, the runs judge nothing, and the experiment must not exit 0 on them.
    A verdict n/a in every run is shown as such, not as "0/2".
    """
    result = subprocess.run(
        [
            sys.executable, "-m", "chaos.cli", "chaos", "--app", "app.main:app", "--runs", "2", "--seed", "6",
            "--offset", offset, "--requests", "1", "--request-seconds", "0.3", "--background", "0", "--grace", "5",
            "--jobs", "1", "--out", str(tmp_path / "out"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    assert says in result.stdout
    assert "n/a no-refused-while-routed (applied in no run)" in result.stdout


def test_wilson_interval_brackets_the_rate():
    low, high = wilson_interval(1, 10)
    assert low < 0.1 < high
    assert wilson_interval(0, 50)[0] == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode", "unknown fault 'explode'"),
        ("second-signal:NOPE@0.1", "unknown signal"),
        ("stall:abc@0.1", "could not convert"),
        ("sigkill@-1", "must not be negative"),
    ],
)
def test_bad_faults_are_named(text, message):
    with pytest.raises(SetupError, match=message):
        parse_fault(text)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\n", "scenario"),
        ("scenario: {app: 'a:b'}\nbogus: 1\n", "unknown key"),
        ("scenario: {app: 'a:b', nosuch: 1}\n", "unknown scenario key"),
        ("scenario: {app: 'a:b'}\nexpect: {fail: [not-a-verdict]}\n", "unknown verdict"),
        ("scenario: [\n", "not valid YAML"),
    ],
)
def test_bad_experiment_files(tmp_path: Path, content, message):
    path = tmp_path / "e.yaml"
    path.write_text(content)
    with pytest.raises(SetupError, match=message):
        load_experiment(path)
