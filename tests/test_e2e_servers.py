"""
The same reference scenario on every server, pinning what each really does at shutdown (see the
README's server section): who waits for background tasks, who SIGKILLs workers at a timeout and
skips teardown, who answers cancelled requests with a 500, and what the exit code says.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from chaos.judge.verdict import Fate, fate_of
from chaos.servers import (
    SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP,
    WORKER_HANGS_AFTER_A_SIGNAL_IN_STARTUP,
    installed_version,
)
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
LONG = {"request_seconds": 2.0, "background_seconds": 2.0, "grace": 6.0}  # work that outlives a 1 s drain bound


@pytest.mark.parametrize(
    ("server", "fails"),
    [
        pytest.param("uvicorn", set(), id="uvicorn"),
        pytest.param("gunicorn", set(), id="gunicorn"),
        pytest.param("hypercorn", set(), id="hypercorn"),
        # Granian starts teardown right after the last response: background tasks are dropped.
        pytest.param("granian", {"background-fate", "teardown-after-drain"}, id="granian"),
    ],
)
def test_each_server_as_shipped(run_scenario, server, fails):
    result = run_scenario(server=server)
    assert result.failed == fails, result.explain()
    if server == "granian":
        fates = {fate_of(result.timeline, task) for task in result.timeline.tasks.values()}
        assert Fate.DROPPED in fates


@pytest.mark.parametrize(
    ("server", "knob", "fails", "passes", "exit_code"),
    [
        # uvicorn cancels: 500s, teardown begins while the cancelled work is still live.
        pytest.param(
            "uvicorn",
            ("--timeout-graceful-shutdown", "1"),
            {"inflight-completed", "teardown-after-drain", "no-use-after-close"},
            {"teardown-ran", "within-grace"},
            143,
            id="uvicorn-timeout",
        ),
        # gunicorn SIGKILLs its workers: no teardown, background tasks gone, and the master exits 0.
        pytest.param(
            "gunicorn",
            ("--graceful-timeout", "1"),
            {"inflight-completed", "background-fate", "teardown-ran"},
            {"within-grace"},
            0,
            id="gunicorn-graceful-timeout",
        ),
        # Hypercorn cancels at its graceful timeout: 500 with an empty body, then teardown.
        pytest.param(
            "hypercorn",
            ("--graceful-timeout", "1"),
            {"inflight-completed"},
            {"teardown-ran", "within-grace"},
            0,
            id="hypercorn-graceful-timeout",
        ),
        # Granian's kill timeout SIGKILLs the worker; the main process still exits 0.
        pytest.param(
            "granian",
            ("--workers-kill-timeout", "1"),
            {"inflight-completed", "teardown-ran"},
            {"within-grace"},
            0,
            id="granian-kill-timeout",
        ),
    ],
)
def test_each_servers_drain_bound(run_scenario, server, knob, fails, passes, exit_code):
    """What a drain bound costs on each server; the exit code alone never tells."""
    result = run_scenario(server=server, server_args=knob, **LONG)
    assert fails <= result.failed, result.explain()
    assert not passes & result.failed, result.explain()
    assert result.timeline.exit is not None and result.timeline.exit.get("exit_code") == exit_code


def test_a_worker_its_arbiter_sigkilled_has_its_tasks_killed_not_lost(run_scenario):
    """
    gunicorn's arbiter SIGKILLs its worker at the graceful timeout and exits, reaping it only if it
    is already dead (gunicorn 27 logs it then): drainspec, the subreaper, reads the exit status of
    a worker left behind, the arbiter's log tells of one it reaped. Either way its tasks are `killed`.
    """
    result = run_scenario(server="gunicorn", server_args=("--graceful-timeout", "1"), **LONG)
    fates = {task.id: fate_of(result.timeline, task) for task in result.timeline.tasks.values()}
    assert Fate.KILLED in fates.values() and Fate.LOST not in fates.values(), result.explain()
    killed = [e for e in result.verdict("background-fate").evidence if e.task and fates[e.task] == Fate.KILLED]
    accounts = ("its exit status read by drainspec", "its server's log: 'Worker (pid:")
    assert killed and all("died of SIGKILL" in e.text and any(a in e.text for a in accounts) for e in killed)
    assert "died of SIGKILL" in result.verdict("resources-closed").evidence[0].text, result.explain()


def test_gunicorn_quick_shutdown_never_reaches_uvicorn_workers(run_scenario):
    """SIGINT to the arbiter becomes SIGQUIT to the worker, which uvicorn ignores: killed at the timeout."""
    result = run_scenario(server="gunicorn", signal="INT", server_args=("--graceful-timeout", "1"), **LONG)
    assert "teardown-ran" in result.failed, result.explain()
    assert result.verdict("teardown-ran").evidence


@pytest.mark.parametrize(("signal", "exit_code"), [("TERM", 143), ("INT", 0)], ids=["TERM", "INT"])
def test_uvicorn_exit_code_depends_on_the_signal_not_the_drain(run_scenario, signal, exit_code):
    result = run_scenario(signal=signal)
    assert result.failed == set(), result.explain()
    assert result.timeline.exit is not None and result.timeline.exit.get("exit_code") == exit_code


# What each server's releases do when the stop signal comes before they serve, and what the
# verdicts then fail; hypercorn (0.17 and later) always runs the shutdown.
STARTUP_FLAW_OF = {
    "uvicorn": (SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP, {"teardown-ran", "resources-closed"}),
    "gunicorn": (SHUTDOWN_SKIPPED_AFTER_A_SIGNAL_IN_STARTUP, {"teardown-ran", "resources-closed"}),  # UvicornWorker
    "granian": (WORKER_HANGS_AFTER_A_SIGNAL_IN_STARTUP, {"teardown-ran", "within-grace", "resources-closed"}),
}


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian"])
def test_a_signal_while_the_server_starts(run_scenario, server):
    """
    1. The lifespan startup opens the pool, then warms up for a second (`slow_startup`).
    2. SIGTERM comes while it runs (`--signal-at startup`); under gunicorn, from its master.
    Result: every server's current release finishes the startup, then runs the shutdown, and the
    app passes. Older releases do not (measured; `make compat` runs their oldest): uvicorn before
    0.41 (#2812), in gunicorn's UvicornWorker too, returns without a shutdown, and granian before
    2.2.2 never stops the worker until the deadline's SIGKILL. The verdicts that fail then name the
    release and the upgrade.
    """
    result = run_scenario(
        server=server,
        app="app.variants.slow_startup:app",
        signal_at="startup",
        grace=4.0,
        integrity=None,
        env={"REFERENCE_WARM_UP_SECONDS": "1"},
    )
    (worker,) = result.timeline.workers.values()
    assert result.timeline.signal is not None and worker.startup_complete is not None, result.explain()
    assert result.timeline.signal < worker.startup_complete  # the harness's --signal-at startup
    flaw, fails = STARTUP_FLAW_OF.get(server, (None, set()))
    version = flaw.found_in(worker.servers) if flaw is not None else None
    if flaw is not None:
        assert worker.servers.get(flaw.distribution) == installed_version(flaw.distribution), worker.servers
    if version is None:
        assert result.failed == set(), result.explain()
        return
    assert result.failed == fails, result.explain()
    for name in ("teardown-ran", "resources-closed"):  # the worker; each resource its startup opened
        evidence = [e.text for e in result.verdict(name).evidence if not e.text.startswith("SIGKILL was sent")]
        assert evidence and all(f"{flaw.distribution} {version} {flaw.does}" in text for text in evidence), evidence


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_multi_worker_servers_are_judged_per_worker(run_scenario, server):
    result = run_scenario(server=server, workers=2, requests=4)
    assert result.failed == set(), result.explain()
    pids = {view.pid for view in result.timeline.requests.values()}
    assert len(result.timeline.workers) == 2
    assert pids <= set(result.timeline.workers)
    summary = result.verdict("teardown-after-drain").evidence
    assert len(summary) == 2  # one line per worker


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_http_implementations_differ_only_in_the_close_header(run_scenario, http):
    result = run_scenario(server_args=("--http", http))
    assert result.failed == set(), result.explain()
    closes = {
        bool(view.client.get("connection_close"))
        for view in result.timeline.requests.values()
        if view.client is not None
        and view.response_end is not None
        and view.response_end > (result.timeline.signal or 0)
    }
    assert closes == {http == "httptools"}


def test_matrix_cli_tabulates_servers_and_knobs(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos.cli",
            "matrix",
            "--app",
            "app.main:app",
            "--servers",
            "uvicorn,granian",
            "--knob",
            "uvicorn=",
            "--knob",
            "granian=",
            "--requests",
            "1",
            "--request-seconds",
            "0.5",
            "--background",
            "1",
            "--background-path",
            "POST /register/{id}?deliver_seconds={seconds}",
            "--grace",
            "5",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 1, result.stdout + result.stderr  # granian drops the background task
    assert "drainspec matrix" in result.stdout
    cells = json.loads((out / "matrix.json").read_text())["cells"]
    verdicts = {cell["server"]: cell["verdicts"] for cell in cells}
    assert verdicts["uvicorn"]["background-fate"] == "pass"
    assert verdicts["granian"]["background-fate"] == "fail"


def test_matrix_rejects_an_unknown_server(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", "matrix", "--app", "app.main:app", "--servers", "uvicorn,nginx"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown server 'nginx'" in result.stderr
