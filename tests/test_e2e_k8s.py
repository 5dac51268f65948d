"""
Kubernetes termination replays of the manifests in `k8s/`: the container's command as PID 1 of
a PID namespace, behind a router that keeps routing for the propagation delay, preStop on the
grace clock. The correct manifest passes; each bad one fails exactly the verdicts of its mistake.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos.k8s.pod import namespace_prefix
from chaos.plugin import DrainResult
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
K8S = ROOT / "k8s"
needs_namespace = pytest.mark.skipif(namespace_prefix() is None, reason="PID namespaces are not available here")
STREAM = "GET /__drainspec/stream?seconds={seconds}"


def test_the_reference_deployment_passes_every_verdict(replay_manifest):
    result = replay_manifest("deployment.yaml")
    assert result.failed == set(), result.explain()
    routed = result.verdict("no-refused-while-routed")
    assert routed.status == "pass" and "succeeded" in routed.summary


# What a SIGKILL at the grace deadline adds to a case whose mistake leaves the server too little
# time: the journal decides whether the kill came (on a busy machine the server's own exit after
# its 1 s timeout can take longer than the 1 s left), never a wall-clock margin in the test.
KILLED = frozenset({"within-grace", "teardown-ran", "resources-closed"})

CASES = [
    pytest.param("no-prestop.yaml", {}, {"no-refused-while-routed"}, id="1-no-prestop"),
    pytest.param(
        "drain-exceeds-grace.yaml",
        {"request_seconds": 5.0},
        {"inflight-completed", "teardown-ran", "within-grace", "resources-closed"},
        id="3-drain-exceeds-grace",
    ),
    pytest.param(
        "prestop-exceeds-grace.yaml",
        {"request_seconds": 5.0},
        {"inflight-completed"},  # uvicorn's 1 s timeout answers 500 within the 2 s left (or is killed)
        id="4-prestop-exceeds-grace",
    ),
    pytest.param(
        "shell-wrapper.yaml",
        {},
        {"signal-reaches-app", "teardown-ran", "within-grace", "resources-closed"},
        id="5-shell-wrapper",
        marks=needs_namespace,
    ),
    pytest.param(
        "no-sigterm-handler.yaml",
        {},
        {"signal-reaches-app", "within-grace"},
        id="6-no-sigterm-handler",
        marks=needs_namespace,
    ),
    pytest.param(
        "init-before-shell.yaml",
        {"request_seconds": 4.0},
        {"inflight-completed", "teardown-ran", "signal-reaches-app", "resources-closed"},
        id="7-init-before-shell",
        marks=needs_namespace,
    ),
    pytest.param(
        "unbounded-drain.yaml",
        {"request_path": STREAM, "request_seconds": 30.0, "requests": 1},
        {"inflight-completed", "teardown-ran", "within-grace", "resources-closed"},
        id="9-unbounded-drain",
    ),
    pytest.param(
        "fails-all-traffic.yaml",
        {},
        {"no-refused-while-routed"},  # the requests in flight at the deletion were answered before
        id="12-fails-all-traffic",
    ),
    pytest.param("missing-prestop-binary.yaml", {}, {"no-refused-while-routed"}, id="13-missing-prestop-binary"),
    pytest.param("prestop-kills.yaml", {}, {"no-refused-while-routed"}, id="14-prestop-kills", marks=needs_namespace),
    pytest.param(
        "server-in-a-thread.yaml",
        {},
        {"signal-reaches-app", "teardown-ran", "within-grace", "resources-closed"},
        id="6-server-in-a-thread",
        marks=needs_namespace,
    ),
]


@pytest.mark.parametrize(("manifest", "options", "fails"), CASES)
def test_each_misconfiguration_fails_its_verdicts(replay_manifest, manifest, options, fails):
    result = replay_manifest(f"bad/{manifest}", **options)
    if manifest == "prestop-exceeds-grace.yaml" and killed_before_exit(result):
        fails = fails | (KILLED & result.failed)
    assert result.failed == fails, result.explain()


def killed_before_exit(result: DrainResult) -> bool:
    """The journal's order: the kubelet's SIGKILL was sent before the server had exited."""
    timeline = result.timeline
    return timeline.sigkill is not None and (timeline.exit is None or timeline.sigkill <= timeline.exit.t)


@needs_namespace
def test_the_app_is_pid_1_of_its_own_namespace(replay_manifest):
    result = replay_manifest("deployment.yaml", requests=1)
    assert result.timeline.replay["container"] == "web"
    started = next(e for e in result.timeline.events if e.kind == "pod.started")
    assert started.get("namespaced") is True
    request = next(iter(result.timeline.requests.values()))
    assert request.start is not None


def test_a_replay_that_exits_early_takes_about_prestop_plus_drain(replay_manifest):
    """Bounded run time: preStop 2 s + a short drain, not the 8 s grace period."""
    started = time.monotonic()
    result = replay_manifest("deployment.yaml", requests=1, request_seconds=0.3)
    took = time.monotonic() - started
    assert result.failed == set(), result.explain()
    assert took < 2 + 1 + 3, f"the replay took {took:.1f}s"  # preStop + drain + 1 s, plus startup


def test_propagation_range_is_picked_by_seed_and_journaled(replay_manifest):
    first = replay_manifest("deployment.yaml", requests=1, propagation=(0.2, 1.5), seed=7)
    second = replay_manifest("deployment.yaml", requests=1, propagation=(0.2, 1.5), seed=7)
    assert first.timeline.replay["propagation"] == second.timeline.replay["propagation"]
    assert 0.2 <= first.timeline.replay["propagation"] <= 1.5


def test_cli_prints_findings_verdicts_and_budget(tmp_path: Path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", "k8s", "k8s/bad/no-prestop.yaml", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no-prestop (#1)" in result.stdout
    assert "Recommended budget" in result.stdout and "terminationGracePeriod" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["result"] == "fail"
    assert [f["code"] for f in report["findings"]] == ["no-prestop"]
    assert (out / "junit.xml").exists()


@pytest.mark.parametrize(
    ("manifest", "code"),
    [pytest.param("deployment.yaml", 0, id="good"), pytest.param("bad/shell-wrapper.yaml", 1, id="bad")],
)
def test_static_check_runs_nothing(manifest, code):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", "k8s", f"k8s/{manifest}", "--static"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == code, result.stdout + result.stderr
    assert time.monotonic() - started < 10


def test_router_resets_reach_the_verdicts(replay_manifest):
    """A correct pod behind a flaky load balancer: the resets are journaled as faults and judged."""
    result = replay_manifest("deployment.yaml", requests=1, reset_rate=1.0, seed=3)
    assert result.failed == {"no-refused-while-routed"}, result.explain()
    resets = [e for e in result.timeline.events if e.kind == "fault.injected" and e.get("fault") == "router-reset"]
    assert resets


def test_router_latency_delays_requests_and_nothing_fails(replay_manifest):
    result = replay_manifest("deployment.yaml", requests=1, request_seconds=0.5, latency=0.2)
    assert result.failed == set(), result.explain()
    steady = [e for e in result.timeline.events if e.kind == "client.request" and e.get("role") == "steady"]
    first = min(steady, key=lambda e: int(e.get("sent", 0)))
    assert first.t - int(first.get("sent", 0)) >= 0.2e9


def test_an_init_in_exec_form_passes(replay_manifest):
    """dumb-init (PID 1, the signal blocked and waited for) forwards SIGTERM to uvicorn, which drains."""
    result = replay_manifest("init-exec.yaml", requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    sent = next(e for e in result.timeline.events if e.kind == "signal.sent")
    assert sent.get("handled") is True
    assert result.verdict("signal-reaches-app").status == "pass"


@pytest.mark.parametrize(
    ("command", "loaded"),
    [
        (None, ["__main__:app"]),
        ('[sh, -c, "echo migrating && exec python tests/apps/serve_itself.py"]', ["__main__:app"]),
        ("[python, tests/apps/serve_itself.py, --gunicorn]", ["__main__:app"] * 2),
    ],
    ids=["exec-form", "after-a-shell-step", "gunicorn-base-application"],
)
def test_a_service_that_starts_its_own_server_passes(replay_manifest, tmp_path, command, loaded):
    """
    `command: [python, main.py]`, its uvicorn in the main thread, or its gunicorn arbiter with
    two workers: bound here, probed, drained as PID 1.
    """
    manifest = "own-script.yaml"
    if command is not None:
        text = (ROOT / "k8s" / manifest).read_text()
        manifest = str(tmp_path / "in-a-shell.yaml")
        Path(manifest).write_text(text.replace("command: [python, tests/apps/serve_itself.py]", f"command: {command}"))
        assert Path(manifest).read_text() != text
    result = replay_manifest(manifest, requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == loaded
    assert result.verdict("teardown-ran").status == "pass"


SHELL_WRAPPED = {"signal-reaches-app", "teardown-ran", "within-grace", "resources-closed"}


@pytest.mark.parametrize(
    ("shebang", "run_line", "by_its_shebang", "fails"),
    [
        pytest.param("/bin/sh", "exec uvicorn app.main:app", False, set(), id="the-script-execs-the-server"),
        pytest.param(
            "/bin/sh", "uvicorn app.main:app", False, SHELL_WRAPPED, id="sh-stays-pid-1", marks=needs_namespace
        ),
        pytest.param(
            "/usr/bin/env bash",
            "granian --interface asgi app.main:app --workers-kill-timeout 1",
            True,
            SHELL_WRAPPED,
            id="bash-by-its-shebang-stays-pid-1",
            marks=needs_namespace,
        ),
    ],
)
def test_an_entrypoint_script_file_is_replayed_as_written(
    replay_manifest, tmp_path, shebang, run_line, by_its_shebang, fails
):
    """
    `command: [sh, boot.sh]`, or `command: [boot.sh]` run by its `#!` line: the file is read and
    run with its app on the probe. Ending with `exec`, the server becomes PID 1 and drains;
    without, the shell stays PID 1 and drops SIGTERM (bash too: it execs only a lone command).
    """
    script = tmp_path / "boot.sh"
    script.write_text(
        f'#!{shebang}\nset -e\necho "booting $0"\n'
        f"{run_line} \\\n  --host 0.0.0.0 --port 8000 \\\n  --timeout-graceful-shutdown 1\n".replace(
            " --timeout-graceful-shutdown 1", "" if "granian" in run_line else " --timeout-graceful-shutdown 1"
        )
    )
    script.chmod(0o755)
    text = (K8S / "bad" / "shell-wrapper.yaml").read_text()
    old = 'command: [/bin/sh, -c, "uvicorn app.main:app --host 0.0.0.0 --port 8000 --timeout-graceful-shutdown 1"]'
    assert old in text
    manifest = tmp_path / "boot.yaml"
    manifest.write_text(text.replace(old, f"command: [{script}]" if by_its_shebang else f"command: [sh, {script}]"))
    result = replay_manifest(str(manifest), requests=1, request_seconds=0.3)
    assert result.failed == fails, result.explain()
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == ["app.main:app"]
    (started,) = [e for e in result.timeline.events if e.kind == "pod.started"]
    interpreter = shebang.split()[1:] if by_its_shebang else ["sh"]
    assert started.get("argv") == [*interpreter, "-c", f"<{script}, run with the app on the probe>", str(script)]


def test_a_script_that_takes_its_app_from_a_variable_runs_it_on_the_probe(replay_manifest, tmp_path, monkeypatch):
    """`exec uvicorn "$APP_MODULE"`: the app is what the variable holds in the pod's environment."""
    script = tmp_path / "boot.sh"
    script.write_text(
        "#!/bin/sh\nset -e\nAPP_MODULE=${APP_MODULE:-main:app}\n"
        'exec uvicorn --host 0.0.0.0 --port 8000 "${APP_MODULE}" --timeout-graceful-shutdown 1\n'
    )
    manifest = tmp_path / "boot.yaml"
    manifest.write_text(
        (K8S / "deployment.yaml")
        .read_text()
        .replace(
            'command: [uvicorn, app.main:app, --host, 0.0.0.0, --port, "8000", --timeout-graceful-shutdown, "4"]',
            f"command: [sh, {script}]",
        )
    )
    monkeypatch.setenv("APP_MODULE", "app.main:app")
    result = replay_manifest(str(manifest), requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == ["app.main:app"]
    assert result.verdict("inflight-completed").status == "pass"


@pytest.mark.parametrize(
    ("dockerfile", "fails"),
    [
        pytest.param("image/Dockerfile", set(), id="the-image-runs-uvicorn"),
        pytest.param(
            "image/stopsignal-quit.Dockerfile",
            {"signal-reaches-app", "teardown-ran", "within-grace", "resources-closed"},
            id="the-image-stops-it-with-sigquit",
            marks=needs_namespace,
        ),
    ],
)
def test_a_manifest_without_command_runs_what_its_image_runs(replay_manifest, dockerfile, fails):
    result = replay_manifest("image/deployment.yaml", dockerfile=dockerfile, requests=1, request_seconds=0.3)
    assert result.failed == fails, result.explain()
    (sent,) = [e for e in result.timeline.events if e.kind == "signal.sent"]
    assert sent.get("signal") == ("SIGQUIT" if fails else "SIGTERM")
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == ["app.main:app"]
    assert result.timeline.replay["dockerfile"] == str(ROOT / "k8s" / dockerfile)  # the reports name it


def test_an_image_that_rearranges_the_checkout_runs_in_its_workdir_laid_out(replay_manifest, tmp_path):
    """`COPY tests/apps/plain.py main.py`: `uvicorn main:app` runs where the WORKDIR holds main.py."""
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.12-slim\nWORKDIR /srv\nCOPY tests/apps/plain.py main.py\n"
        'CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "4"]\n'
    )
    result = replay_manifest("image/deployment.yaml", dockerfile=str(dockerfile), requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == ["main:app"]
    assert result.verdict("inflight-completed").status == "pass"
    assert not (ROOT / "main.py").exists()


@needs_namespace
def test_steady_load_runs_until_the_router_stops_routing_to_a_dead_pod(replay_manifest):
    """
    An init in front of a shell: the pod dies 10-20 ms after SIGTERM, while the router still
    routes to it (propagation 3 s > preStop 2 s); the load goes on and finds the refusals.
    """
    from chaos.k8s.replay import cut_short, measured_drain

    result = replay_manifest("bad/init-before-shell.yaml", requests=1, request_seconds=4.0, propagation=(3.0, 3.0))
    assert {"no-refused-while-routed", "signal-reaches-app"} <= result.failed, result.explain()
    exited = result.timeline.exit
    assert exited is not None and result.timeline.routed_until is not None
    steady = [e for e in result.timeline.events if e.kind == "client.request" and e.get("role") == "steady"]
    assert any(int(e.get("sent", 0)) > exited.t and e.get("outcome") != "ok" for e in steady)
    assert "killed with the pod's namespace" in result.verdict("signal-reaches-app").summary
    assert measured_drain(result.timeline.events) is None
    cause = cut_short(result.timeline)
    assert cause is not None and "exec the server" in cause.lower()


@needs_namespace
@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        pytest.param("bad/shell-wrapper.yaml", "exec form", id="sh-as-pid-1"),
        pytest.param("bad/init-before-shell.yaml", "before its shutdown began", id="init-before-shell"),
    ],
)
def test_no_budget_is_built_on_a_kill(tmp_path: Path, manifest: str, words: str):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", "k8s", f"k8s/{manifest}", "--out", str(out), "--request-seconds", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    budget = result.stdout.split("Recommended budget", 1)[1]
    assert "no budget" in budget and words in budget, budget
    assert "measured drain" not in budget and "terminationGracePeriod T" not in budget
