"""
End-to-end runs of real uvicorn processes on the reference service and its faulty variants:
the correct app passes every verdict, and each mistake fails exactly the verdicts it should.
"""

from __future__ import annotations

import importlib

import pytest

from chaos.judge.verdict import Fate, Status, fate_of
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

VARIANTS = [
    "pool_closed_on_sigterm",
    "blocking_background",
    "exit_skips_teardown",
    "fire_and_forget",
    "slow_teardown",
]
NOT_APPLICABLE_WITHOUT_ROUTER = {"no-refused-while-routed", "rollout-zero-failed-requests", "no-proxy-errors"}


def test_reference_app_passes_every_verdict(run_scenario):
    result = run_scenario()
    assert result.failed == set(), result.explain()
    not_applicable = {v.name for v in result.verdicts if v.status == Status.NOT_APPLICABLE}
    assert not_applicable == NOT_APPLICABLE_WITHOUT_ROUTER, result.explain()
    fates = {fate_of(result.timeline, task) for task in result.timeline.tasks.values()}
    assert fates == {Fate.COMPLETED}
    scenario_tasks = [task for task in result.timeline.tasks.values() if task.request in ("b1", "b2")]
    assert len(scenario_tasks) == 4  # two deliveries for each of the two registrations


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS)
def test_faulty_variant_fails_exactly_its_verdicts(run_scenario, variant):
    module = importlib.import_module(f"app.variants.{variant}")
    result = run_scenario(
        app=f"app.variants.{variant}:app",
        grace=2.0,
        env={"REFERENCE_TEARDOWN_SECONDS": "10"},
    )
    assert result.failed == set(module.FAILS), result.explain()


def test_blocking_frame_is_named(run_scenario):
    result = run_scenario(app="app.variants.blocking_background:app")
    evidence = "\n".join(str(item) for item in result.verdict("loop-not-blocked").evidence)
    assert "app/variants/blocking_background.py:" in evidence and "in deliver" in evidence
    assert str(ROOT) not in evidence  # named as the user names the file, from where the server runs


def test_graceful_timeout_shorter_than_the_work_is_reported(run_scenario):
    """
    1. Sync requests hold pool connections in threads; background deliveries are running.
    2. SIGINT with uvicorn --timeout-graceful-shutdown 1 (whole seconds only).
    3. uvicorn cancels what is left, then runs lifespan shutdown at once.
    Result: 500s, a cancelled task and a never-started one, and sync work that finishes in its
    thread after teardown, on a closed pool.
    """
    result = run_scenario(
        request_path="GET /slow-sync?seconds={seconds}",
        request_seconds=1.8,
        background_seconds=2.0,
        signal="INT",
        server_args=("--timeout-graceful-shutdown", "1"),
    )
    assert {"inflight-completed", "background-fate", "teardown-after-drain"} <= result.failed
    statuses = {r.client.get("status") for r in result.timeline.requests.values() if r.id.startswith("r")}
    assert statuses == {500}, result.explain()
    fates = {fate_of(result.timeline, task) for task in result.timeline.tasks.values()}
    assert {Fate.CANCELLED, Fate.DROPPED} <= fates, result.explain()
    assert "no-use-after-close" in result.failed, result.explain()
    assert "teardown-ran" not in result.failed


def test_sigterm_exit_code_is_reported_as_the_runtime_would(run_scenario):
    result = run_scenario(background=0)
    assert result.timeline.exit is not None
    assert result.timeline.exit.get("exit_code") == 143  # uvicorn re-raises SIGTERM
    assert "with code 143" in result.verdict("within-grace").summary


@pytest.mark.parametrize(
    ("app", "fails"),
    [
        pytest.param("app.main:app", set(), id="reference"),
        pytest.param(
            "app.variants.slow_startup:app", {"teardown-ran", "within-grace", "resources-closed"}, id="slow-startup"
        ),
    ],
)
def test_a_pod_deleted_while_it_starts(run_scenario, app, fails):
    """
    1. The server starts; its lifespan startup begins.
    2. SIGTERM comes before the startup is complete (`--signal-at startup`).
    Result: the reference app finishes starting, then tears down within the grace; a startup
    longer than the grace is SIGKILLed with its pool open, and no teardown ever runs.
    """
    result = run_scenario(app=app, signal_at="startup", grace=1.5, integrity=None)
    assert result.failed == fails, result.explain()
    assert result.missing_evidence == [], result.explain()
    kinds = [e.kind for e in result.timeline.events]
    assert kinds.index("lifespan.startup.received") < kinds.index("signal.sent")
    if fails:  # the reference startup may finish before the signal lands: only the slow one is sure
        assert "lifespan.startup.complete" not in kinds


@pytest.mark.parametrize(
    ("signal_at", "blocked", "fails"),
    [
        pytest.param("in-flight", "0.5", set(), id="signal-once-serving"),
        pytest.param("startup", "2", {"loop-not-blocked"}, id="signal-while-blocked"),
    ],
)
def test_a_loop_blocked_at_startup(run_scenario, signal_at, blocked, fails):
    """
    1. The lifespan startup blocks the loop (`time.sleep` in `load_certificates`), then the
       app serves as the reference does.
    2. SIGTERM comes once it serves, or while its loop is blocked (`--signal-at startup`).
    Result: a stall before anything was served and before the shutdown began held nothing up,
    and is named without failing; a stall the signal had to wait out fails loop-not-blocked.
    """
    result = run_scenario(
        app="tests.apps.blocks_at_startup:app",
        signal_at=signal_at,
        grace=5.0,
        integrity=None,
        env={"BLOCKS_AT_STARTUP_SECONDS": blocked},
    )
    assert result.failed == fails, result.explain()
    kinds = [event.kind for event in result.timeline.events]
    stalled = max(index for index, kind in enumerate(kinds) if kind in ("loop.lag", "loop.stall"))
    served = kinds.index("lifespan.startup.complete")
    assert stalled < served, result.explain()  # the stall ended before the app served
    verdict = result.verdict("loop-not-blocked")
    if fails:
        assert kinds.index("signal.sent") < stalled, result.explain()
        assert any("blocks_at_startup.py" in str(item) for item in verdict.evidence), result.explain()
    else:
        assert "the loop stalled at startup" in verdict.summary, verdict.summary
        assert "in load_certificates" in verdict.summary, verdict.summary
