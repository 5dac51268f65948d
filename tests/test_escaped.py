"""
Everything the app started is gone when the run ends, also what left the server's process tree
and session (`setsid`): killed, and journaled as `process.escaped` for the reports.
"""

from __future__ import annotations

import psutil
import pytest

from chaos.journal import Kind
from chaos.reports.json import to_dict

pytestmark = pytest.mark.e2e

HOLD = "GET /__drainspec/hold?seconds={seconds}"


@pytest.mark.parametrize(
    ("app", "found"),
    [
        pytest.param("tests.apps.detached:setsid_child", {"descendant"}, id="setsid"),
        pytest.param("tests.apps.detached:setsid_child_clean_env", {"descendant"}, id="setsid-no-environment"),
    ],
)
def test_a_detached_child_of_the_app_is_killed_and_reported(run_scenario, app, found):
    result = run_scenario(app=app, requests=1, request_seconds=0.2, background=0, request_path=HOLD, integrity=None)
    escaped = [e for e in result.timeline.events if e.kind == Kind.PROCESS_ESCAPED]
    assert len(escaped) == 1, result.explain()
    assert {e.get("found") for e in escaped} == found
    assert "time.sleep(600)" in escaped[0].get("command")
    pid = escaped[0].get("target")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    report = to_dict(result.timeline, result.verdicts)
    assert [item["pid"] for item in report["escaped_processes"]] == [pid]
    assert "nothing-left-running" in result.failed, result.explain()
    assert "time.sleep(600)" in result.verdict("nothing-left-running").evidence[0].text


def test_a_clean_run_reports_no_escaped_process(run_scenario):
    result = run_scenario(requests=1, request_seconds=0.2, background=0, request_path=HOLD, integrity=None)
    assert not [e for e in result.timeline.events if e.kind == Kind.PROCESS_ESCAPED]
    assert result.verdict("nothing-left-running").status == "pass", result.explain()
