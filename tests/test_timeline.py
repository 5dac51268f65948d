"""
The journal folded into a timeline, from small hand-written journals: when each worker's
teardown began and why, when a request's or a task's work really stopped, time zero of the
reports, the windows when the harness froze the server, and how the server died.
"""

from __future__ import annotations

import pytest

from chaos.journal import Kind
from chaos.scenario import Scenario
from tests.journals import HARNESS, WORKER, Journal, graceful, ns

# --- each worker's teardown ----------------------------------------------------------------------


def test_teardown_begins_with_lifespan_shutdown_when_it_comes_first() -> None:
    worker = graceful().pool(-800, closed=255).timeline().workers[WORKER]
    assert (worker.shutdown_received, worker.pool_closed) == (ns(250), ns(255))
    assert worker.teardown == ns(250)
    assert worker.teardown_cause == "lifespan shutdown began"
    assert worker.shutdown_complete == ns(260) and worker.startup_complete == ns(-900)


def test_teardown_begins_when_the_pool_closes_before_lifespan_shutdown() -> None:
    worker = Journal().startup().pool(-800, closed=30).signal(0).shutdown(250, complete=260).timeline().workers[WORKER]
    assert worker.teardown == ns(30)
    assert worker.teardown_cause == "the pool closed"


def test_a_worker_that_never_tore_down() -> None:
    worker = Journal().startup().request("r1", start=-100, end=None).signal(0).killed(1000).timeline().workers[WORKER]
    assert worker.teardown is None and worker.shutdown_complete is None
    assert worker.last_event == ns(-100)


def test_only_the_first_shutdown_received_and_pool_close_count_and_failures_are_kept() -> None:
    journal = Journal().startup().shutdown(100, failed="boom").shutdown(200).pool(-800, closed=150).pool(-700, 300)
    worker = journal.timeline().workers[WORKER]
    assert (worker.shutdown_received, worker.pool_closed, worker.shutdown_failed) == (ns(100), ns(150), "boom")


def test_each_process_is_its_own_worker_and_the_harness_is_none() -> None:
    journal = Journal().startup(pid=7).startup(pid=8).signal(0, target=7).exit(10)
    timeline = journal.timeline()
    assert set(timeline.workers) == {7, 8}
    assert HARNESS not in timeline.workers


# --- when work really stopped ------------------------------------------------------------------


def test_a_request_seen_from_both_sides() -> None:
    view = graceful().timeline().requests["r1"]
    assert (view.pid, view.path, view.status, view.end_outcome) == (WORKER, "/slow", 200, "returned")
    assert (view.start, view.response_end, view.end) == (ns(-100), ns(199.9), ns(200))
    assert view.client_outcome == "ok" and view.client is not None and view.client.t == ns(201)
    assert view.work_end == ns(200)


def test_a_requests_work_ends_when_the_app_last_journaled_for_it() -> None:
    """A `def` endpoint's thread outlives its cancelled call: the last event naming it counts."""
    journal = (
        Journal()
        .startup()
        .request("r1", start=-100, end=100, outcome="cancelled")
        .add(450, "app.query", request="r1")  # its thread, still working
    )
    view = journal.timeline().requests["r1"]
    assert (view.end, view.last_seen, view.work_end) == (ns(100), ns(450), ns(450))


def test_a_request_whose_call_never_ended_has_no_work_end() -> None:
    view = Journal().request("r1", start=-100, end=None, client="timeout").add(50, "app.query", request="r1").timeline()
    request = view.requests["r1"]
    assert request.end is None and request.work_end is None and request.last_seen == ns(50)
    assert request.client_outcome == "timeout"


def test_a_request_only_the_client_saw() -> None:
    view = Journal().client("s1", 100, "refused", status=None).timeline().requests["s1"]
    assert view.start is None and view.pid is None and view.client_outcome == "refused"


@pytest.mark.parametrize(
    ("journal", "work_end"),
    [
        pytest.param(Journal().task("t1", -90, -80, finished=300), ns(300), id="finished"),
        pytest.param(Journal().task("t1", -90, -80, finished=300, failed="boom"), ns(300), id="failed"),
        pytest.param(Journal().task("t1", -90, -80, cancelled=200), ns(200), id="cancelled-async"),
        pytest.param(Journal().task("t1", -90, -80, cancelled=200, sync=True), None, id="cancelled-sync-runs-on"),
        pytest.param(
            Journal().task("t1", -90, -80, cancelled=200, sync=True, finished=600), ns(600), id="cancelled-sync-ended"
        ),
        pytest.param(Journal().task("t1", -90, -80), None, id="never-ended"),
        pytest.param(Journal().task("t1", -90), None, id="never-started"),
    ],
)
def test_task_work_end(journal: Journal, work_end: int | None) -> None:
    assert journal.timeline().tasks["t1"].work_end == work_end


def test_a_task_keeps_what_its_queueing_said() -> None:
    journal = Journal().task(
        "t1", -90, -80, finished=100, failed="ValueError: x", request="b3", name="app.send", sync=True
    )
    task = journal.timeline().tasks["t1"]
    assert (task.pid, task.name, task.request, task.sync, task.spawned) == (WORKER, "app.send", "b3", True, False)
    assert (task.queued, task.started, task.finished, task.failed) == (ns(-90), ns(-80), ns(100), "ValueError: x")


# --- time zero of the reports ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("journal", "origin"),
    [
        pytest.param(graceful(), ns(0), id="the-stop-signal"),
        pytest.param(Journal().pod_deleted(-300).signal(0).exit(10), ns(-300), id="the-pod-deletion"),
        pytest.param(
            Journal().run_start(rollout={"pod": "web"}).pod_deleted(-300, pod="a").pod_deleted(400, pod="b"),
            ns(-300),
            id="the-first-pod-deletion-of-a-rollout",
        ),
        pytest.param(Journal().startup(-500).request("r1", -100, 100), ns(-501), id="the-first-event"),
        pytest.param(Journal(), 0, id="an-empty-journal"),
    ],
)
def test_origin(journal: Journal, origin: int) -> None:
    assert journal.timeline().origin == origin


def test_times_are_rendered_relative_to_the_origin() -> None:
    timeline = graceful().timeline()
    assert (timeline.at(ns(1203)), timeline.at(ns(-50)), timeline.at(None)) == ("+1.203s", "-0.050s", "never")
    assert timeline.seconds(ns(0), ns(1500)) == 1.5


def test_the_first_signal_is_the_stop_signal_and_every_one_is_kept() -> None:
    timeline = graceful().signal(500, "SIGINT").timeline()
    assert (timeline.signal, timeline.signal_name) == (ns(0), "SIGTERM")
    assert [event.get("signal") for event in timeline.signals] == ["SIGTERM", "SIGINT"]


# --- frozen windows and death ------------------------------------------------------------------


def test_stopped_windows_pair_each_sigstop_with_the_next_sigcont() -> None:
    journal = (
        graceful()
        .signal(-600, "SIGSTOP")
        .signal(-400, "SIGCONT")
        .signal(-300, "SIGCONT")  # a stray SIGCONT opens nothing
        .signal(100, "SIGSTOP")
        .signal(150, "SIGCONT")
        .signal(500, "SIGSTOP")  # never continued: no window
    )
    assert journal.timeline().stopped_windows() == [(ns(-600), ns(-400)), (ns(100), ns(150))]


@pytest.mark.parametrize(
    ("journal", "died"),
    [
        pytest.param(graceful(), False, id="clean-exit"),
        pytest.param(Journal().signal(0).exit(10, returncode=-15), True, id="died-of-its-signal"),
        pytest.param(Journal().signal(0).killed(1000), True, id="sigkilled"),
        pytest.param(Journal().signal(0).exit(10, returncode=1), False, id="exit-code-1"),
        pytest.param(Journal().signal(0), False, id="no-exit-recorded"),
    ],
)
def test_died_by_signal(journal: Journal, died: bool) -> None:
    assert journal.timeline().died_by_signal is died


def test_the_sigkill_and_the_exit_are_kept() -> None:
    timeline = Journal().signal(0).killed(1000).timeline()
    assert timeline.sigkill == ns(1000)
    assert timeline.exit is not None and timeline.exit.get("exit_code") == 137


# --- what the run journaled about itself ---------------------------------------------------------


def test_run_start_gives_the_scenario_and_the_kind_of_run() -> None:
    scenario = Scenario(app="app.main:app", grace=7.0, background_policy="allow-cancel")
    rollout = {"pod": "web", "replicas": 3}
    timeline = Journal().run_start(scenario=scenario, rollout=rollout).timeline()
    assert timeline.scenario == scenario
    assert (timeline.rollout, timeline.replay) == (rollout, {})
    replay = Journal().run_start(replay={"pod": "web", "propagation": 1.0}).timeline()
    assert (replay.rollout, replay.replay) == ({}, {"pod": "web", "propagation": 1.0})


def test_the_router_the_findings_and_the_integrity_check() -> None:
    journal = (
        Journal()
        .pod_deleted(0)
        .add(10, "router.upstream_failed", HARNESS, endpoint="pod", error="reset")
        .router_removed(300)
        .router_removed(700)
        .add(-999, "manifest.finding", HARNESS, code="no-prestop", severity="error", message="m")
        .integrity(900, ["x"])
    )
    timeline = journal.timeline()
    assert (timeline.deleted, timeline.routed_until) == (ns(0), ns(700))
    assert [event.get("error") for event in timeline.upstream_failures] == ["reset"]
    assert [event.get("code") for event in timeline.findings] == ["no-prestop"]
    assert timeline.integrity is not None and timeline.integrity.get("problems") == ["x"]


def test_pool_loop_and_probe_errors_are_collected() -> None:
    journal = (
        graceful()
        .pool(-800, closed=255)
        .add(100, "loop.stall", stalled_ms=300, frame="f")
        .add(110, "loop.lag", lag_ms=400)
        .add(120, "probe.error", message="bad")
    )
    timeline = journal.timeline()
    assert [event.kind for event in timeline.pool_events] == ["pool.open", "pool.closed"]
    assert [event.kind for event in timeline.stalls] == ["loop.stall", "loop.lag"]
    assert [event.get("message") for event in timeline.errors] == ["bad"]


def test_every_injected_fault_is_on_the_console_timeline() -> None:
    from chaos.reports.console import timeline_lines

    journal = Journal().startup().signal(0).add(300, Kind.FAULT_INJECTED, HARNESS, fault="crash-worker@0.3", target=7)
    lines = timeline_lines(journal.exit(400).timeline())
    assert any("fault crash-worker@0.3 injected at pid 7" in line and "+0.300s" in line for line in lines), lines


def test_what_a_request_and_a_task_raised_and_where_is_on_the_console_timeline() -> None:
    from chaos.reports.console import timeline_lines

    journal = Journal().startup().signal(0)
    journal.add(
        50, Kind.REQUEST_END, request="r1", outcome="error", error="KeyError: 'sku'", raised_at="shop.py:9 in buy"
    )
    journal.add(60, Kind.TASK_FAILED, task="a1", error="ValueError: bad\n  detail", raised_at="jobs.py:3 in send")
    lines = "\n".join(timeline_lines(journal.exit(400).timeline()))
    assert "request r1 error: KeyError: 'sku' (at shop.py:9 in buy)" in lines, lines
    assert "failed: ValueError: bad detail (at jobs.py:3 in send)" in lines, lines


@pytest.mark.parametrize(
    ("probed", "how", "says"),
    [
        (True, {"signal": "SIGKILL", "account": "read by drainspec"}, "worker 7 died of SIGKILL (read by drainspec)"),
        (True, {"exit_code": 3}, "worker 7 exited with code 3 (its parent)"),
        (False, {"exit_code": 0}, "process 7 exited with code 0 (its parent)"),
    ],
    ids=["signal", "exit-code", "not-a-worker"],
)
def test_each_workers_death_is_on_the_console_timeline(probed, how, says) -> None:
    """
    A worker its arbiter SIGKILLed dies in the middle of the story: the timeline must tell it. A
    process below the server that never loaded the probe (multiprocessing's resource tracker
    under uvicorn --workers) is no worker, and is not called one.
    """
    from chaos.reports.console import timeline_lines

    journal = Journal().startup()
    if probed:
        journal.startup(pid=7)
    journal.signal(0).exit(400).add(410, Kind.WORKER_EXITED, HARNESS, target=7, **how)
    lines = timeline_lines(journal.timeline())
    assert any(says in line and "+0.410s" in line for line in lines), lines


def test_resources_of_the_same_name_and_kind_are_told_apart_by_their_worker() -> None:
    """Each worker opens its own engine on the same URL; a report must not name two as one."""
    other = WORKER + 1
    journal = (
        graceful()
        .resource("a", -800, closed=255)
        .resource("b", -800, pid=other)
        .resource("c", -700, name="redis://cache:6379/0", type="Redis")
        .resource("d", -700, name="redis://cache:6379/0", type="redis pool")
    )
    timeline = journal.timeline()
    labels = {key: timeline.label(resource) for key, resource in timeline.resources.items()}
    assert labels == {
        "a": f"postgresql://db:5432/shop (asyncpg pool) of worker {WORKER}",
        "b": f"postgresql://db:5432/shop (asyncpg pool) of worker {other}",
        "c": "redis://cache:6379/0 (Redis)",
        "d": "redis://cache:6379/0 (redis pool)",
    }
    alone = graceful().resource("a", -800, closed=255).timeline()
    assert alone.label(alone.resources["a"]) == "postgresql://db:5432/shop"  # no clash, no suffix


@pytest.mark.parametrize(("completed", "shown"), [(-100, False), (2000, True)], ids=["before-the-signal", "after"])
def test_a_startup_the_stop_signal_came_during_is_on_the_console_timeline(completed, shown) -> None:
    """`--signal-at startup`: when the startup completed, after the signal, is part of the story."""
    from chaos.reports.console import timeline_lines

    journal = Journal().add(-300, Kind.STARTUP_RECEIVED).signal(0).add(completed, Kind.STARTUP_COMPLETE)
    lines = timeline_lines(journal.shutdown(2050, complete=2060).exit(2100).timeline())
    assert any("lifespan.startup.complete" in line and "+2.000s" in line for line in lines) is shown, lines
