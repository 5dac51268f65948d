"""
drainspec must be trustworthy when things go wrong around it: its own death, apps that ignore
signals or fork, and a busy machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from chaos.journal import JournalTail, Kind
from tests.conftest import ROOT
from tests.test_bad_input import drainspec

pytestmark = pytest.mark.e2e


def _wait_for(tail: JournalTail, kind: str, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in tail.poll():
            if event.kind == kind:
                return dict(event.fields)
        time.sleep(0.01)
    raise AssertionError(f"no {kind} event within {timeout}s")


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_server_dies_with_a_killed_drainspec(tmp_path, server):
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [sys.executable, "-m", "chaos.cli", "run", "--app", "app.main:app", "--server", server,
         "--requests", "1", "--request-seconds", "30", "--background", "0", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        tail = JournalTail(out / "journal.jsonl")
        spawned = _wait_for(tail, Kind.SERVER_SPAWNED)
        _wait_for(tail, Kind.REQUEST_START)
        server_tree = [psutil.Process(int(spawned["target"]))]
        server_tree += server_tree[0].children(recursive=True)
        runner.kill()
        runner.wait(timeout=10)
        _, alive = psutil.wait_procs(server_tree, timeout=10)
        assert not alive, f"left running after drainspec was SIGKILLed: {[p.pid for p in alive]}"
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        for process in psutil.process_iter(["cmdline"]):  # never leave a stray server behind
            with contextlib.suppress(psutil.Error):
                if "chaos.probe.asgi:app" in (process.info["cmdline"] or []) and str(out) in str(process.environ()):
                    process.kill()


def test_app_that_ignores_sigterm_is_killed_at_the_grace(run_scenario):
    result = run_scenario(app="tests.apps.stubborn:ignores_sigterm", grace=1.0, requests=1, background=0,
                          request_path="GET /__drainspec/hold?seconds={seconds}", integrity=None)  # fmt: skip
    assert {"within-grace", "teardown-ran", "signal-reaches-app"} <= result.failed, result.explain()
    assert "no handler" in result.verdict("signal-reaches-app").summary


def test_forked_children_are_reaped(run_scenario):
    result = run_scenario(app="tests.apps.stubborn:forks_a_child", requests=1, background=0, grace=3.0,
                          request_path="GET /__drainspec/hold?seconds={seconds}", integrity=None)  # fmt: skip
    assert result.timeline.exit is not None
    # the autouse no_orphans fixture fails this test if the forked child survived


def test_bad_report_inputs(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result, _ = drainspec("report", str(empty))
    assert result.returncode == 2 and "holds no events" in result.stderr
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(os.urandom(64) + b"\n" + os.urandom(64) + b"\n")
    result, _ = drainspec("report", str(binary))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_unknown_subcommand_and_missing_experiment(tmp_path):
    result, _ = drainspec("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
    result, _ = drainspec("experiment", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read experiment" in result.stderr


def test_interrupted_run_cleans_up(tmp_path):
    """Ctrl-C (SIGINT to drainspec) stops the run and leaves nothing behind."""
    out = tmp_path / "out"
    runner = subprocess.Popen(
        [sys.executable, "-m", "chaos.cli", "run", "--app", "app.main:app", "--requests", "1",
         "--request-seconds", "30", "--background", "0", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        tail = JournalTail(out / "journal.jsonl")
        spawned = _wait_for(tail, Kind.SERVER_SPAWNED)
        _wait_for(tail, Kind.REQUEST_START)
        server = psutil.Process(int(spawned["target"]))
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=20)
        assert runner.returncode == 130
        assert "Traceback" not in stderr
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
