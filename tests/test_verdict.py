"""
Every verdict decided from small hand-written journals, with no server started: a pass, a fail
and (where there is one) a not-applicable case each; every background-task fate; the evidence
each check names for reports to point at; and a rolling update's journal, judged as one.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import cast

import pytest
from rich.console import Console

from chaos.journal import Kind
from chaos.judge.verdict import (
    PER_POD_REASON,
    ROLLOUT_REASON,
    Evidence,
    Fate,
    Status,
    Verdict,
    VerdictName,
    fate_of,
    service_fate,
)
from chaos.reports.console import print_console
from chaos.reports.html import build_markers
from chaos.reports.json import REPORT_SCHEMA, to_dict, write_json
from chaos.reports.junit import write_junit
from chaos.scenario import Scenario
from chaos.servers import SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP, running_servers
from tests.journals import HARNESS, WORKER, Journal, graceful, ns

ROLLOUT = {"pod": "web", "replicas": 2, "max_surge": 1, "max_unavailable": 0, "propagation": 0.2}
REPLAY = {"pod": "web", "container": "app", "propagation": 0.5, "seed": None, "prestop": "sleep 1s"}


REFUSED = "connect() failed (111: Connection refused) while connecting to upstream"
RESET = "upstream prematurely closed connection while reading response header from upstream"


def proxied(*requests: tuple[str, int, list[tuple[str, str, str]]]) -> Journal:
    """A replay behind a real proxy: per request its final status and (pod, status, error) attempts."""
    journal = replay(*("ok" if status < 500 else "refused" for _, status, _ in requests))
    for n, (request_id, status, attempts) in enumerate(requests, start=1):
        tried = [
            {"addr": f"127.0.0.1:{8000 + i}", "pod": pod, "status": code, "connect": "0.000", "error": error}
            for i, (pod, code, error) in enumerate(attempts)
        ]
        journal.add(
            100 + 50 * n,
            Kind.PROXY_REQUEST,
            HARNESS,
            id=request_id,
            request="GET /readyz HTTP/1.1",
            status=status,
            proxy_connection=n,
            attempts=tried,
        )
    return journal


def replay(*outcomes: str) -> Journal:
    """A one-pod replay: the pod deleted at 0, routed until 500 ms, one steady request per outcome."""
    journal = Journal().run_start(replay=REPLAY).startup().pod_deleted(0)
    for n, outcome in enumerate(outcomes, start=1):
        journal.client(f"s{n}", 100 + 50 * n, outcome, sent=50 * n, status=200 if outcome == "ok" else None)
    return journal.router_removed(500).signal(600).shutdown(650, complete=660).exit(700)


def rollout(*outcomes: str) -> Journal:
    """A rolling update of two pods (each the app as PID 1), one steady request per outcome."""
    journal = Journal().run_start(rollout=ROLLOUT)
    for pod in ("web-old1", "web-new2"):
        journal.add(-800, "pod.started", HARNESS, target=5000, pod=pod)
        journal.startup(-700, pid=1)
        journal.add(-600, "server.ready", HARNESS, port=8000, pod=pod)
    for n, outcome in enumerate(outcomes, start=1):
        journal.client(f"s{n}", -400 + 100 * n, outcome, sent=-450 + 100 * n, status=200 if outcome == "ok" else None)
    return journal.pod_deleted(0, pod="web-old1").router_removed(200, "web-old1").signal(300, target=5000)


# --- one table: every verdict passes, fails and (where it can) does not apply ------------------

P, F, NA = Status.PASS, Status.FAIL, Status.NOT_APPLICABLE
V = VerdictName
SUMMARY_ONLY = {V.WITHIN_GRACE, V.SIGNAL_REACHES_APP}  # their summary is the whole story

CASES = [
    # inflight-completed
    pytest.param(V.INFLIGHT_COMPLETED, P, graceful(), "all 1 in-flight", id="inflight-pass"),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        F,
        graceful().request("r2", start=-50, end=150, client="reset", status=None),
        "1 of 2 in-flight requests failed",
        id="inflight-fail-reset",
    ),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        F,
        graceful().request("r2", start=-50, end=None, client=None),
        "1 of 2",
        id="inflight-fail-no-client-record",
    ),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        NA,
        Journal().startup().request("r1", start=-100, end=200),
        "no stop signal",
        id="inflight-na-no-signal",
    ),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        NA,
        Journal().startup().request("r1", start=-300, end=-100).signal(0).exit(300),
        "the app had answered all 1 request(s) the run sent before it",
        id="inflight-na-answered-before-the-signal",
    ),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        F,
        Journal().startup().request("r1", start=-100, end=200, client="unexpected-status", status=401).signal(0),
        "1 of 1 in-flight requests failed",
        id="inflight-fail-unexpected-status",
    ),
    pytest.param(
        V.INFLIGHT_COMPLETED,
        NA,
        Journal().startup().request("r1", start=100, end=200).signal(0).exit(300),
        "no request was in flight",
        id="inflight-na-nothing-in-flight",
    ),
    # teardown-after-drain
    pytest.param(V.TEARDOWN_AFTER_DRAIN, P, graceful(), "teardown followed the drain on 1", id="after-drain-pass"),
    pytest.param(
        V.TEARDOWN_AFTER_DRAIN,
        F,
        Journal().startup().request("r1", start=-100, end=200).signal(0).shutdown(50, complete=60).exit(300),
        "teardown began while work was still in flight",
        id="after-drain-fail-shutdown-first",
    ),
    pytest.param(
        V.TEARDOWN_AFTER_DRAIN,
        F,
        Journal().startup().pool(-800, closed=10).task("t1", -50, -40, finished=400).signal(0).exit(500),
        "still in flight",
        id="after-drain-fail-pool-closed-under-a-task",
    ),
    pytest.param(
        V.TEARDOWN_AFTER_DRAIN,
        NA,
        Journal().startup().request("r1", start=-100, end=200).signal(0).killed(1000),
        "no worker began teardown",
        id="after-drain-na",
    ),
    # no-use-after-close
    pytest.param(V.NO_USE_AFTER_CLOSE, P, graceful().pool(-800, closed=255), "no use of the pool", id="pool-pass"),
    pytest.param(
        V.NO_USE_AFTER_CLOSE,
        F,
        graceful().pool(-800, closed=255).add(270, "pool.use_after_close", use="query", request="b1", thread="t-1"),
        "used 1 time(s) after it closed",
        id="pool-fail",
    ),
    pytest.param(V.NO_USE_AFTER_CLOSE, NA, graceful(), "no pool events", id="pool-na"),
    # nothing-left-running
    pytest.param(V.NOTHING_LEFT_RUNNING, P, graceful().swept(320), "no process the servers started", id="left-pass"),
    pytest.param(
        V.NOTHING_LEFT_RUNNING,
        F,
        graceful().swept(320, "python worker.py --forever"),
        "1 process(es) started by the app outlived the server",
        id="left-fail-escaped",
    ),
    pytest.param(V.NOTHING_LEFT_RUNNING, NA, graceful(), "no end-of-run sweep", id="left-na"),
    # resources-closed
    pytest.param(
        V.RESOURCES_CLOSED, P, graceful().resource("db", -800, closed=255), "all 1 resource(s) closed", id="res-pass"
    ),
    pytest.param(
        V.RESOURCES_CLOSED,
        F,
        graceful().resource("db", -800).resource("cache", -700, closed=260, name="redis://cache:6379/0"),
        "1 of 2 resource(s) never closed",
        id="res-fail-left-open",
    ),
    pytest.param(V.RESOURCES_CLOSED, NA, graceful(), "no resource was seen opening; record others", id="res-na"),
    pytest.param(
        V.RESOURCES_CLOSED,
        NA,
        graceful().add(-899, Kind.STARTUP_COMPLETE, unhooked=["psycopg2", "pymongo"]),
        "no resource was seen opening; the app loaded psycopg2 and pymongo, which drainspec does not hook; record",
        id="res-na-names-what-the-app-loaded-unseen",
    ),
    pytest.param(
        V.NO_USE_AFTER_CLOSE,
        NA,
        graceful().add(-899, Kind.STARTUP_COMPLETE, unhooked=["pymongo"]),
        "pool events; the app loaded pymongo, which drainspec does not hook: drainspec sees SQLAlchemy",
        id="use-na-names-what-the-app-loaded-unseen",
    ),
    # background-fate
    pytest.param(V.BACKGROUND_FATE, P, graceful().task("t1", -90, -80, finished=150), "1 completed", id="bg-pass"),
    pytest.param(
        V.BACKGROUND_FATE,
        P,
        graceful()
        .run_start(scenario=Scenario(app="app.main:app", background_policy="allow-cancel"))
        .task("t1", -90, -80, cancelled=240),
        "policy 'allow-cancel'",
        id="bg-pass-cancel-allowed",
    ),
    pytest.param(
        V.BACKGROUND_FATE,
        F,
        Journal().startup().task("t1", -90, -80).signal(0).killed(1000),
        "broke the 'complete' policy: 1 killed",
        id="bg-fail-killed",
    ),
    pytest.param(
        V.BACKGROUND_FATE,
        P,
        graceful().task("t0", -400, -390, finished=-300, request="preflight-b").task("t1", -90, -80, finished=150),
        "2 task(s): 2 completed; 1 of them queued by the preflight's request",
        id="bg-pass-preflight-named",
    ),
    pytest.param(V.BACKGROUND_FATE, NA, graceful(), "no background task", id="bg-na"),
    pytest.param(
        V.BACKGROUND_FATE,
        P,
        graceful().service("a1", -850, cancelled=255),
        "1 task(s) started at startup, all ended before teardown completed (policy 'complete')",
        id="bg-pass-service-stopped-by-teardown",
    ),
    pytest.param(
        V.BACKGROUND_FATE,
        F,
        graceful().service("a1", -850, cancelled=270),
        "1 of 1 task(s) the app started at startup outlived its teardown",
        id="bg-fail-service-cancelled-after-the-shutdown",
    ),
    pytest.param(
        V.BACKGROUND_FATE,
        F,
        graceful().task("t1", -90, -80, finished=150).service("a1", -850),
        "1 of 1 task(s) the app started at startup outlived its teardown; 1 task(s): 1 completed",
        id="bg-fail-service-never-ended",
    ),
    pytest.param(
        V.BACKGROUND_FATE,
        F,
        graceful().service("a1", -850, pending=260, cancel_requested=True),
        "1 of 1 task(s) the app started at startup outlived its teardown",
        id="bg-fail-service-cancelled-not-awaited",
    ),
    pytest.param(
        V.TEARDOWN_AFTER_DRAIN,
        P,
        graceful().service("a1", -850, cancelled=255),
        "teardown followed the drain on 1 worker(s)",
        id="drain-pass-a-service-is-not-work-to-drain",
    ),
    # teardown-ran
    pytest.param(V.TEARDOWN_RAN, P, graceful(), "completed on 1 worker", id="teardown-pass"),
    pytest.param(
        V.TEARDOWN_RAN,
        F,
        Journal().startup().request("r1", start=-100, end=200).signal(0).exit(300),
        "did not complete on 1 of 1",
        id="teardown-fail-never-began",
    ),
    pytest.param(
        V.TEARDOWN_RAN,
        F,
        Journal().startup().signal(0).shutdown(10, failed="pool.close() raised").exit(300),
        "did not complete",
        id="teardown-fail-failed",
    ),
    pytest.param(
        V.TEARDOWN_RAN,
        NA,
        Journal().add(-900, "probe.loaded").signal(0).exit(10),
        "no lifespan startup",
        id="teardown-na-no-lifespan",
    ),
    # loop-not-blocked
    pytest.param(V.LOOP_NOT_BLOCKED, P, graceful(), "no event-loop stall", id="loop-pass"),
    pytest.param(
        V.LOOP_NOT_BLOCKED,
        P,
        graceful()
        .signal(20, "SIGSTOP")
        .signal(220, "SIGCONT")
        .add(230, "loop.lag", lag_ms=300)  # 200 of its 300 ms with the process frozen
        .run_start(scenario=Scenario(app="app.main:app", stall_ms=250)),
        "1 stall(s) while the harness had the process frozen",
        id="loop-pass-frozen-by-sigstop",
    ),
    pytest.param(
        V.LOOP_NOT_BLOCKED,
        F,
        graceful().add(100, "loop.stall", stalled_ms=600, frame="app/main.py:42 in deliver"),
        "the event loop was blocked",
        id="loop-fail",
    ),
    pytest.param(
        V.LOOP_NOT_BLOCKED,
        P,
        graceful()
        .add(-950, "loop.stall", stalled_ms=260, frame="app/main.py:9 in lifespan")
        .add(-920, "loop.lag", lag_ms=300),
        "(the loop stalled at startup, up to 300 ms, in app/main.py:9 in lifespan, before the process served",
        id="loop-pass-stall-at-startup",
    ),
    pytest.param(
        V.LOOP_NOT_BLOCKED,
        F,
        Journal().run_start().signal(-950).add(-920, "loop.lag", lag_ms=300).startup().exit(300),
        "the event loop was blocked",
        id="loop-fail-stall-at-startup-that-held-up-the-signal",
    ),
    pytest.param(
        V.LOOP_NOT_BLOCKED,
        F,
        graceful().add(-890, "loop.lag", lag_ms=300),
        "the event loop was blocked",
        id="loop-fail-stall-once-serving",
    ),
    pytest.param(
        V.LOOP_NOT_BLOCKED, NA, Journal().signal(0).exit(10), "no server process loaded the probe", id="loop-na"
    ),
    # no-refused-while-routed
    pytest.param(V.NO_REFUSED_WHILE_ROUTED, P, replay("ok", "ok"), "all 2 requests sent", id="routed-pass"),
    pytest.param(
        V.NO_REFUSED_WHILE_ROUTED,
        F,
        replay("ok", "refused", "reset"),
        "2 of 3 requests failed while still routed",
        id="routed-fail",
    ),
    pytest.param(V.NO_REFUSED_WHILE_ROUTED, NA, graceful(), "no router in this run", id="routed-na-no-router"),
    pytest.param(V.NO_REFUSED_WHILE_ROUTED, NA, replay(), "no request was sent while", id="routed-na-no-request"),
    pytest.param(V.NO_REFUSED_WHILE_ROUTED, NA, rollout("ok"), ROLLOUT_REASON, id="routed-na-rollout"),
    # no-proxy-errors
    pytest.param(
        V.NO_PROXY_ERRORS,
        P,
        proxied(("s1", 200, [("web", "502", REFUSED), ("web-2", "200", "")])),
        "it retried 1 request(s) on another pod",
        id="proxy-pass",
    ),
    pytest.param(
        V.NO_PROXY_ERRORS,
        F,
        proxied(("s1", 200, [("web", "200", "")]), ("s2", 502, [("web", "502", RESET)])),
        "1 of 2 request(s) got a proxy error (502/503/504) (1 keep-alive)",
        id="proxy-fail",
    ),
    pytest.param(V.NO_PROXY_ERRORS, NA, replay("ok"), "no ingress proxy in this run", id="proxy-na"),
    # within-grace
    pytest.param(V.WITHIN_GRACE, P, graceful(), "exited on its own 0.300s after SIGTERM", id="grace-pass"),
    pytest.param(
        V.WITHIN_GRACE,
        F,
        Journal().startup().signal(0).shutdown(10).killed(1000),
        "SIGKILLed at +1.000s",
        id="grace-fail",
    ),
    pytest.param(V.WITHIN_GRACE, NA, Journal().startup().exit(10), "not stopped by a signal", id="grace-na"),
    # signal-reaches-app
    pytest.param(V.SIGNAL_REACHES_APP, P, graceful(), "shutdown began at +0.250s", id="signal-pass"),
    pytest.param(
        V.SIGNAL_REACHES_APP,
        F,
        Journal().startup().signal(0, target=77, handled=False, comm="sh").killed(1000),
        "never reached the app",
        id="signal-fail-wrapper-shell",
    ),
    pytest.param(
        V.SIGNAL_REACHES_APP,
        P,
        Journal().startup().request("r1", start=-100, end=None).signal(0, handled=False).exit(5, returncode=-15),
        "TERM killed the app outright: the app has no handler for it (see teardown-ran)",
        id="signal-pass-killed-outright",
    ),
    pytest.param(
        V.SIGNAL_REACHES_APP,
        NA,
        Journal().startup().request("r1", start=-100, end=200),
        "no stop signal",
        id="signal-na",
    ),
    # data-integrity
    pytest.param(V.DATA_INTEGRITY, P, graceful().integrity(400, []), "found every confirmed write", id="data-pass"),
    pytest.param(
        V.DATA_INTEGRITY,
        F,
        graceful().integrity(400, ["order b1 confirmed but missing"]),
        "found 1 problem(s)",
        id="data-fail",
    ),
    pytest.param(V.DATA_INTEGRITY, NA, graceful(), "no integrity check", id="data-na"),
    # rollout-zero-failed-requests
    pytest.param(V.ROLLOUT_ZERO_FAILED, P, rollout("ok", "ok", "ok"), "all 3 requests", id="rollout-pass"),
    pytest.param(
        V.ROLLOUT_ZERO_FAILED,
        F,
        rollout("ok", "refused", "ok", "refused", "timeout"),
        "3 of 5 requests during the rolling update failed (2 refused, 1 timeout)",
        id="rollout-fail",
    ),
    pytest.param(V.ROLLOUT_ZERO_FAILED, F, rollout(), "no request was sent during the rollout", id="rollout-fail-none"),
    pytest.param(V.ROLLOUT_ZERO_FAILED, NA, replay("ok"), "not a rolling update", id="rollout-na"),
]


@pytest.mark.parametrize(("name", "status", "journal", "says"), CASES)
def test_verdict(name: VerdictName, status: Status, journal: Journal, says: str) -> None:
    verdict = journal.verdict(name)
    assert (verdict.status, verdict.name) == (status, name.value), verdict
    assert says in verdict.summary
    assert all(isinstance(item, Evidence) and item.text for item in verdict.evidence)
    if status == Status.FAIL and name not in SUMMARY_ONLY and "no request" not in says:
        assert verdict.evidence, "a failure names what failed"


def _statuses_by_name() -> dict[str, set[Status]]:
    seen: dict[str, set[Status]] = {}
    for case in CASES:
        name, status = case.values[0], case.values[1]
        assert isinstance(name, VerdictName) and isinstance(status, Status)
        seen.setdefault(name.value, set()).add(status)
    return seen


@pytest.mark.parametrize(
    "journal",
    [
        pytest.param(Journal().startup().request("r1", -300, -100, role="steady").signal(0), id="not-the-run's"),
        pytest.param(Journal().startup().request("r1", -300, -100).request("r2", 100, 200).signal(0), id="one-after"),
        pytest.param(Journal().startup().request("r1", -300, -100).signal(0).request("r2", 100, 200), id="sent-after"),
    ],
)
def test_inflight_completed_says_the_app_answered_first_only_of_the_runs_requests_all_answered_before(
    journal: Journal,
) -> None:
    verdict = journal.verdict(V.INFLIGHT_COMPLETED)
    assert verdict.status == Status.NOT_APPLICABLE
    assert verdict.summary == "no request was in flight inside the app at the stop signal"


def test_every_verdict_has_a_pass_and_a_fail_case() -> None:
    covered = {name for name, statuses in _statuses_by_name().items() if {Status.PASS, Status.FAIL} <= statuses}
    assert {name.value for name in VerdictName} == covered


def test_every_verdict_that_can_be_not_applicable_has_a_case() -> None:
    """A verdict that is n/a on an empty journal has an n/a case in the table."""
    empty = Journal().verdicts()
    can_be_na = {verdict.name for verdict in empty if verdict.status == Status.NOT_APPLICABLE}
    assert can_be_na == {name.value for name in VerdictName}
    assert {name for name, statuses in _statuses_by_name().items() if Status.NOT_APPLICABLE in statuses} == can_be_na


def test_verdicts_come_in_the_order_of_their_names() -> None:
    assert [verdict.name for verdict in graceful().verdicts()] == [name.value for name in VerdictName]


# --- every fate of a background task -----------------------------------------------------------


def _fates(journal: Journal) -> Iterator[tuple[str, Fate]]:
    timeline = journal.timeline()
    for task in timeline.tasks.values():
        yield task.id, fate_of(timeline, task)
    for task in timeline.service_tasks.values():
        yield task.id, service_fate(timeline, task)


FATE_CASES = [
    pytest.param(graceful().task("t1", -90, -80, finished=150), Fate.COMPLETED, id="completed"),
    pytest.param(graceful().task("t1", -90, -80, cancelled=240), Fate.CANCELLED, id="cancelled"),
    pytest.param(graceful().task("t1", -90), Fate.DROPPED, id="dropped"),
    pytest.param(
        Journal().startup().task("t1", -90, -80).signal(0).shutdown(10).killed(1000), Fate.KILLED, id="killed"
    ),
    pytest.param(graceful().task("t1", -90, -80), Fate.ABANDONED, id="abandoned-after-clean-shutdown"),
    pytest.param(
        Journal().startup().task("t1", -90, -80).signal(0).shutdown(250, complete=260).exit(300, returncode=-15),
        Fate.ABANDONED,
        id="abandoned-though-the-server-re-raised-sigterm",
    ),
    pytest.param(Journal().startup().task("t1", -90, -80).signal(0).exit(300), Fate.LOST, id="lost"),
    pytest.param(
        Journal()
        .startup()
        .task("t1", -90, -80)
        .add(-50, Kind.FAULT_INJECTED, HARNESS, fault="crash-worker@0.05", target=WORKER)
        .signal(0)
        .exit(300),
        Fate.KILLED,
        id="killed-by-crash-worker-fault",
    ),
    pytest.param(
        Journal()
        .startup()
        .task("t1", -90, -80)
        .signal(0)
        .shutdown(10)
        .add(200, Kind.WORKER_EXITED, HARNESS, target=WORKER, signal="SIGKILL")
        .exit(300),
        Fate.KILLED,
        id="killed-by-its-arbiter-at-the-graceful-timeout",
    ),
    pytest.param(
        graceful().task("t1", -90, -80).add(300, Kind.WORKER_EXITED, HARNESS, target=WORKER, signal="SIGTERM"),
        Fate.ABANDONED,
        id="abandoned-though-its-worker-re-raised-sigterm",  # gunicorn: "Worker (pid:N) was sent SIGTERM!"
    ),
    pytest.param(
        Journal()
        .startup()
        .task("t1", -90, -80)
        .signal(0)
        .add(200, Kind.WORKER_EXITED, HARNESS, target=WORKER, signal="SIGTERM")
        .exit(300),
        Fate.KILLED,
        id="killed-by-sigterm-before-any-shutdown",  # a worker with no handler dies of it
    ),
    pytest.param(graceful().task("t1", -90, -80, finished=100, failed="ValueError: boom"), Fate.FAILED, id="failed"),
    pytest.param(graceful().task("t1", -90, -80, finished=280), Fate.RAN_AFTER_TEARDOWN, id="ran-after-teardown"),
    pytest.param(
        graceful().task("t1", -90, -80, cancelled=240, sync=True),
        Fate.ABANDONED,
        id="cancelled-sync-thread-ran-on-is-abandoned",
    ),
    pytest.param(
        Journal().startup().task("t1", -90, -80, cancelled=240, sync=True).signal(0).killed(1000),
        Fate.KILLED,
        id="cancelled-sync-thread-ran-on-until-sigkill",
    ),
    pytest.param(
        graceful().task("t1", -90, -80, cancelled=240, sync=True, finished=400),
        Fate.RAN_AFTER_TEARDOWN,
        id="cancelled-sync-thread-finished-after-teardown",
    ),
    pytest.param(graceful().service("t1", -850, cancelled=255), Fate.STOPPED, id="service-stopped-by-teardown"),
    pytest.param(graceful().service("t1", -850, finished=255), Fate.STOPPED, id="service-told-to-finish"),
    pytest.param(
        graceful().service("t1", -850, cancelled=270), Fate.ABANDONED, id="service-cancelled-after-the-shutdown"
    ),
    pytest.param(Journal().startup().service("t1", -850).signal(0).killed(1000), Fate.KILLED, id="service-killed"),
]


@pytest.mark.parametrize(("journal", "fate"), FATE_CASES)
def test_fate_of(journal: Journal, fate: Fate) -> None:
    assert dict(_fates(journal)) == {"t1": fate}


def test_every_fate_is_covered() -> None:
    assert {case.values[1] for case in FATE_CASES} == set(Fate)


# --- what the evidence names -------------------------------------------------------------------


def test_failed_inflight_completed_names_the_request_and_when_the_client_saw_it() -> None:
    journal = graceful().request("r2", start=-50, end=150, client="reset", status=None)
    (item,) = journal.verdict(VerdictName.INFLIGHT_COMPLETED).evidence
    assert (item.request, item.t, item.task, item.worker) == ("r2", ns(151), None, None)
    assert str(item) == "r2 /slow: client saw reset at +0.151s; the app's call returned at +0.150s"


def test_failed_teardown_after_drain_names_the_worker_then_each_live_request_and_task() -> None:
    journal = (
        Journal()
        .startup(pid=7)
        .request("r1", start=-100, end=200, pid=7)
        .task("t1", -90, -80, finished=400, request="b1", pid=7)
        .request("r9", start=-100, end=-60, pid=7)
        .signal(0, target=7)
        .shutdown(50, complete=500, pid=7)
        .exit(600)
    )
    head, request, task = journal.verdict(VerdictName.TEARDOWN_AFTER_DRAIN).evidence
    assert str(head) == "worker 7: lifespan shutdown began at +0.050s while still running:"
    assert (head.worker, head.t, head.request) == (7, ns(50), None)
    assert str(request) == "request r1 /slow (ended +0.200s)"
    assert (request.request, request.worker, request.t) == ("r1", 7, ns(200))
    assert str(task) == "task app.deliver [t1] (work ended +0.400s)"
    assert (task.task, task.request, task.worker) == ("t1", "b1", 7)


def test_passed_teardown_after_drain_has_one_note_per_worker() -> None:
    journal = Journal()
    for pid in (7, 8):
        journal.startup(pid=pid).request(f"r{pid}", start=-100, end=100, pid=pid).shutdown(200, complete=210, pid=pid)
    journal.signal(0, target=7).exit(300)
    verdict = journal.verdict(VerdictName.TEARDOWN_AFTER_DRAIN)
    assert verdict.status == Status.PASS
    assert [(item.worker, str(item)) for item in verdict.evidence] == [
        (7, "worker 7: lifespan shutdown began at +0.200s, after all its work had ended"),
        (8, "worker 8: lifespan shutdown began at +0.200s, after all its work had ended"),
    ]


def test_work_that_went_on_after_the_call_is_named_with_its_real_end() -> None:
    journal = (
        Journal()
        .startup()
        .request("r1", start=-100, end=100)
        .add(400, "app.query", request="r1")  # a def endpoint's thread, still working
        .signal(0)
        .shutdown(200, complete=500)
        .exit(600)
    )
    _, item = journal.verdict(VerdictName.TEARDOWN_AFTER_DRAIN).evidence
    assert str(item) == "request r1 /slow (its call ended +0.100s, its work went on until +0.400s)"
    assert item.t == ns(400)


def test_use_after_close_names_the_worker_the_request_and_the_time() -> None:
    journal = graceful().pool(-800, closed=255).add(270, "pool.use_after_close", use="query", request="b1")
    (item,) = journal.verdict(VerdictName.NO_USE_AFTER_CLOSE).evidence
    assert (item.worker, item.request, item.t) == (WORKER, "b1", ns(270))
    assert str(item) == f"+0.270s pid {WORKER}: query by request b1"


def test_background_fate_names_the_task_its_request_and_worker() -> None:
    journal = Journal().startup().task("t1", -90, -80, request="b2").signal(0).killed(1000)
    (item,) = journal.verdict(VerdictName.BACKGROUND_FATE).evidence
    assert (item.task, item.request, item.worker, item.t) == ("t1", "b2", WORKER, ns(1000))  # dated at its kill
    assert str(item) == "app.deliver [t1] of request b2: killed (started -0.080s, never ended)"


def test_teardown_ran_names_the_worker_and_the_sigkill() -> None:
    journal = Journal().startup().signal(0).killed(1000)
    worker, sigkill = journal.verdict(VerdictName.TEARDOWN_RAN).evidence
    assert worker.worker == WORKER and "lifespan shutdown never began" in str(worker)
    assert (sigkill.worker, sigkill.t, str(sigkill)) == (None, ns(1000), "SIGKILL was sent at +1.000s")


def test_loop_not_blocked_names_the_worker_and_the_time() -> None:
    journal = graceful().add(100, "loop.stall", stalled_ms=600, frame="app/main.py:42 in deliver")
    (item,) = journal.verdict(VerdictName.LOOP_NOT_BLOCKED).evidence
    assert (item.worker, item.t) == (WORKER, ns(100))
    assert str(item) == f"+0.100s pid {WORKER}: loop stalled for 600 ms so far, blocked in app/main.py:42 in deliver"


def test_refused_while_routed_names_each_request_and_when_it_was_sent() -> None:
    items = replay("ok", "refused").verdict(VerdictName.NO_REFUSED_WHILE_ROUTED).evidence
    assert [(item.request, item.t, str(item)) for item in items] == [("s2", ns(100), "s2 GET / sent +0.100s: refused")]


def test_rollout_failures_are_listed_up_to_twenty_then_counted() -> None:
    journal = rollout(*["ok"] * 3, *["reset"] * 22, "server-error")
    verdict = journal.verdict(VerdictName.ROLLOUT_ZERO_FAILED)
    assert verdict.summary == "23 of 26 requests during the rolling update failed (22 reset, 1 server-error)"
    *listed, more = verdict.evidence
    assert len(listed) == 20 and str(more) == "... and 3 more" and more.request is None
    assert [item.request for item in listed] == [f"s{n}" for n in range(4, 24)]
    assert str(listed[0]) == "s4 GET / sent -0.050s: reset" and listed[0].t == ns(-50)


def test_evidence_prints_as_its_sentence_and_serialises_only_what_it_names() -> None:
    item = Evidence("worker 7: pool closed", worker=7, t=5)
    assert str(item) == f"{item}" == "worker 7: pool closed"
    assert item.to_dict() == {"text": "worker 7: pool closed", "worker": 7, "t": 5}
    assert Evidence("plain").to_dict() == {"text": "plain"}
    full = Evidence("x", request="r1", task="t1", worker=0, t=0)
    assert full.to_dict() == {"text": "x", "request": "r1", "task": "t1", "worker": 0, "t": 0}


# --- a rolling update is judged as one -----------------------------------------------------------


def _rollout_with_shared_pids() -> Journal:
    """
    Two pods whose apps are both PID 1: the old pod tears down while the new one serves, and the
    first signal precedes requests that other pods answer. Judged per server, it would fail.
    """
    journal = rollout("ok", "ok")
    journal.request("s10", start=-100, end=900, client="ok", role="steady", pid=1)  # served by the new pod
    journal.task("t1", -90, -80, request="s10", pid=1)  # the new pod's, still running
    journal.shutdown(350, complete=360, pid=1)  # the old pod's lifespan shutdown
    journal.exit(400)
    journal.add(700, "lifespan.startup.complete", 1)  # a third pod
    return journal


def test_a_rollout_is_judged_by_its_requests_and_not_per_server() -> None:
    verdicts = {verdict.name: verdict for verdict in _rollout_with_shared_pids().verdicts()}
    assert verdicts[VerdictName.ROLLOUT_ZERO_FAILED].status == Status.PASS
    assert verdicts[VerdictName.ROLLOUT_ZERO_FAILED].summary == "all 3 requests during the rolling update succeeded"
    per_rollout = {VerdictName.INFLIGHT_COMPLETED, VerdictName.NO_REFUSED_WHILE_ROUTED}
    per_pod = {
        VerdictName.TEARDOWN_AFTER_DRAIN,
        VerdictName.BACKGROUND_FATE,
        VerdictName.TEARDOWN_RAN,
        VerdictName.WITHIN_GRACE,
        VerdictName.SIGNAL_REACHES_APP,
    }
    for name in per_rollout:
        assert (verdicts[name].status, verdicts[name].summary) == (Status.NOT_APPLICABLE, ROLLOUT_REASON)
    for name in per_pod:
        assert (verdicts[name].status, verdicts[name].summary) == (Status.NOT_APPLICABLE, PER_POD_REASON)
    # What is wrong wherever it happens is still judged: here, nothing was.
    assert verdicts[VerdictName.LOOP_NOT_BLOCKED].status == Status.PASS
    assert verdicts[VerdictName.NO_USE_AFTER_CLOSE].status == Status.NOT_APPLICABLE
    assert verdicts[VerdictName.DATA_INTEGRITY].status == Status.NOT_APPLICABLE


def test_a_stall_in_any_pod_of_a_rollout_still_fails() -> None:
    journal = _rollout_with_shared_pids().add(500, "loop.stall", pid=1, stalled_ms=900, frame="app.py:1 in f")
    assert journal.verdict(VerdictName.LOOP_NOT_BLOCKED).status == Status.FAIL


# --- the evidence as the reports carry it --------------------------------------------------------


def _failing() -> tuple[Journal, list[Verdict]]:
    journal = graceful().request("r2", start=-50, end=150, client="reset", status=None)
    return journal, journal.verdicts()


def test_report_json_lists_evidence_as_objects_and_the_result(tmp_path) -> None:
    journal, verdicts = _failing()
    path = tmp_path / "out" / "report.json"
    write_json(path, journal.timeline(), verdicts)
    report = json.loads(path.read_text())
    assert report["schema"] == REPORT_SCHEMA and report["result"] == "fail"
    inflight = next(v for v in report["verdicts"] if v["name"] == "inflight-completed")
    assert inflight["status"] == "fail"
    assert inflight["evidence"] == [
        {
            "text": "r2 /slow: client saw reset at +0.151s; the app's call returned at +0.150s",
            "request": "r2",
            "t": ns(151),
        }
    ]
    assert report["rollout"] is None and report["replay"] is None
    assert to_dict(graceful().timeline(), graceful().verdicts())["result"] == "pass"
    assert to_dict(rollout("ok").timeline(), rollout("ok").verdicts())["rollout"] == ROLLOUT


def test_junit_failures_carry_each_evidence_sentence(tmp_path) -> None:
    journal, verdicts = _failing()
    path = tmp_path / "junit" / "junit.xml"
    write_junit(path, journal.timeline(), verdicts)
    suite = ET.parse(path).getroot()
    assert suite.get("tests") == str(len(VerdictName)) and suite.get("failures") == "1"
    case = next(case for case in suite if case.get("name") == "inflight-completed")
    failure = case.find("failure")
    assert failure is not None and failure.get("message") == "1 of 2 in-flight requests failed"
    assert failure.text == "r2 /slow: client saw reset at +0.151s; the app's call returned at +0.150s"


def test_the_console_prints_each_evidence_sentence() -> None:
    journal, verdicts = _failing()
    console = Console(record=True, width=200)
    print_console(console, journal.timeline(), verdicts)
    text = console.export_text()
    assert "- r2 /slow: client saw reset at +0.151s; the app's call returned at +0.150s" in text
    assert "1 verdict(s) failed: inflight-completed" in text


def test_the_console_reports_a_rollout_by_its_pods() -> None:
    journal = rollout("ok", "refused")
    console = Console(record=True, width=200)
    print_console(console, journal.timeline(), journal.verdicts())
    text = console.export_text()
    assert "rolling update: pod web, replicas 2" in text
    assert "seconds from the first pod's deletion" in text
    assert "kubelet  pod web-old1 deleted" in text and "pod web-new2 ready: routed" in text
    assert "FAIL rollout-zero-failed-requests" in text


def test_a_worker_reaped_after_its_master_exited_is_named_as_killed_everywhere() -> None:
    """
    gunicorn's arbiter SIGKILLs its worker at the graceful timeout and exits 0 without reaping
    it; drainspec, the subreaper, journals the worker's own status: every verdict that names the
    worker says it died of SIGKILL, and its task is `killed`, not `lost`.
    """
    account = "its exit status read by drainspec, its subreaper: its server exited without reaping it"
    journal = (
        Journal()
        .run_start()
        .startup()
        .resource("db", -800)
        .task("t1", -90, -80)
        .signal(0)
        .add(1000, Kind.WORKER_EXITED, HARNESS, target=WORKER, signal="SIGKILL", account=account)
        .exit(1010)
    )
    timeline = journal.timeline()
    assert fate_of(timeline, timeline.tasks["t1"]) == Fate.KILLED
    for name in (V.BACKGROUND_FATE, V.TEARDOWN_RAN, V.RESOURCES_CLOSED):
        verdict = journal.verdict(name)
        assert verdict.status == F, verdict
        assert any("died of SIGKILL" in item.text and account in item.text for item in verdict.evidence), verdict


def fire_and_forget(*, policy: str, cancelled: float, cleanup: float, closed: float) -> Journal:
    """
    A request answered before the signal that left a task of its own running (`asyncio.create_task`);
    the lifespan shutdown at 100 cancels it, its cleanup writes to the pool at `cleanup`, the task
    ends cancelled at `cancelled`, and the pool closes at `closed`.
    """
    return (
        Journal()
        .run_start(scenario=Scenario(app="app.main:app", background_policy=policy))
        .startup()
        .resource("db", -800, closed=closed, name="sqlite:///tasks.db", type="SQLAlchemy async engine")
        .request("b1", start=-300, end=-290, role="background")
        .task("a1", -295, -295, cancelled=cancelled, request="b1", name="app.process_task", spawned=True)
        .use("db", cleanup, cleanup + 1, op="UPDATE tasks SET", task="a1", request="b1")
        .signal(0)
        .shutdown(100, complete=closed + 2)
        .exit(closed + 10)
    )


@pytest.mark.parametrize(
    ("journal", "passes"),
    [
        pytest.param(
            fire_and_forget(policy="allow-cancel", cancelled=130, cleanup=110, closed=140),
            True,
            id="cancelled-awaited-then-closed",
        ),
        pytest.param(
            fire_and_forget(policy="complete", cancelled=130, cleanup=110, closed=140),
            False,
            id="the-complete-policy-wants-it-finished",
        ),
        pytest.param(
            fire_and_forget(policy="allow-cancel", cancelled=150, cleanup=145, closed=140),
            False,
            id="cancelled-not-awaited-cleanup-after-the-close",
        ),
    ],
)
def test_a_task_the_teardown_cancels_and_awaits_before_closing_the_pool(journal, passes):
    """
    The shutdown of an app that tracks its fire-and-forget tasks: cancel them, await them (their
    cleanup still writes to the pool), then dispose of the pool. Under `allow-cancel` that is the
    drain the app means; cancelled without waiting, the cleanup lands on a closed pool.
    """
    teardown = journal.verdict(V.TEARDOWN_AFTER_DRAIN)
    use = journal.verdict(V.NO_USE_AFTER_CLOSE)
    assert (teardown.status, use.status) == ((P, P) if passes else (F, F)), (teardown, use)
    if passes:
        assert "but 1 job(s) it cancelled and awaited before closing the pool" in teardown.evidence[0].text
    else:
        assert any("a1" in item.text for item in teardown.evidence), teardown.evidence


def _dropped_close(ms: float) -> Journal:
    """The pool left open by a lifespan shutdown (250..260) that called `pool.close()` unawaited at `ms`."""
    return graceful().resource("db", -800).add(ms, Kind.APP_UNAWAITED, coroutine="Pool.close", where="app/main.py:31")


def test_a_close_the_shutdown_never_awaited_is_named_beside_the_resource_it_left_open() -> None:
    verdict = _dropped_close(255).verdict(V.RESOURCES_CLOSED)
    assert verdict.status == F
    assert str(verdict.evidence[0]).endswith(
        "lifespan shutdown completed at +0.260s without closing it; the shutdown dropped Pool.close() at "
        "app/main.py:31 without awaiting it (a missing `await`?)"
    )
    console = Console(record=True, width=200)
    print_console(console, _dropped_close(255).timeline(), [verdict])
    assert "[4242] coroutine Pool.close never awaited (dropped at app/main.py:31)" in console.export_text()


def test_a_coroutine_dropped_before_the_shutdown_is_not_blamed_for_what_it_left_open() -> None:
    verdict = _dropped_close(-500).verdict(V.RESOURCES_CLOSED)
    assert verdict.status == F and "dropped" not in str(verdict.evidence[0])


SUPERVISOR = 4000  # the app's own script, supervising its workers: it imports the app, never loads it


@pytest.mark.parametrize(
    ("opened_by", "used", "status", "says"),
    [
        pytest.param({"pid": SUPERVISOR}, False, NA, "which never loaded the app", id="supervisor-idle"),
        pytest.param({"pid": SUPERVISOR}, True, F, "1 of 1 resource(s) never closed", id="supervisor-used"),
        pytest.param({"main_rerun": True}, False, NA, "re-ran the script's main module", id="rerun-idle"),
        pytest.param({"main_rerun": True}, True, F, "1 of 1 resource(s) never closed", id="rerun-used"),
        pytest.param({}, False, F, "1 of 1 resource(s) never closed", id="the-workers-own"),
    ],
)
def test_an_engine_made_where_the_app_never_serves_and_never_used_is_not_judged(opened_by, used, status, says):
    pid = opened_by.get("pid", WORKER)
    fields = {"resource": "e1", "name": "sqlite (in memory)", "library": "sqlalchemy", "type": "SQLAlchemy engine"}
    fields.update({key: value for key, value in opened_by.items() if key != "pid"})
    journal = graceful().add(-950, Kind.PROBE_LOADED, app="main:app").add(-990, Kind.RESOURCE_OPEN, pid, **fields)
    if used:
        journal.add(-50, Kind.RESOURCE_USE, pid, resource="e1", op="SELECT 1", start=ns(-60))
    verdict = journal.verdict(V.RESOURCES_CLOSED)
    assert verdict.status == status, verdict
    assert says in verdict.summary + " ".join(map(str, verdict.evidence)), verdict


def test_a_journal_without_the_app_loaded_judges_every_resource():
    verdict = graceful().resource("db", -800).verdict(V.RESOURCES_CLOSED)
    assert verdict.status == F and "never closed" in verdict.summary


FIRST, SECOND = 4301, 4302  # two workers forked from SUPERVISOR after it made its engine at import


def _forked_engine(*, second_closes: bool = True, preloaded: bool = False) -> Journal:
    """
    An engine made at import in an arbiter (gunicorn's `--preload`, a script's own
    `BaseApplication`), each worker forked with a copy of its own: SECOND has no request and
    disposes its copy at once (+100); FIRST's request queries its copy after that (+200), then
    its shutdown disposes it (+260). A worker that never touched its copy has no event of it:
    what its copy holds is what the arbiter's held, set aside as never used.
    """
    fields = {"name": "sqlite (in memory)", "library": "sqlalchemy", "type": "SQLAlchemy engine"}
    journal = Journal().run_start().add(-990, Kind.RESOURCE_OPEN, SUPERVISOR, resource="e1", **fields)
    for pid in (SUPERVISOR, FIRST, SECOND) if preloaded else (FIRST, SECOND):
        journal.add(-950, Kind.PROBE_LOADED, pid, app="__main__:app").startup(pid=pid)
    journal.request("r1", start=-100, end=210, pid=FIRST).use("e1", 190, 200, request="r1", pid=FIRST)
    journal.signal(0, target=SUPERVISOR).shutdown(90, complete=110, pid=SECOND).shutdown(250, complete=270, pid=FIRST)
    if second_closes:
        journal.add(100, Kind.RESOURCE_CLOSED, SECOND, resource="e1", how="dispose")
    else:  # it served a request and left its copy open
        journal.request("r2", start=-100, end=50, pid=SECOND).use("e1", -90, -80, request="r2", pid=SECOND)
    return journal.add(260, Kind.RESOURCE_CLOSED, FIRST, resource="e1", how="dispose").exit(300)


@pytest.mark.parametrize("preloaded", [False, True], ids=["script-arbiter", "preloading-arbiter"])
def test_an_engine_made_before_a_fork_is_a_copy_of_its_own_in_each_worker(preloaded):
    """
    One worker's dispose is not the other's close: each copy is judged in its own worker; the
    arbiter's original, never used, is set aside, whether or not the arbiter loaded the app.
    """
    journal = _forked_engine(preloaded=preloaded)
    assert journal.verdict(V.NO_USE_AFTER_CLOSE).status == P
    closed = journal.verdict(V.RESOURCES_CLOSED)
    assert closed.status == P and "all 2 resource(s) closed" in closed.summary, closed
    assert [(r.pid, r.closed is not None) for r in journal.timeline().idle_resources] == [(SUPERVISOR, False)]


def test_a_worker_that_used_its_forked_copy_and_never_disposed_it_is_named():
    closed = _forked_engine(second_closes=False).verdict(V.RESOURCES_CLOSED)
    assert closed.status == F and closed.summary.endswith(f"of worker {SECOND}"), closed
    assert f"opened -0.990s at import in pid {SUPERVISOR}, before the fork, never closed" in str(closed.evidence[0])


def test_each_workers_close_of_its_forked_copy_is_on_the_timeline():
    console = Console(record=True, width=200)
    journal = _forked_engine()
    print_console(console, journal.timeline(), journal.verdicts())
    text = console.export_text()
    for pid, at in ((SECOND, "+0.100s"), (FIRST, "+0.260s")):
        assert f"{at}  app  [{pid}] sqlite (in memory) (SQLAlchemy engine) of worker {pid} closed (dispose)" in text, (
            text
        )
    markers = {(marker.label, marker.t) for marker in build_markers(journal.timeline())}
    assert {("sqlite (in memory) closed [4302]", ns(100)), ("sqlite (in memory) closed [4301]", ns(260))} <= markers


def _left_open_then(returncode: int, *, script: bool = False) -> Journal:
    """An engine the lifespan shutdown (250..260) leaves open; the process then exits with `returncode`."""
    journal = Journal().run_start().startup().request("r1", start=-100, end=200).signal(0)
    if script:
        journal.add(-950, Kind.SCRIPT_SERVER, server="uvicorn", workers=1)
    return journal.resource("db", -800).shutdown(250, complete=260).exit(300, returncode=returncode)


@pytest.mark.parametrize(
    ("returncode", "script", "says"),
    [
        pytest.param(0, False, None, id="exited"),
        pytest.param(-15, False, "an `atexit` handler never closes it", id="died-of-the-signal"),
        pytest.param(-15, True, "a `finally` around `server.serve()`, code after it or an `atexit`", id="own-script"),
        pytest.param(-9, False, None, id="died-of-another-signal"),
    ],
)
def test_a_resource_left_to_code_after_the_server_returned_is_named_as_never_run(returncode, script, says):
    """
    uvicorn re-raises SIGTERM once it has shut down, and Python's default action ends the
    process: a close after `server.serve()` (a `finally`, an `atexit` handler) never runs.
    """
    verdict = _left_open_then(returncode, script=script).verdict(V.RESOURCES_CLOSED)
    evidence = str(verdict.evidence[0])
    assert verdict.status == F and "lifespan shutdown completed at +0.260s without closing it" in evidence
    if says is None:
        assert "died of" not in evidence, evidence
    else:
        assert "and the process then died of SIGTERM" in evidence and says in evidence, evidence


def test_a_service_killed_with_its_worker_is_named_as_the_lifespans_not_a_requests() -> None:
    """A queue listener the lifespan started has no request: its evidence says where it came from."""
    journal = Journal().startup().service("a1", -850, name="app.consumer.listen").signal(0).killed(3000)
    verdict = journal.verdict(V.BACKGROUND_FATE)
    assert verdict.status == Status.FAIL
    (evidence,) = verdict.evidence
    assert str(evidence).startswith("app.consumer.listen [a1], started at startup: killed (started -0.850s")
    assert "of request" not in str(evidence)


@pytest.mark.parametrize(
    ("service", "says"),
    [
        pytest.param(
            {"pending": 260, "cancel_requested": True},
            f"the teardown called its cancel() without awaiting it: still pending when worker {WORKER}'s lifespan "
            "shutdown completed at +0.260s; it never ran); await the task after cancelling it",
            id="cancel-asked-never-ran",
        ),
        pytest.param(
            {"pending": 260, "cancel_requested": True, "cancelled": 270},
            f"without awaiting it: still pending when worker {WORKER}'s lifespan shutdown completed at +0.260s; "
            "its cancellation ran at +0.270s)",
            id="cancel-asked-ran-late",
        ),
        pytest.param(
            {"pending": 260},
            f"(still running when worker {WORKER}'s lifespan shutdown completed at +0.260s; the process exited under "
            "it; the teardown never asked it to stop); stop it in the lifespan's teardown: cancel it and await it",
            id="never-asked",
        ),
        pytest.param(
            {},
            f"(still running when worker {WORKER}'s lifespan shutdown completed at +0.260s; the process exited under "
            "it); stop it",
            id="no-pending-line",
        ),
    ],
)
def test_a_service_left_pending_by_the_teardown_says_whether_it_was_asked_to_stop(service, says) -> None:
    """
    `task.cancel()` in a lifespan's teardown, not awaited, only asks: the shutdown completes with
    the task still pending, and its cancellation runs later, or never (uvicorn re-raises SIGTERM
    and the process ends at once). The evidence tells that apart from a task nobody stopped.
    """
    verdict = graceful().service("a1", -850, name="app.pubsub.notify", **service).verdict(V.BACKGROUND_FATE)
    assert verdict.status == Status.FAIL
    (evidence,) = verdict.evidence
    assert says in str(evidence), str(evidence)


@pytest.mark.parametrize(
    ("server_args", "env", "advised"),
    [
        pytest.param((), {}, True, id="unbounded-drain-advised"),
        pytest.param(("--timeout-graceful-shutdown", "1"), {}, False, id="bounded-drain-not-advised"),
        pytest.param((), {"UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "1"}, False, id="bounded-by-its-variable"),
    ],
)
def test_a_drain_killed_at_the_deadline_names_the_stream_that_held_it(server_args, env, advised) -> None:
    """An endless stream holds uvicorn's drain until SIGKILL: within-grace says which, and how to bound it."""
    journal = (
        Journal()
        .run_start(scenario=Scenario(app="app.main:app", grace=3, server_args=server_args, env=env))
        .startup()
        .request("r1", start=-50, end=None, path="/subscribe", client="truncated")
        .add(-40, Kind.RESPONSE_START, request="r1", status=200)
        .signal(0)
        .killed(3000)
    )
    verdict = journal.verdict(V.WITHIN_GRACE)
    assert verdict.status == Status.FAIL
    texts = [str(item) for item in verdict.evidence]
    assert texts[0] == (
        "r1 /subscribe, in flight since -0.050s: its response begun (HTTP 200) and its body never ended: "
        "a stream nobody ended"
    )
    advice = "bound it: uvicorn --timeout-graceful-shutdown 1 (the grace less a 2 s margin)"
    assert any(advice in text for text in texts) is advised


def test_a_stream_that_sent_its_headers_and_no_chunk_is_a_stream_as_its_client_saw_it() -> None:
    """The probe writes a streamed response's start with its first chunk; the client saw the headers."""
    journal = (
        Journal()
        .run_start(scenario=Scenario(app="app.main:app", grace=3))
        .startup()
        .request("r1", start=-50, end=None, path="/subscribe", client="truncated", status=200)
        .signal(0)
        .killed(3000)
    )
    (first, *_) = journal.verdict(V.WITHIN_GRACE).evidence
    assert str(first).endswith("its response begun (HTTP 200) and its body never ended: a stream nobody ended")


@pytest.mark.parametrize(
    ("outcome", "explained"),
    [
        pytest.param("cancelled", True, id="cancelled-by-the-drain-bound"),
        pytest.param("returned", False, id="still-running"),
    ],
)
def test_a_teardown_begun_under_a_request_the_server_cancelled_says_why(outcome, explained) -> None:
    """uvicorn's drain bound cancels what runs and starts the lifespan shutdown without waiting."""
    journal = (
        Journal()
        .startup()
        .request("r1", start=-50, end=1160, status=None, outcome=outcome, client="server_error")
        .signal(0)
        .shutdown(1150, complete=1170)
        .exit(1200)
    )
    verdict = journal.verdict(V.TEARDOWN_AFTER_DRAIN)
    assert verdict.status == Status.FAIL
    texts = [str(item) for item in verdict.evidence]
    assert ("request r1 /slow (cancelled, its call ended +1.160s)" in texts) is explained
    assert any("began the teardown without waiting for them to end" in text for text in texts) is explained


TRACEBACK = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/starlette/routing.py", line 664, in shutdown
    await handler()
  File "/srv/app/server_utils.py", line 10, in emulate
    raise RuntimeError("the pool would not close")
RuntimeError: the pool would not close
"""


@pytest.mark.parametrize(
    ("message", "said"),
    [
        pytest.param(
            TRACEBACK,
            "lifespan shutdown failed: RuntimeError: the pool would not close "
            "(raised at /srv/app/server_utils.py:10 in emulate)",
            id="a-traceback-in-one-line",
        ),
        pytest.param("pool.close() raised", "lifespan shutdown failed: pool.close() raised", id="a-plain-message"),
    ],
)
def test_a_failed_shutdown_says_what_raised_and_where_in_one_line(message, said) -> None:
    """uvicorn sends the whole traceback as the lifespan's failure message: the evidence reads one line of it."""
    journal = Journal().startup().signal(0).shutdown(10, failed=message).exit(300)
    (evidence,) = journal.verdict(V.TEARDOWN_RAN).evidence
    assert str(evidence) == f"worker {WORKER}: {said}"


def test_a_teardown_still_running_at_the_deadline_is_named_by_within_grace() -> None:
    """A slow lifespan shutdown, not a request, held the process: within-grace says so."""
    journal = Journal().startup().signal(0).shutdown(1050).killed(2000)
    (evidence,) = journal.verdict(V.WITHIN_GRACE).evidence
    assert str(evidence) == (
        f"worker {WORKER}: its lifespan shutdown, begun at +1.050s, had not completed: "
        "the teardown itself ran into the deadline"
    )


def starting(servers: dict[str, str]) -> Journal:
    """A worker of `servers` (as the probe journals them) whose lifespan startup has begun, its pool open."""
    return (
        Journal()
        .run_start()
        .add(-60, Kind.PROBE_LOADED, servers=servers)
        .add(-50, Kind.STARTUP_RECEIVED)
        .resource("p1", -45)
    )


@pytest.mark.parametrize(
    ("uvicorn", "startup_complete", "served", "named"),
    [
        pytest.param("0.32.0", 40, False, True, id="flawed-release-signalled-in-startup"),
        pytest.param("0.32.0", -10, False, True, id="signalled-as-it-binds-its-sockets"),
        pytest.param("0.41.0", 40, False, False, id="fixed-release"),
        pytest.param("0.32.0", -10, True, False, id="serving-before-the-signal"),
        pytest.param("?", 40, False, False, id="release-unknown"),
    ],
)
def test_a_server_that_skips_the_shutdown_after_a_signal_in_startup_is_named(
    uvicorn, startup_complete, served, named
) -> None:
    """
    uvicorn before 0.41 returns without a lifespan shutdown when the stop signal comes before
    its startup is over (which ends after the app's lifespan startup, once its sockets are bound):
    teardown-ran and resources-closed name the release and the upgrade, and only then.
    """
    journal = starting({"uvicorn": uvicorn}).add(startup_complete, Kind.STARTUP_COMPLETE)
    if served:
        journal.request("r1", start=-5, end=-2)
    journal.signal(0).exit(60, returncode=-15)
    flaw = "uvicorn 0.32.0 returns without running the lifespan shutdown when the stop signal comes before"
    for name in (V.TEARDOWN_RAN, V.RESOURCES_CLOSED):
        verdict = journal.verdict(name)
        assert verdict.status == Status.FAIL
        (evidence,) = verdict.evidence
        assert (flaw in str(evidence)) is named, str(evidence)
        if named:
            assert str(evidence).endswith(
                f"(its lifespan startup completed at {'+0.040s' if startup_complete > 0 else '-0.010s'}), and "
                + flaw
                + " its startup is over (the app's lifespan startup, then its sockets) (fixed in 0.41.0, "
                "uvicorn#2812): upgrade it, pip install 'uvicorn>=0.41.0'"
            )


@dataclass
class Frame:
    """A stack frame as `running_servers` reads one: its module's name, and its caller."""

    name: str
    f_back: Frame | None = None

    @property
    def f_globals(self) -> dict[str, str]:
        return {"__name__": self.name}


def stack(*modules: str) -> FrameType:
    """The innermost of frames in `modules`, outermost first."""
    frame = None
    for name in modules:
        frame = Frame(name, frame)
    return cast(FrameType, frame)


class Module:
    def __init__(self, version: object) -> None:
        self.__version__ = version


@pytest.mark.parametrize(
    ("frames", "running"),
    [
        pytest.param(
            ("uvicorn.main", "uvicorn.config", "importlib", "chaos.probe.asgi"), {"uvicorn": "0.32.0"}, id="uvicorn"
        ),
        pytest.param(
            ("gunicorn.arbiter", "gunicorn.workers.base", "importlib", "chaos.probe.asgi"),
            {"uvicorn": "0.32.0", "gunicorn": "23.0.0"},
            id="gunicorn-uvicorn-worker",
        ),  # fmt: skip
        pytest.param(("granian._internal", "chaos.probe.asgi"), {"granian": "2.2.1"}, id="granian-app-imports-uvicorn"),
        pytest.param(("__main__", "chaos.probe.script"), {}, id="the-apps-own-script"),
    ],
)
def test_the_servers_a_process_runs_in_are_those_on_the_stack(frames, running) -> None:
    """uvicorn is loaded in every probed process (the probe and apps import it): only the stack says who serves."""
    modules = {
        "uvicorn": Module("0.32.0"),
        "gunicorn": Module("23.0.0"),
        "uvicorn_worker": Module("0.4.0"),  # gunicorn loads its worker class: uvicorn's
        "granian": Module("2.2.1"),
        "json": Module("2"),
    }
    assert running_servers(stack(*frames), modules) == running


def test_an_unreadable_release_names_no_flaw() -> None:
    flaw = SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP
    assert flaw.found_in({"uvicorn": "0.32.0"}) == "0.32.0" and flaw.found_in({"uvicorn": "0.41.0"}) is None
    for unreadable in ("?", "dev", "", "9" * 5000):  # a journal's claim, or a server's odd release: no flaw
        assert flaw.found_in({"uvicorn": unreadable}) is None


@pytest.mark.parametrize(
    ("granian", "named"),
    [pytest.param("2.2.1", True, id="hanging-release"), pytest.param("2.2.2", False, id="fixed-release")],
)
def test_a_server_that_hangs_after_a_signal_in_startup_is_named(granian, named) -> None:
    """granian before 2.2.2 never stops a worker signalled before it serves: the deadline's SIGKILL ends it."""
    journal = (
        starting({"granian": granian})
        .signal(0)
        .add(40, Kind.STARTUP_COMPLETE)
        .sigkill(4000)
        .exit(4001, returncode=-9, killed=True)
    )
    flaw = f"granian {granian} never stops a worker the stop signal reaches before it serves"
    for name in (V.TEARDOWN_RAN, V.RESOURCES_CLOSED):
        evidence = [
            str(item) for item in journal.verdict(name).evidence if str(item).startswith(("worker", "postgresql:"))
        ]
        assert evidence and all((flaw in item) is named for item in evidence), evidence
        if named:
            assert evidence[0].endswith(
                f"{flaw}: the worker runs on until SIGKILL (fixed in 2.2.2, measured by drainspec: 2.0.0 to 2.2.1 "
                "hang, 2.2.2 and later stop): upgrade it, pip install 'granian>=2.2.2'"
            )
