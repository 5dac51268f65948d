"""
`drainspec explore`: attempts planned from a learning run's journal, encoded in seeds that
`drainspec run --seed` replays, and the race a plain run misses found end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chaos.explore import (
    VARIANTS,
    Attempt,
    Exploration,
    Tried,
    failed_before_signal,
    margin_of,
    plan_attempts,
    teardown_lag,
)
from chaos.journal import Kind
from chaos.scenario import Scenario
from tests.conftest import ROOT
from tests.journals import Journal

SCENARIO = Scenario(app="a:b", requests=1, background=1)


@pytest.mark.parametrize(
    "attempt",
    [
        pytest.param(Attempt(0.0), id="zero"),
        pytest.param(Attempt(0.812, isolate=True), id="isolated"),
        pytest.param(Attempt(0.0, signal_at="ready"), id="ready"),
        pytest.param(Attempt(0.0, signal_at="startup"), id="startup"),
        pytest.param(Attempt(12.345), id="late"),
    ],
)
def test_a_seed_is_the_whole_attempt(attempt):
    again = Attempt.from_seed(attempt.seed)
    assert (again.offset, again.isolate, again.signal_at) == (attempt.offset, attempt.isolate, attempt.signal_at)
    scenario = again.apply(SCENARIO)
    assert scenario.signal_delay == attempt.offset and scenario.signal_at == attempt.signal_at
    assert scenario.requests == (0 if attempt.isolate else 1)


@pytest.mark.parametrize(
    ("attempt", "moment"),
    [
        pytest.param(
            Attempt(0.25, why="just before task t1 ended"),
            "at +0.250s after the work was in flight (just before task t1 ended)",
            id="in-flight",
        ),
        pytest.param(Attempt(0.0, signal_at="ready"), "once ready, with nothing in flight", id="ready"),
        pytest.param(Attempt(0.0, signal_at="startup"), "during the lifespan startup", id="startup"),
    ],
)
def test_an_attempt_says_when_its_signal_came(attempt, moment):
    """A startup attempt is not "+0.000s after the work was in flight": no work was."""
    assert attempt.moment == moment


def test_seeds_of_different_attempts_differ():
    seeds = {Attempt(offset / 1000, isolate, at).seed for offset in range(50) for isolate, at in VARIANTS}
    assert len(seeds) == 50 * len(VARIANTS)


def learning_journal() -> Journal:
    """In flight at -500 ms; a spawned task runs from -490 to -100; the slow request ends at 0."""
    journal = (
        Journal().startup().request("r1", start=-600, end=0).request("b1", start=-600, end=-480, role="background")
    )
    journal.add(-500, Kind.IN_FLIGHT, 1000, requests=["b1", "r1"])
    journal.add(-490, Kind.TASK_QUEUED, task="a1", name="app.deliver", request="b1", spawned=True)
    journal.add(-490, Kind.TASK_STARTED, task="a1")
    journal.add(-100, Kind.TASK_FINISHED, task="a1")
    return journal.signal(10).shutdown(20, complete=30).exit(40)


def test_attempts_target_the_moments_of_the_learning_run():
    attempts = plan_attempts(learning_journal().timeline(), SCENARIO)
    offsets = {(a.offset, a.isolate, a.signal_at) for a in attempts}
    assert (0.03, False, "in-flight") in offsets  # just after the spawned task started
    assert (0.38, False, "in-flight") in offsets  # just before it ended
    assert (0.48, False, "in-flight") in offsets  # just before r1 was answered
    assert any(isolate for _, isolate, _ in offsets), "a spawned task is tried with nothing else in flight"
    assert {at for _, _, at in offsets} >= {"ready", "startup"}
    assert len({a.seed for a in attempts}) == len(attempts)
    assert all(a.why for a in attempts), "every moment tried says why it was chosen"


def test_a_task_of_the_preflight_is_named_as_such():
    """The preflight's background task may still run when the work goes in flight: its moments count, named."""
    journal = learning_journal()
    journal.add(-520, Kind.TASK_QUEUED, task="t1", name="app.deliver", request="preflight-b")
    journal.add(-520, Kind.TASK_STARTED, task="t1")
    journal.add(-400, Kind.TASK_FINISHED, task="t1")
    whys = [attempt.why for attempt in plan_attempts(journal.timeline(), SCENARIO)]
    assert "just before task deliver, the preflight's [t1] ended" in whys
    assert "just after task deliver [a1] started" in whys


def test_teardown_is_aimed_inside_each_use_of_a_resource_by_untracked_work():
    """
    The spawned task writes from -300 to -280 ms; the learning run's teardown came 20 ms after
    its last request's call ended (0 to 20). The signal goes 210 ms after the work is in flight
    (-500), so that teardown falls on the write's middle (-290), with the slow requests dropped.
    """
    journal = learning_journal().resource("db", -800, closed=25, name="sqlite:///jobs.db", type="SQLAlchemy engine")
    journal.use("db", -300, -280, op="UPDATE jobs SET", task="a1", request="b1")
    journal.use("db", -590, -585, op="INSERT INTO jobs", request="b1")  # the request's own: the server waits for it
    timeline = journal.timeline()
    assert teardown_lag(timeline) == pytest.approx(0.02)
    aimed = [a for a in plan_attempts(timeline, SCENARIO) if a.why.startswith("teardown aimed inside")]
    assert [(a.offset, a.isolate) for a in aimed] == [(0.19, True)]
    assert aimed[0].why == "teardown aimed inside UPDATE jobs SET on sqlite:///jobs.db by task deliver [a1]"


def test_the_margin_counts_untracked_work_only():
    """A spawned task ending 120 ms before teardown: 0.12 s; requests (which servers wait for) don't count."""
    assert margin_of(learning_journal().timeline()) == pytest.approx(0.12)
    no_spawned = Journal().startup().request("r1", start=-600, end=15).signal(0).shutdown(20, complete=30)
    assert margin_of(no_spawned.timeline()) is None


def stalled(at_ms: float) -> Journal:
    """A drained server whose loop was blocked for 300 ms, the stall seen at `at_ms`."""
    journal = Journal().startup().request("r1", start=-600, end=100).signal(0).shutdown(150, complete=160).exit(170)
    return journal.add(at_ms, Kind.LOOP_STALL, stalled_ms=300, frame="app/users.py:22 in create_user")


@pytest.mark.parametrize(
    ("journal", "before", "irrelevant"),
    [
        pytest.param(stalled(-200), ("loop-not-blocked",), True, id="stall-before-the-signal"),
        pytest.param(stalled(50), (), False, id="stall-after-the-signal"),
        pytest.param(
            stalled(-200).request("r2", start=-500, end=None, client=None).client("r2", 300, "disconnected", sent=-501),
            ("loop-not-blocked",),
            False,
            id="and-a-request-cut-after-it",
        ),
    ],
)
def test_a_failure_older_than_the_signal_is_not_blamed_on_its_moment(journal, before, irrelevant):
    timeline = journal.timeline()
    verdicts = journal.verdicts()
    failed = tuple(sorted(v.name for v in verdicts if v.failed))
    assert "loop-not-blocked" in failed
    assert failed_before_signal(verdicts, timeline) == before
    tried = Tried(Attempt(0.2), "dir", failed, None, before_signal=before)
    assert tried.signal_irrelevant is irrelevant


FIRE_AND_FORGET = [
    "--app", "app.variants.fire_and_forget:app",
    "--requests", "1", "--request-seconds", "1.2", "--request-path", "GET /slow?seconds={seconds}",
    "--background", "1", "--background-seconds", "0.4",
    "--background-path", "POST /register/{id}?deliver_seconds={seconds}",
    "--grace", "5",
]  # fmt: skip


def drainspec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chaos.cli", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_explore_finds_the_race_a_plain_run_misses_and_run_seed_replays_it(tmp_path):
    """
    1. Requests in flight last longer than the fire-and-forget delivery: a plain run passes.
    2. Exploration puts the signal while the spawned delivery runs and nothing else holds the drain.
    Result: it fails there, names the offset and the seed; `drainspec run --seed` fails the same way.
    """
    plain = drainspec("run", *FIRE_AND_FORGET, "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    explored = drainspec("explore", *FIRE_AND_FORGET, "--jobs", "2", "--out", str(tmp_path / "explore"))
    assert explored.returncode == 1, explored.stdout + explored.stderr
    report = json.loads((tmp_path / "explore" / "explore.json").read_text())
    failure = report["first_failure"]
    assert set(failure["failed"]) >= {"teardown-after-drain"}
    assert f"--seed {failure['seed']}" in explored.stdout and f"+{failure['offset']:.3f}s" in explored.stdout
    replayed = drainspec("run", *FIRE_AND_FORGET, "--seed", str(failure["seed"]), "--out", str(tmp_path / "replay"))
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "teardown-after-drain" in replayed.stdout


@pytest.mark.e2e
def test_explore_passes_the_reference_app(tmp_path):
    args = [arg.replace("app.variants.fire_and_forget:app", "app.main:app") for arg in FIRE_AND_FORGET]
    explored = drainspec("explore", *args, "--jobs", "2", "--out", str(tmp_path / "explore"))
    assert explored.returncode == 0, explored.stdout + explored.stderr
    assert "PASS the stop signal broke nothing" in explored.stdout
    report = json.loads((tmp_path / "explore" / "explore.json").read_text())
    assert report["result"] == "pass" and len(report["attempts"]) >= 4
    assert {a["signal_at"] for a in report["attempts"]} >= {"ready", "startup"}


@pytest.mark.e2e
def test_a_loop_blocked_before_the_signal_is_not_reported_as_a_race(tmp_path):
    """
    Every request blocks the loop for 0.3 s as it begins, and the signal comes 0.6 s after the
    work is in flight: `loop-not-blocked` fails on a stall older than the signal, which explore
    says, rather than naming the signal's moment as the cause.
    """
    explored = drainspec(
        "explore", "--app", "tests.apps.hashes_in_the_loop:app", "--requests", "1", "--background", "0",
        "--request-path", "POST /users?seconds={seconds}", "--request-seconds", "0.8", "--expect-status", "201",
        "--stall-ms", "100", "--signal-delay", "0.6", "--grace", "5", "--out", str(tmp_path / "explore"),
    )  # fmt: skip
    assert explored.returncode == 1, explored.stdout + explored.stderr
    assert "loop-not-blocked failed before the stop signal was sent" in explored.stdout, explored.stdout
    assert "not a race with the signal" in explored.stdout
    failure = json.loads((tmp_path / "explore" / "explore.json").read_text())["first_failure"]
    assert failure["failed"] == failure["failed_before_signal"] == ["loop-not-blocked"]


@pytest.mark.e2e
def test_parallel_chaos_runs_match_serial_ones(tmp_path):
    common = ["--app", "app.main:app", "--requests", "1", "--request-seconds", "0.3", "--background", "0"]
    common += ["--grace", "3", "--runs", "3", "--seed", "11", "--offset", "0.2"]
    serial = drainspec("chaos", *common, "--jobs", "1", "--out", str(tmp_path / "serial"))
    parallel = drainspec("chaos", *common, "--jobs", "2", "--out", str(tmp_path / "parallel"))
    assert serial.returncode == parallel.returncode == 0, serial.stdout + parallel.stdout

    def runs(output: str) -> list[str]:
        return [line.strip() for line in output.splitlines() if line.strip().startswith("run ")]

    assert runs(serial.stdout) == runs(parallel.stdout) and len(runs(serial.stdout)) == 3


def test_a_moment_that_judged_nothing_is_neither_a_pass_nor_the_smallest_margin():
    """An attempt with nothing in flight at its signal judged nothing: its margin proves nothing."""
    nothing = ("nothing was in flight at the stop signal",)
    learning = Tried(Attempt(0.0), "learning", (), 0.300)
    judged_nothing = Tried(Attempt(0.9), "a1", (), 0.001, missing_evidence=nothing)
    broke = Tried(Attempt(0.2), "a2", ("background-fate",), None, missing_evidence=nothing)
    exploration = Exploration(learning, [judged_nothing, broke])
    assert exploration.unverified == [judged_nothing]  # a failure is a failure, evidence or not
    assert exploration.smallest_margin is learning


def test_a_resource_left_open_is_not_a_failure_before_the_signal() -> None:
    """ "Never closed" is a fact of the end: explore must not call it independent of the signal's moment."""
    from chaos.explore import failed_before_signal
    from tests.journals import Journal

    journal = Journal().startup(-900).resource("p1", -850).signal(0).shutdown(250, complete=270).exit(300)
    verdicts = journal.verdicts()
    assert any(v.name == "resources-closed" and v.failed for v in verdicts)
    assert "resources-closed" not in failed_before_signal(verdicts, journal.timeline())


@pytest.mark.parametrize(
    ("ending", "left_open"),
    [
        pytest.param("complete", ("resources-closed",), id="a-teardown-that-ran-to-its-end"),
        pytest.param("killed", (), id="killed-before-its-teardown"),
    ],
)
def test_a_resource_a_finished_teardown_left_open_is_not_the_signals_doing(ending, left_open) -> None:
    """A teardown that completes without closing a resource never closes it; a kill is the moment's doing."""
    from chaos.explore import left_open_by_teardown
    from tests.journals import Journal

    journal = Journal().startup(-900).resource("p1", -850).signal(0)
    journal = journal.shutdown(250, complete=270).exit(300) if ending == "complete" else journal.killed(1000)
    verdicts = journal.verdicts()
    assert left_open_by_teardown(verdicts, journal.timeline()) == left_open
    tried = Tried(Attempt(0.2), "dir", ("resources-closed",), None, left_open=left_open)
    assert tried.signal_irrelevant is bool(left_open)
