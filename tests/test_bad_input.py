"""
Bad input gets one clear line on stderr and exit code 2, in bounded time, with nothing left
running: never a traceback, never a hang.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

BASE = ["--requests", "1", "--request-seconds", "0.2", "--background", "0", "--grace", "2"]

CASES = [
    pytest.param(["--app", "nosuchmodule:app"], 'Could not import module "nosuchmodule"', id="unknown-module"),
    pytest.param(["--app", "app.main:nosuchattr"], 'Attribute "nosuchattr" not found', id="unknown-attribute"),
    pytest.param(["--app", "app.main"], "must be in format", id="no-colon"),
    pytest.param(
        ["--app", "tests.apps.raises_on_import:app"],
        "needs a package that is not installed. Install it with: pip install something",
        id="import-raises",
    ),
    pytest.param(["--app", "tests.apps.broken:not_an_app"], "is not an ASGI app", id="not-an-app"),
    pytest.param(
        ["--app", "tests.apps.broken:factory_raises"],
        'the app factory "tests.apps.broken:factory_raises()" raised RuntimeError: SECRET_KEY is not set',
        id="factory-raises",
    ),
    pytest.param(
        ["--app", "tests.apps.broken:wsgi_app"],
        "is not an ASGI app: it takes (environ, start_response), not (scope, receive, send) (a WSGI app?",
        id="wsgi-app",
    ),
    pytest.param(
        ["--app", "tests.apps.broken:factory_returns_none"],
        "returned NoneType, not an ASGI app",
        id="factory-returns-none",
    ),
    pytest.param(
        ["--app", "tests.apps.broken:crashes_at_startup"],
        "cannot reach the database at startup (raised at ",
        id="crash-at-startup",
    ),
    pytest.param(
        ["--app", "tests.apps.broken:never_ready", "--ready-timeout", "1.5"],
        "not ready within 1.5s (no lifespan startup in the journal); its log ends 'INFO:     Waiting for application",
        id="never-ready",
    ),
    pytest.param(
        ["--app", "tests.apps.events:app", "--request-path", "GET /stalled"],
        # BASE's grace 2 s + 1 + slack; a stream (chunked, no length) is taken on its status instead
        "preflight: GET /stalled answered 200 with a Content-Length but its body had not ended after 8s",
        id="body-short-of-its-length",
    ),
    pytest.param(
        ["--app", "tests.apps.broken:fails_its_requests", "--request-path", "POST /orders"],
        "the app raised LookupError: no stock for order-1 in postgresql://shop:***@127.0.0.1/stock "
        "(at tests/apps/broken.py:",
        id="endpoint-raises",
    ),
    pytest.param(
        ["--app", "app.main:app", "--server", "nginx"],
        "unknown server 'nginx'",
        id="unknown-server",
    ),
    pytest.param(
        ["--app", "app.main:app", "--command", "no-such-server-binary --port {port} {app}"],
        "'no-such-server-binary' was not found",
        id="missing-binary",
    ),
    pytest.param(
        ["--app", "app.main:app", "--server-arg=--ssl-certfile=/etc/tls/cert.pem"],
        "--ssl-certfile makes the server speak HTTPS, and drainspec's requests are plain HTTP on 127.0.0.1",
        id="tls-server-arg",
    ),
    pytest.param(
        ["--app", "app.main:app", "--command", "python -m hypercorn {app} --bind {host}:{port} --certfile c.pem"],
        "--certfile makes the server speak HTTPS",
        id="tls-in-a-command",
    ),
    pytest.param(["--app", "app.main:app", "--signal", "BOGUS"], "unknown signal 'BOGUS'", id="bad-signal"),
    pytest.param(["--app", "app.main:app", "--grace", "soon"], "'soon' is not a number", id="bad-number"),
    pytest.param(["--app", "app.main:app", "--env", "NOEQUALS"], "KEY=VALUE", id="bad-env"),
    pytest.param(
        ["--app", "app.main:app", "--request-path", "GET slow"],
        "must start with '/'",
        id="bad-path",
    ),
    pytest.param(
        ["--app", "app.main:app", "--integrity", "app.nosuch:check"],
        "--integrity",
        id="bad-integrity",
    ),
]


def drainspec(*args: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(("args", "message"), CASES)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result, _ = drainspec("run", *args, *BASE, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    if "(raised at " in message:  # where: the app's own line
        assert lines[0].endswith("tests/apps/broken.py:14 in crashing_lifespan)"), lines[0]


def test_busy_port(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result, _ = drainspec("run", "--app", "app.main:app", *BASE, "--port", str(port), "--out", str(tmp_path))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr


def test_unreadable_journal(tmp_path):
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"t": 1, "pid": 2, "kind": "run.start"}\nnot json\n{"t": 3, "pid": 2, "kind": "x"}\n')
    result, _ = drainspec("report", str(journal))
    assert result.returncode == 2
    assert "line 2 is not a journal event" in result.stderr


def test_missing_journal(tmp_path):
    result, _ = drainspec("report", str(tmp_path / "nothing.jsonl"))
    assert result.returncode == 2
    assert "cannot read journal" in result.stderr


UVICORN_POD = "kind: Pod\nspec: {containers: [{name: web, command: [uvicorn, app.main:app]}]}\n"

MANIFEST_CASES: list = [
    pytest.param("kind: Pod\nspec: [\n", [], "invalid YAML at line", id="invalid-yaml"),
    pytest.param("apiVersion: v1\nkind: Service\n", [], "found Service", id="unsupported-kind"),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: web, image: app}]}\n", [], "--dockerfile", id="command-from-image"
    ),
    pytest.param(UVICORN_POD, ["--dockerfile", "no-such-Dockerfile"], "no-such-Dockerfile", id="missing-dockerfile"),
    pytest.param(UVICORN_POD, ["--dockerfile-target", "final"], "add --dockerfile", id="target-without-dockerfile"),
    pytest.param(
        UVICORN_POD, ["--dockerfile", "{tmp}/Dockerfile"], "STOPSIGNAL: unknown signal", id="bogus-image-stop-signal"
    ),
    pytest.param(
        UVICORN_POD,
        ["--dockerfile", "{tmp}/clean.Dockerfile", "--dockerfile-target", "nope"],
        "no stage 'nope'",
        id="unknown-dockerfile-stage",
    ),
    pytest.param(
        UVICORN_POD,
        ["--container", "sidecar"],
        "no container 'sidecar'",
        id="unknown-container",
    ),
    pytest.param(
        UVICORN_POD,
        ["--propagation", "3..1"],
        "--propagation",
        id="bad-propagation",
    ),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: web, command: [no-such-binary-here, --port, '80'],"
        " ports: [{containerPort: 80}]}]}\n",
        ["--ready-timeout", "3"],
        "no-such-binary-here",
        id="missing-binary-in-command",
    ),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: web, command: [python3, -c, 'import signal; "
        "print(\"waiting for the broker\", flush=True); signal.pause()', '8000'], ports: [{containerPort: 8000}]}]}\n",
        ["--ready-timeout", "1.5"],
        "within 1.5s; its log ends 'waiting for the broker': raise --ready-timeout",
        id="never-listens",
    ),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: web, command: [python3, serve.py]}]}\n",
        [],
        "containerPort",
        id="unknown-port",
    ),
    pytest.param(
        UVICORN_POD,
        ["--reset-rate", "3"],
        "between 0 and 1",
        id="bad-reset-rate",
    ),
    pytest.param(
        UVICORN_POD,
        ["--link-delay", "0.001"],
        "add --ingress nginx",
        id="link-delay-without-ingress",
    ),
    pytest.param(
        UVICORN_POD,
        ["--ingress", "nginx", "--link-delay", "5"],
        "at most 1 second",
        id="link-delay-too-long",
    ),
    pytest.param(
        UVICORN_POD,
        ["--load-bursts", "1000"],
        "between 0 and 100",
        id="too-many-bursts",
    ),
    pytest.param(
        UVICORN_POD,
        ["--load-bursts", "2", "--load-rate", "100"],
        "choose one",
        id="bursts-and-rate",
    ),
    pytest.param(
        UVICORN_POD,
        ["--load-bursts", "2", "--rollout"],
        "drop --rollout",
        id="bursts-in-a-rollout",
    ),
]


BOGUS_SIGNAL = (
    "kind: Deployment\nspec: {replicas: 2, template: {spec: {containers: [{name: web, "
    "command: [uvicorn, app.main:app], lifecycle: {stopSignal: SIGBOGUS}}]}}}\n"
)
MANIFEST_CASES += [
    pytest.param(BOGUS_SIGNAL, [], "SIGBOGUS", id="bogus-stop-signal"),
    pytest.param(BOGUS_SIGNAL, ["--rollout"], "SIGBOGUS", id="bogus-stop-signal-rollout"),
]


@pytest.mark.parametrize(("text", "args", "message"), MANIFEST_CASES)
def test_bad_manifest_is_one_line_and_exit_2(tmp_path, text, args, message):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    (tmp_path / "Dockerfile").write_text("FROM python:3.12-slim AS build\nSTOPSIGNAL SIGBOGUS\nCMD [uvicorn]\n")
    (tmp_path / "clean.Dockerfile").write_text("FROM python:3.12-slim AS build\nCMD [uvicorn]\n")
    args = [arg.format(tmp=tmp_path) for arg in args]
    result, took = drainspec("k8s", str(manifest), *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), result.stderr
    assert message in lines[0]
    assert took < 20


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["chaos", "--app", "app.main:app", "--runs", "0"], id="chaos-zero-runs"),
        pytest.param(["run", "--app", "app.main:app", "--grace", "nan"], id="nan-grace"),
        pytest.param(["run", "--app", "app.main:app", "--grace", "inf"], id="inf-grace"),
        pytest.param(["run", "--app", "app.main:app", "--port", "70000"], id="port-out-of-range"),
        pytest.param(["matrix", "--app", "app.main:app", "--servers", ","], id="matrix-no-servers"),
        pytest.param(["matrix", "--app", "app.main:app", "--knob", "uvicorn=--x '"], id="matrix-unbalanced-quote"),
    ],
)
def test_bad_values_never_start_a_run(tmp_path, args):
    result, _ = drainspec(*args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_an_experiment_without_runs_is_refused(tmp_path):
    experiment = tmp_path / "e.yaml"
    experiment.write_text("scenario: {app: app.main:app}\nruns: -3\n")
    result, _ = drainspec("experiment", str(experiment), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'runs' must be a whole number of at least 1" in result.stderr


def test_a_prefix_of_a_journal_is_incomplete_evidence(tmp_path):
    """A journal cut after its first line judges nothing: exit 2, never a pass."""
    journal = tmp_path / "journal.jsonl"
    journal.write_text('{"t": 1, "pid": 2, "kind": "run.start", "scenario": {"app": "a:b"}}\n')
    result, _ = drainspec("report", str(journal))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not verified: the evidence is incomplete" in result.stdout and "nothing was judged" in result.stdout


def test_missing_manifest(tmp_path):
    result, _ = drainspec("k8s", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_a_note_on_the_scenario_goes_to_stdout_and_bad_input_stays_one_line_on_stderr(tmp_path):
    """A `--request-seconds` that the request cannot carry is noted; the error after it is still one line."""
    args = ["--request-seconds", "3", "--request-path", "GET /healthz", "--integrity", "app.nosuch:check"]
    result, _ = drainspec("run", "--app", "app.main:app", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "note: --request-seconds 3 is not in the request 'GET /healthz'" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--integrity" in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "help_to_read"),
    [
        pytest.param(["run", "--app", "app.main:app", "--path", "/x"], "(see drainspec run --help)", id="subcommand"),
        pytest.param(["k8s", "--bogus"], "(see drainspec k8s --help)", id="other-subcommand"),
        pytest.param([], "(see drainspec --help)", id="no-subcommand"),
    ],
)
def test_a_usage_error_names_the_help_to_read(args: list[str], help_to_read: str) -> None:
    """An unknown flag of `run` used to point at `drainspec drainspec --help`."""
    result, _ = drainspec(*args)
    assert result.returncode == 2
    assert result.stderr.strip().endswith(help_to_read), result.stderr


def test_a_server_flag_given_to_server_arg_apart_says_how_to_pass_it() -> None:
    """`--server-arg --timeout-graceful-shutdown 1` reads as two flags of drainspec's: say how to join them."""
    result, _ = drainspec("run", "--app", "app.main:app", "--server-arg", "--timeout-graceful-shutdown", "1")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "join a flag to it (--server-arg=--timeout-graceful-shutdown)" in line


@pytest.mark.parametrize(
    ("command", "accepted"),
    [("run", True), ("chaos", False)],
    ids=["run-takes-quiet", "chaos-does-not"],
)
def test_a_scenario_files_options_are_checked_against_the_command_run(tmp_path, command, accepted):
    (tmp_path / "drainspec.toml").write_text('app = "app.main:app"\nquiet = true\n')
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", command, "--request-path", "GET no-slash", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    if accepted:  # the file is taken; the bad request path is what stops the run, before any spawn
        assert "must start with '/'" in result.stderr, result.stderr
    else:
        assert "unknown option(s) quiet" in result.stderr, result.stderr


def test_a_script_checked_out_without_its_mode_bits_is_named_so(tmp_path):
    script = tmp_path / "docker-entrypoint.sh"
    script.write_text('#!/bin/sh\nexec "$@"\n')
    script.chmod(0o644)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        f"kind: Pod\nspec: {{containers: [{{name: web, command: [{script}, uvicorn, app.main:app]}}]}}\n"
    )
    result, _ = drainspec("k8s", str(manifest), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"is here but not executable (the image's COPY --chmod or RUN chmod makes it so); chmod +x {script}" in (
        result.stderr
    )


def test_a_server_in_an_environment_without_drainspec_is_named_with_the_fix(tmp_path):
    """`uv run uvicorn ...` starts the project's own uvicorn, in a venv drainspec was never installed into."""
    bare = "/usr/bin/python3"  # the system's Python: no drainspec in it
    if not os.access(bare, os.X_OK):
        pytest.skip(f"{bare} is not here")
    environment = tmp_path / "project" / ".venv"
    (environment / "bin").mkdir(parents=True)
    uvicorn = environment / "bin" / "uvicorn"
    uvicorn.write_text(f"#!{bare} -I\nimport chaos.probe.asgi\n")  # what its uvicorn does with drainspec's app
    uvicorn.chmod(0o755)
    result, _ = drainspec(
        "run", "--app", "app.main:app", "--command", f"{uvicorn} {{app}} --port {{port}}", *BASE,
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"drainspec: error: the server ran in {environment}, a Python environment where drainspec is not installed "
        "(its command starts it through an environment of its own, such as `uv run` or `poetry run`): install "
        "drainspec in that environment (`uv add --dev drainspec`, `poetry add --group dev drainspec`) and run "
        "drainspec again"
    ], result.stderr
