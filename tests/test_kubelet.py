"""
The kubelet's stop window: T minus the whole seconds preStop took, never under 2 s, with or
without a preStop hook (research/k8s.md, "Kubelet arithmetic the emulator should reproduce").
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import pytest

from chaos.journal import JournalWriter, Kind, read_journal
from chaos.k8s import kubelet


@pytest.mark.parametrize(
    ("grace", "prestop_took", "window"),
    [
        pytest.param(1, 0.0, 2.0, id="T=1-no-prestop"),
        pytest.param(0, 0.0, 2.0, id="T=0-no-prestop"),
        pytest.param(30, 0.0, 30.0, id="T=30-no-prestop"),
        pytest.param(30, 5.7, 25.0, id="hook-5.7s"),
        pytest.param(30, 29.9, 2.0, id="hook-29.9s-floor"),
        pytest.param(30, 31.0, 2.0, id="hook-abandoned"),
    ],
)
def test_the_stop_window(grace, prestop_took, window):
    assert kubelet.remaining_grace(grace, prestop_took) == window


def _terminate_and_capture(tmp_path, monkeypatch, grace: float, prestop: kubelet.PreStop | None) -> float:
    """Run `terminate` on a real process; capture the window it waits (the process is then gone)."""
    waited: list[float] = []

    async def fake_wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int | None:
        waited.append(timeout)
        return process.wait()

    monkeypatch.setattr(kubelet, "wait_exit", fake_wait_exit)
    process = subprocess.Popen(["sleep", "30"])
    journal = JournalWriter(tmp_path / "journal.jsonl")
    try:
        asyncio.run(
            kubelet.terminate(process, stop_signal=signal.SIGTERM, grace=grace, journal=journal, prestop=prestop)
        )
    finally:
        process.kill()
        process.wait()
        journal.close()
    return waited[0]


@pytest.mark.parametrize("grace", [0.0, 1.0])
def test_terminate_applies_the_floor_without_a_prestop_hook(tmp_path, monkeypatch, grace):
    assert _terminate_and_capture(tmp_path, monkeypatch, grace, None) == 2.0


def test_terminate_applies_the_floor_after_a_prestop_hook(tmp_path, monkeypatch):
    async def hook(limit: float) -> str:
        return "done"

    assert _terminate_and_capture(tmp_path, monkeypatch, 1.0, hook) == 2.0
    assert _terminate_and_capture(tmp_path, monkeypatch, 8.0, hook) == 8.0


IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(30)"
)


@pytest.mark.e2e
def test_a_process_ignoring_sigterm_with_a_one_second_grace_gets_two(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    journal = JournalWriter(tmp_path / "journal.jsonl")
    started = time.monotonic()
    try:
        result = asyncio.run(kubelet.terminate(process, stop_signal=signal.SIGTERM, grace=1.0, journal=journal))
    finally:
        journal.close()
    took = time.monotonic() - started
    assert result.killed and 2.0 <= took < 3.5, took
    events = read_journal(tmp_path / "journal.jsonl")
    signal_t = next(e.t for e in events if e.kind == Kind.SIGNAL_SENT)
    kill = next(e for e in events if e.kind == Kind.SIGKILL_SENT)
    assert kill.get("after") == 2.0 and (kill.t - signal_t) / 1e9 >= 2.0


@pytest.mark.e2e
def test_ctrl_c_during_a_replay_is_one_line_and_reaps_everything(tmp_path):
    """SIGINT while the pod terminates: exit 130, one line, no CancelledError traceback, no process left."""
    import os
    import subprocess as sp

    import psutil

    from chaos.journal import JournalTail
    from tests.conftest import ROOT

    out = tmp_path / "out"
    runner = sp.Popen(
        [sys.executable, "-m", "chaos.cli", "k8s", "k8s/deployment.yaml", "--out", str(out), "--request-seconds", "10"],
        cwd=ROOT, stdout=sp.DEVNULL, stderr=sp.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        tail = JournalTail(out / "journal.jsonl")
        pod, deleted, deadline = None, False, time.monotonic() + 30
        while not deleted and time.monotonic() < deadline:
            for event in tail.poll():
                pod = event.get("target") if event.kind == Kind.POD_STARTED else pod
                deleted = deleted or event.kind == Kind.POD_DELETED
            time.sleep(0.02)
        assert deleted and pod is not None
        time.sleep(0.5)  # inside preStop, with the steady load and the router busy
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["drainspec: interrupted; every process it started has been reaped"]
    assert not psutil.pid_exists(pod) or psutil.Process(pod).status() == psutil.STATUS_ZOMBIE
