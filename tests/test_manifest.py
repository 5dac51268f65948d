"""
The manifest reader: Kubernetes' defaults, shell and exec forms, static findings for each
misconfiguration in `k8s/bad/`, the budget arithmetic, and a clear error for anything else.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from chaos.k8s.findings import server_keepalive
from chaos.k8s.manifest import (
    MAX_SCRIPT_BYTES,
    ExecHook,
    HttpGetHook,
    ManifestError,
    PodSpec,
    SleepHook,
    analyse,
    app_variable,
    expand_references,
    journaled_argv,
    load_manifest,
    localize,
    own_script_in,
    parse_manifest,
    prestop_seconds,
    recommend_budget,
    resolve_fenceposts,
    select_container,
    server_timeout,
    static_findings,
)
from chaos.servers import PROBE_APP
from tests.conftest import ROOT

PYTHON = shlex.quote(sys.executable)

K8S = ROOT / "k8s"


def pod_yaml(container: str = "{}", kind: str = "Pod", command: str = "[uvicorn, app.main:app, --port, '8000']") -> str:
    """A one-container pod; `container` is a YAML flow mapping of extra container fields."""
    extra = yaml.safe_load(container)
    spec = {"containers": [{"name": "web", "command": yaml.safe_load(command), **extra}]}
    return yaml.safe_dump({"apiVersion": "v1", "kind": kind, "metadata": {"name": "web"}, "spec": spec})


def test_the_reference_deployment_reads_as_written():
    pod = load_manifest(K8S / "deployment.yaml")
    container = select_container(pod, None)
    assert (pod.kind, pod.name, pod.grace, pod.replicas) == ("Deployment", "reference", 8.0, 2)
    assert (pod.max_surge, pod.max_unavailable) == (1, 0)
    assert container.argv[:2] == ("uvicorn", "app.main:app")
    assert container.prestop == SleepHook(2.0)
    assert container.readiness is not None and container.readiness.path == "/readyz"
    assert container.ports == (8000,)


def test_kubernetes_defaults_fill_what_the_manifest_leaves_out():
    pod = parse_manifest(pod_yaml("{readinessProbe: {httpGet: {path: /readyz}}}"))
    probe = pod.containers[0].readiness
    assert pod.grace == 30.0
    assert probe is not None and (probe.period, probe.failure_threshold, probe.timeout) == (10.0, 3, 1.0)
    assert pod.containers[0].prestop is None and pod.containers[0].stop_signal is None


def test_the_first_workload_of_a_multi_document_file_is_taken():
    text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n" + pod_yaml()
    assert parse_manifest(text).kind == "Pod"


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        pytest.param("{sleep: {seconds: 5}}", SleepHook(5.0), id="sleep"),
        pytest.param("{exec: {command: [sleep, '5']}}", ExecHook(("sleep", "5")), id="exec"),
        pytest.param("{httpGet: {path: drain, port: 8000}}", HttpGetHook("/drain", 8000), id="httpGet"),
    ],
)
def test_prestop_handlers(hook, expected):
    pod = parse_manifest(pod_yaml(f"{{lifecycle: {{preStop: {hook}}}}}"))
    assert pod.containers[0].prestop == expected


def test_env_references_are_expanded_like_the_kubelet_does():
    env = {"PORT": "8000"}
    assert expand_references("--port=$(PORT)", env) == "--port=8000"
    assert expand_references("$(MISSING)", env) == "$(MISSING)"
    assert expand_references("$$(PORT)", env) == "$(PORT)"
    pod = parse_manifest(pod_yaml("{env: [{name: PORT, value: '9000'}], args: [--port, $(PORT)]}"))
    assert pod.containers[0].argv[-2:] == ("--port", "9000")


@pytest.mark.parametrize(
    ("argv", "shell", "init", "execs"),
    [
        pytest.param(["uvicorn", "a:b"], None, None, True, id="exec-form"),
        pytest.param(["sh", "-c", "uvicorn a:b"], "sh", None, False, id="dash-single-command"),
        pytest.param(["bash", "-c", "uvicorn a:b"], "bash", None, True, id="bash-single-command"),
        pytest.param(["bash", "-c", "uvicorn a:b; echo done"], "bash", None, False, id="bash-two-commands"),
        pytest.param(["/bin/sh", "-c", "migrate && exec uvicorn a:b"], "sh", None, True, id="exec-in-script"),
        pytest.param(["tini", "--", "uvicorn", "a:b"], None, "tini", True, id="tini-exec"),
        pytest.param(["dumb-init", "sh", "-c", "uvicorn a:b"], "sh", "dumb-init", False, id="init-shell"),
        pytest.param(["bash", "-o", "pipefail", "-c", "exec uvicorn a:b"], "bash", None, True, id="an-option-value"),
        pytest.param(["bash", "-euo", "pipefail", "-c", "exec uvicorn a:b"], "bash", None, True, id="joined-flags"),
        pytest.param(["bash", "-ec", "exec uvicorn a:b"], "bash", None, True, id="c-among-flags"),
    ],
)
def test_how_pid_1_reaches_the_app(argv, shell, init, execs):
    command = analyse(argv)
    assert (command.shell, command.init, command.app_execs, command.server) == (shell, init, execs, "uvicorn")


def test_localize_binds_loopback_and_wraps_the_app_in_the_probe():
    argv, app = localize(["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port=8000", "--workers", "2"], port=4321)
    assert app == "app.main:app"
    assert argv == ["uvicorn", "chaos.probe.asgi:app", "--workers", "2", "--host", "127.0.0.1", "--port", "4321"]


def test_localize_gunicorn_bind_and_worker_class():
    argv, app = localize(
        ["gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-b", "0.0.0.0:8000", "app.main:app"], port=4321
    )
    assert app == "app.main:app"
    assert argv == [
        "gunicorn",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "chaos.probe.asgi:app",
        "--bind",
        "127.0.0.1:4321",
    ]


FACTORY = "app.main:create_app"


@pytest.mark.parametrize(
    ("argv", "app"),
    [
        pytest.param(["uvicorn", "--factory", FACTORY, "--port", "8000"], FACTORY, id="uvicorn"),
        pytest.param(["gunicorn", "-k", "uvicorn_worker.UvicornWorker", f"{FACTORY}()"], f"{FACTORY}()", id="gunicorn"),
        pytest.param(["sh", "-c", f"exec uvicorn {FACTORY} --factory --port 8000"], FACTORY, id="script"),
    ],
)
def test_localize_leaves_an_app_factory_to_the_probe(argv, app):
    """The probe's app is no factory: `--factory` goes with the app's name, and the probe calls the factory."""
    localized, found = localize(argv, port=4321)
    assert found == app
    assert "chaos.probe.asgi:app" in " ".join(localized)
    assert "--factory" not in " ".join(localized)


@pytest.mark.parametrize(
    ("argv", "localized", "app"),
    [
        pytest.param(["python", "main.py"], ["python", "-m", "chaos.probe.script", "main.py"], "main.py", id="script"),
        pytest.param(
            ["tini", "--", "python3", "-m", "app.main", "--port", "8000"],
            ["tini", "--", "python3", "-m", "chaos.probe.script", "-m", "app.main", "--port", "8000"],
            "app.main",
            id="under-an-init",
        ),
        pytest.param(
            ["fastapi", "run", "app/main.py", "--port", "8000"],
            [sys.executable, "-m", "chaos.probe.script", "-m", "fastapi", "run", "app/main.py", "--port", "8000"],
            "app/main.py",
            id="the-fastapi-cli",
        ),
    ],
)
def test_localize_runs_the_apps_own_script_on_the_probe(argv, localized, app, tmp_path, monkeypatch):
    """The script's own uvicorn is bound to the replay's port by `chaos.probe.script`, not by its words."""
    for name in ("main.py", "app/main.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    assert localize(argv, port=4321, container_ports=[8000]) == (localized, app)


@pytest.mark.parametrize(
    ("script", "localized", "app"),
    [
        pytest.param("python main.py", "python -m chaos.probe.script main.py", "main.py", id="alone"),
        pytest.param(
            "python manage.py migrate && exec python3 -X dev main.py --port 8000",
            "python manage.py migrate && exec python3 -X dev -m chaos.probe.script main.py --port 8000",
            "main.py",
            id="after-a-migration",
        ),
        pytest.param(
            "cd /srv; python  -m   app.main",
            "cd /srv; python  -m chaos.probe.script -m   app.main",
            "app.main",
            id="a-module",
        ),
        pytest.param(
            'migrate && if [ -n "$DEBUG" ]; then fastapi dev app/main.py; else exec fastapi run app/main.py; fi',
            f'migrate && if [ -n "$DEBUG" ]; then {PYTHON} -m chaos.probe.script -m fastapi dev app/main.py; '
            f"else exec {PYTHON} -m chaos.probe.script -m fastapi run app/main.py; fi",
            "app/main.py",
            id="the-fastapi-cli-in-each-branch",
        ),
        pytest.param(
            "exec python -m fastapi run app/main.py",
            "exec python -m chaos.probe.script -m fastapi run app/main.py",
            "app/main.py",
            id="the-fastapi-cli-as-a-module",
        ),
    ],
)
def test_localize_runs_the_apps_own_script_inside_a_shell_script(script, localized, app, tmp_path, monkeypatch):
    for name in ("main.py", "manage.py", "app/main.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    assert localize(["sh", "-c", script], port=4321, container_ports=[8000]) == (["sh", "-c", localized], app)


@pytest.mark.parametrize(
    ("command", "script"),
    [
        pytest.param("[python, main.py]", "main.py", id="exec-form"),
        pytest.param("[tini, --, python3, -m, app.main]", "app.main", id="behind-an-init"),
        pytest.param("[sh, -c, 'python manage.py migrate && exec python main.py']", "main.py", id="in-a-shell"),
        pytest.param("[python, -m, uvicorn, app.main:app]", None, id="a-known-server"),
        pytest.param("[python, missing.py]", None, id="not-here"),
    ],
)
def test_a_container_that_runs_the_apps_own_script_has_its_drain_left_to_the_replay(
    command, script, tmp_path, monkeypatch
):
    for name in ("main.py", "manage.py", "app/main.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 2}}}}", command=command))
    assert own_script_in(pod.containers[0].argv) == script
    found = {(f.code, f.number, f.severity) for f in static_findings(pod, pod.containers[0])}
    assert (("drain-bound-in-script", 3, "info") in found) == (script is not None), found


@pytest.mark.parametrize(
    "command",
    [
        pytest.param("[fastapi, run, app/main.py, --port, '8000']", id="exec-form"),
        pytest.param("[sh, -c, 'alembic upgrade head && exec uv run fastapi run app/main.py']", id="in-a-shell"),
    ],
)
def test_the_fastapi_cli_is_said_to_leave_uvicorns_drain_unbounded(command, tmp_path, monkeypatch):
    """`fastapi run` passes uvicorn no drain bound and takes no option for one: only uvicorn itself can bound it."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("")
    monkeypatch.chdir(tmp_path)
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 5}}}}", command=command))
    found = {f.code: f for f in static_findings(pod, pod.containers[0])}
    finding = found["drain-bound-in-script"]
    assert finding.severity == "warning" and "the FastAPI CLI (app/main.py)" in finding.message, finding
    assert "--timeout-graceful-shutdown 23" in finding.recommendation, finding  # grace 30 - preStop 5 - margin 2


@pytest.mark.parametrize(
    ("script", "exec_form"),
    [
        pytest.param("alembic upgrade head && uvicorn app.main:app --port 8000", "[uvicorn, ...]", id="uvicorn"),
        pytest.param(
            "alembic upgrade head && fastapi run app/main.py --port 8000", "[fastapi, run, ...]", id="fastapi"
        ),
    ],
)
def test_a_shell_that_does_not_exec_is_told_the_exec_form_of_its_own_server(script, exec_form, tmp_path, monkeypatch):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("")
    monkeypatch.chdir(tmp_path)
    pod = parse_manifest(pod_yaml("{}", command=f"[sh, -c, '{script}']"))
    found = {f.code: f for f in static_findings(pod, pod.containers[0])}
    assert f"use the exec form (command: {exec_form})" in found["shell-wrapper"].recommendation


def test_localize_inside_a_shell_script_keeps_the_script():
    argv, app = localize(["sh", "-c", "echo hi; uvicorn app.main:app --host 0.0.0.0 --port 8000"], port=4321)
    assert app == "app.main:app"
    assert argv[:2] == ["sh", "-c"]
    assert argv[2].startswith("echo hi; uvicorn chaos.probe.asgi:app --host 127.0.0.1 --port 4321")
    assert "0.0.0.0" not in argv[2] and "8000" not in argv[2]


def test_localize_an_unknown_server_maps_only_its_port():
    argv, app = localize(
        ["python3", "-m", "http.server", "--bind", "0.0.0.0", "8000"], port=4321, container_ports=[8000]
    )
    assert app is None
    assert argv == ["python3", "-m", "http.server", "--bind", "127.0.0.1", "4321"]
    with pytest.raises(ManifestError, match="containerPort"):
        localize(["python3", "serve.py"], port=4321)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["uvicorn", "a:b"], ("uvicorn", None, "the default"), id="uvicorn-unbounded"),
        pytest.param(
            ["uvicorn", "a:b", "--timeout-graceful-shutdown", "4"],
            ("uvicorn", 4.0, "--timeout-graceful-shutdown"),
            id="uvicorn",
        ),
        pytest.param(["gunicorn", "a:b"], ("gunicorn", 30.0, "the default"), id="gunicorn-default"),
        pytest.param(
            ["gunicorn", "--graceful-timeout=10", "a:b"], ("gunicorn", 10.0, "--graceful-timeout"), id="gunicorn"
        ),
        pytest.param(["python3", "serve.py"], None, id="unknown"),
    ],
)
def test_server_timeout(argv, expected, tmp_path):
    bound = server_timeout(argv, cwd=tmp_path)
    if expected is None:
        assert bound is None
    else:
        assert (bound.server, bound.seconds, bound.source) == expected


GUNICORN = ["gunicorn", "-k", "uvicorn_worker.UvicornWorker", "app.main:app"]


@pytest.mark.parametrize(
    ("files", "argv", "env", "expected"),
    [
        pytest.param(
            {"gunicorn.conf.py": "bind = '0.0.0.0:8000'\ngraceful_timeout = 10\n"}, GUNICORN, {},
            (10.0, "gunicorn.conf.py", None), id="default-config-file",
        ),
        pytest.param(
            {"conf/gunicorn_conf.py": "workers = 2\ngraceful_timeout: int = 12\n"},
            ["gunicorn", "-c", "conf/gunicorn_conf.py", "app.main:app"], {},
            (12.0, "conf/gunicorn_conf.py", None), id="named-config-file",
        ),
        pytest.param(
            {"gunicorn.conf.py": "workers = 2\n"}, GUNICORN, {}, (30.0, "the default", None), id="config-leaves-it",
        ),
        pytest.param(
            {"gunicorn.conf.py": "graceful_timeout = 10\n"}, [*GUNICORN, "--graceful-timeout", "5"], {},
            (5.0, "--graceful-timeout", None), id="command-line-wins",
        ),
        pytest.param(
            {"gunicorn.conf.py": "graceful_timeout = 10\n"}, GUNICORN, {"GUNICORN_CMD_ARGS": "--graceful-timeout=7"},
            (7.0, "GUNICORN_CMD_ARGS", None), id="cmd-args-env-beats-file",
        ),
        pytest.param(
            {}, ["uvicorn", "app.main:app"], {"UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN": "8"},
            (8.0, "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN", None), id="uvicorn-env",
        ),
        pytest.param(
            {"gunicorn.conf.py": "import os\ngraceful_timeout = int(os.getenv('GRACEFUL_TIMEOUT', '120'))\n"},
            GUNICORN, {}, (None, "gunicorn.conf.py", "its graceful_timeout is computed when the server starts"),
            id="computed",
        ),
        pytest.param(
            {}, ["gunicorn", "-c", "/gunicorn_conf.py", "app.main:app"], {},
            (None, "/gunicorn_conf.py", "not a file here"), id="config-not-here",
        ),
    ],
)  # fmt: skip
def test_the_drain_bound_is_read_where_the_server_reads_it(tmp_path, files, argv, env, expected):
    """A config file, GUNICORN_CMD_ARGS, UVICORN_*: read (never run) in the order the server lets them override."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    bound = server_timeout(argv, env, cwd=tmp_path)
    assert (bound.seconds, bound.source, bound.unread) == expected


def test_prestop_seconds_reads_sleep_in_every_spelling():
    assert prestop_seconds(SleepHook(3)) == 3
    assert prestop_seconds(ExecHook(("sleep", "5"))) == 5
    assert prestop_seconds(ExecHook(("/bin/sh", "-c", "sleep 7"))) == 7
    assert prestop_seconds(ExecHook(("/wait-shutdown",))) is None
    assert prestop_seconds(HttpGetHook("/drain")) is None


def test_the_reference_deployment_has_no_error_or_warning():
    pod = load_manifest(K8S / "deployment.yaml")
    assert static_findings(pod, pod.containers[0], propagation=1.0) == []


# Each misconfiguration in k8s/bad/ that can be seen without running, by its research number.
STATIC = {
    "no-prestop": ("no-prestop", 1),
    "drain-exceeds-grace": ("drain-exceeds-grace", 3),
    "prestop-exceeds-grace": ("prestop-exceeds-grace", 4),
    "shell-wrapper": ("shell-wrapper", 5),
    "init-before-shell": ("init-before-shell", 7),
    "unbounded-drain": ("unbounded-drain", 9),
    "missing-prestop-binary": ("exec-sleep-prestop", 13),
    "prestop-kills": ("prestop-triggers-shutdown", 14),
    "capacity-hole": ("capacity-hole", 19),
}


@pytest.mark.parametrize(("name", "finding"), STATIC.items(), ids=list(STATIC))
def test_each_bad_manifest_has_its_static_finding(name, finding):
    pod = load_manifest(K8S / "bad" / f"{name}.yaml")
    findings = static_findings(pod, pod.containers[0])
    assert finding in {(f.code, f.number) for f in findings}, findings
    assert all(f.recommendation for f in findings)


def test_findings_that_need_more_than_the_file():
    pod = parse_manifest(
        pod_yaml(
            "{lifecycle: {preStop: {sleep: {seconds: 2}}, stopSignal: SIGQUIT},"
            " readinessProbe: {httpGet: {path: /r}},"
            " livenessProbe: {httpGet: {path: /l}, terminationGracePeriodSeconds: 5}}",
            command="[gunicorn, app.main:app]",
        )
    )
    codes = {f.code for f in static_findings(pod, pod.containers[0], propagation=5.0)}
    assert {
        "prestop-shorter-than-propagation",
        "wrong-stop-signal",
        "stop-signal-without-os",
        "slow-readiness",
        "liveness-grace-shorter",
    } <= codes


GUNICORN, UVICORN, HYPERCORN = (f"[{server}, app.main:app]" for server in ("gunicorn", "uvicorn", "hypercorn"))


@pytest.mark.parametrize(
    ("command", "lifecycle", "image", "says"),
    [
        pytest.param(GUNICORN, "SIGQUIT", None, "stopSignal SIGQUIT is gunicorn's quick", id="gunicorn"),
        pytest.param(GUNICORN, None, "SIGINT", "the image's STOPSIGNAL SIGINT is gunicorn's", id="image"),
        pytest.param(UVICORN, "QUIT", None, "SIGQUIT is not a signal uvicorn drains on", id="uvicorn"),
        pytest.param(HYPERCORN, None, "3", "STOPSIGNAL SIGQUIT is not a signal hypercorn", id="number"),
        pytest.param(UVICORN, None, "SIGINT", None, id="uvicorn-drains-on-int"),
        pytest.param(GUNICORN, "SIGTERM", "SIGQUIT", None, id="lifecycle-over-image"),
        pytest.param("[python, serve.py]", "SIGQUIT", None, None, id="unknown-server"),
    ],
)
def test_a_stop_signal_the_server_does_not_drain_on(command, lifecycle, image, says):
    signal = f", stopSignal: {lifecycle}" if lifecycle else ""
    pod = parse_manifest(pod_yaml(f"{{lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}{signal}}}}}", command=command))
    container = dataclasses.replace(pod.containers[0], image_stop_signal=image)
    found = [f for f in static_findings(pod, container) if f.code == "wrong-stop-signal"]
    assert [says in f.message for f in found] == ([True] if says else []), found


@pytest.mark.parametrize(
    ("config", "codes"),
    [
        pytest.param(None, {"drain-exceeds-grace"}, id="gunicorns-default-30s"),
        pytest.param("graceful_timeout = 10\n", set(), id="config-file-10s"),
        pytest.param("graceful_timeout = 60\n", {"drain-exceeds-grace"}, id="config-file-60s"),
        pytest.param("graceful_timeout = int('10')\n", {"drain-bound-unread"}, id="config-file-computed"),
    ],
)
def test_a_gunicorn_config_file_sets_the_drain_the_findings_judge(tmp_path, monkeypatch, config, codes):
    """grace 30 s, preStop 5 s: gunicorn's 30 s default does not fit; a gunicorn.conf.py's 10 s does."""
    monkeypatch.chdir(tmp_path)  # where the replay runs the command, and gunicorn finds its config file
    if config is not None:
        (tmp_path / "gunicorn.conf.py").write_text(config)
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 5}}}}", command="[gunicorn, app.main:app]"))
    found = {f.code for f in static_findings(pod, pod.containers[0])}
    assert found & {"drain-exceeds-grace", "drain-bound-unread", "unbounded-drain"} == codes


def deployment(replicas: int, **rolling_update: int | str) -> PodSpec:
    document = yaml.safe_load(pod_yaml(kind="Deployment"))
    spec = {"replicas": replicas, "template": {"spec": document["spec"]}}
    if rolling_update:
        spec["strategy"] = {"rollingUpdate": rolling_update}
    document["spec"] = spec
    return parse_manifest(yaml.safe_dump(document))


@pytest.mark.parametrize(
    ("rolling_update", "replicas", "hole"),
    [
        # 25% of 1 rounds down to 0 unavailable (and up to 1 surge): the old pod serves until the new is ready.
        pytest.param({}, 1, False, id="default-strategy-1-replica"),
        pytest.param({"maxSurge": 0, "maxUnavailable": 1}, 1, True, id="surge-0-unavailable-1"),
        # Both round to 0, so the controller makes unavailable 1.
        pytest.param({"maxSurge": 0, "maxUnavailable": "25%"}, 1, True, id="surge-0-unavailable-rounds-to-0"),
        pytest.param({"maxSurge": 1, "maxUnavailable": 1}, 2, False, id="two-replicas-one-down"),
        pytest.param({"maxSurge": 1, "maxUnavailable": "100%"}, 3, True, id="every-replica-down"),
    ],
)
def test_a_rollout_that_can_leave_no_ready_pod(rolling_update, replicas, hole):
    pod = deployment(replicas, **rolling_update)
    found = [f for f in static_findings(pod, pod.containers[0]) if f.code == "capacity-hole"]
    assert bool(found) is hole, found
    if hole:
        assert found[0].number == 19 and "no ready pod" in found[0].message


@pytest.mark.parametrize(
    ("max_surge", "max_unavailable", "replicas", "expected"),
    [
        pytest.param("25%", "25%", 1, (1, 0), id="default-1"),
        pytest.param("25%", "25%", 4, (1, 1), id="default-4"),
        pytest.param("25%", "25%", 10, (3, 2), id="default-10"),
        pytest.param("39%", "39%", 10, (4, 3), id="kubernetes-39pct"),
        pytest.param(0, 0, 5, (0, 1), id="both-0-counts"),
        pytest.param("0%", "0%", 0, (0, 1), id="both-0-percent-no-replicas"),
        pytest.param(0, "25%", 1, (0, 1), id="unavailable-rounds-to-0"),
        pytest.param(2, "50%", 3, (2, 1), id="count-and-percent"),
        pytest.param("100%", "0%", 10, (10, 0), id="full-surge"),
        pytest.param("29%", "29%", 100, (29, 29), id="exact-integer-arithmetic"),
        pytest.param(1, 0, 1, (1, 0), id="counts"),
    ],
)
def test_resolve_fenceposts_like_the_deployment_controller(max_surge, max_unavailable, replicas, expected):
    assert resolve_fenceposts(max_surge, max_unavailable, replicas) == expected


@pytest.mark.parametrize("value", ["5", "oops", -1, "-5%"])
def test_resolve_fenceposts_refuses_what_kubernetes_refuses(value):
    with pytest.raises(ManifestError, match="maxSurge must be"):
        resolve_fenceposts(value, 1, 3)


def test_budget_shows_its_arithmetic():
    budget = recommend_budget(1.4, 3.2, current_prestop=2, current_grace=8)
    assert (budget.prestop, budget.server_timeout, budget.grace) == (3, 5, 10)
    assert "does not fit" in budget.lines[-1]
    assert recommend_budget(0.5, 0.3, current_prestop=2, current_grace=8).lines[-1].endswith("it fits")


BAD = [
    pytest.param("kind: Pod\nspec: [", "invalid YAML at line", id="invalid-yaml"),
    pytest.param("- a\n- b\n", "must be a mapping", id="not-a-mapping"),
    pytest.param("apiVersion: v1\nkind: ConfigMap\n", "found ConfigMap", id="unsupported-kind"),
    pytest.param("", "found nothing", id="empty"),
    pytest.param("kind: Pod\nspec: {containers: []}\n", "no containers", id="no-containers"),
    pytest.param("kind: Deployment\nspec: {replicas: 2}\n", "no containers", id="no-template"),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: web, command: 'uvicorn a:b'}]}\n", "exec form", id="string-cmd"
    ),
    pytest.param(
        "kind: Pod\nspec: {terminationGracePeriodSeconds: soon, containers: [{name: w, command: [a]}]}\n",
        "terminationGracePeriodSeconds must be",
        id="bad-grace",
    ),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: w, command: [a], lifecycle: {preStop: {tcpSocket: {port: 1}}}}]}\n",
        "tcpSocket",
        id="tcp-hook",
    ),
    pytest.param(
        "kind: Pod\nspec: {containers: [{name: w, command: [a], lifecycle: {preStop: {sleep: {}}}}]}\n",
        "sleep.seconds",
        id="sleep-without-seconds",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_invalid_manifests_are_one_clear_error(text, message):
    with pytest.raises(ManifestError, match=message) as caught:
        parse_manifest(text)
    assert "\n" not in str(caught.value)


def test_unknown_container_lists_the_real_ones():
    pod = load_manifest(K8S / "deployment.yaml")
    with pytest.raises(ManifestError, match="its containers: web"):
        select_container(pod, "sidecar")


def test_missing_file(tmp_path: Path):
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path / "nope.yaml")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
pod_keys = st.sampled_from(
    ["containers", "terminationGracePeriodSeconds", "command", "args", "lifecycle", "preStop", "sleep", "name"]
)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["Pod", "Deployment", "Service", 7, None]), spec=yaml_values)
def test_any_document_is_a_pod_or_a_manifest_error(kind, spec):
    text = yaml.safe_dump({"apiVersion": "v1", "kind": kind, "spec": spec})
    try:
        pod = parse_manifest(text)
    except ManifestError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(pod, PodSpec)


@settings(max_examples=200, deadline=None)
@given(
    container=st.dictionaries(pod_keys, yaml_values, max_size=6),
    grace=st.one_of(st.integers(-5, 100), st.floats(allow_nan=True), st.text(max_size=5)),
)
def test_any_container_is_read_or_refused_cleanly(container, grace):
    text = yaml.safe_dump({"kind": "Pod", "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]}})
    try:
        pod = parse_manifest(text)
    except ManifestError as exc:
        assert "\n" not in str(exc)
    else:
        static_findings(pod, pod.containers[0])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_pod_or_a_manifest_error(text):
    try:
        parse_manifest(text)
    except ManifestError as exc:
        assert "\n" not in str(exc)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(["uvicorn", "a:b", "--timeout-keep-alive", "1"], ("uvicorn", 1.0), id="uvicorn-flag"),
        pytest.param(["gunicorn", "--keep-alive=4", "a:b"], ("gunicorn", 4.0), id="gunicorn-flag-with-equals"),
        pytest.param(["hypercorn", "a:b"], ("hypercorn", 5.0), id="hypercorn-default"),
        pytest.param(["sh", "-c", "exec uvicorn a:b --timeout-keep-alive 3"], ("uvicorn", 3.0), id="in-a-script"),
        pytest.param(["uvicorn", "a:b", "--timeout-keep-alive", "soon"], None, id="not-a-number"),
        pytest.param(["granian", "a:b"], None, id="no-known-flag"),
    ],
)
def test_server_keepalive(argv, expected):
    assert server_keepalive(argv) == expected


BOOT_SH = """#!/bin/sh
set -o errexit
INFO="INFO: [$(basename "$0")] "
echo "$INFO" "Booting in ${SC_BOOT_MODE} mode ..."
if [ "${SC_BOOT_MODE}" = "debug" ]; then
  exec sh -c "
    uvicorn server:app \\
      --host 0.0.0.0 \\
      --reload
  "
else
  exec uvicorn server:app \\
    --host 0.0.0.0 \\
    --log-level info
fi
"""


@pytest.mark.parametrize(
    ("argv", "localized_head"),
    [
        pytest.param(["sh", "./boot.sh"], ["sh", "-c"], id="a-shell-runs-the-file"),
        pytest.param(["sh", "-e", "boot.sh", "extra"], ["sh", "-e", "-c"], id="with-flags-and-arguments"),
        pytest.param(["./boot.sh"], ["/bin/sh", "-c"], id="the-file-by-its-shebang"),
        pytest.param(["tini", "--", "./boot.sh"], ["tini", "--", "/bin/sh", "-c"], id="behind-an-init"),
    ],
)
def test_an_entrypoint_script_file_is_read_and_run_with_its_app_on_the_probe(
    argv, localized_head, tmp_path, monkeypatch
):
    """`sh ./boot.sh` is what many images run: every branch that names the app runs it on the probe."""
    (tmp_path / "boot.sh").write_text(BOOT_SH)
    monkeypatch.chdir(tmp_path)
    command = analyse(argv)
    assert (command.shell, command.server, command.app_execs) == ("sh", "uvicorn", True)
    assert command.script_file == argv[-1] if argv[-1] != "extra" else command.script_file == "boot.sh"
    localized, app = localize(argv, port=4321, container_ports=[8000])
    assert app == "server:app"
    n = len(localized_head)
    assert localized[:n] == localized_head
    text = localized[n]
    assert text.count("uvicorn chaos.probe.asgi:app --host 127.0.0.1 --port 4321") == 2  # both branches
    assert "0.0.0.0" not in text and "server:app" not in text
    assert localized[n + 1 :] == argv[argv.index(command.script_file) :]  # `$0` and the arguments stay the script's
    assert text.endswith("\nexit $?")  # bash would exec a -c text's last command, never a file's


@pytest.mark.parametrize(
    ("text", "execs"),
    [
        pytest.param("#!/bin/sh\nalembic upgrade head\nexec uvicorn app.main:app\n", True, id="exec-last"),
        pytest.param("#!/bin/sh\nalembic upgrade head\nuvicorn app.main:app\n", False, id="no-exec"),
    ],
)
def test_whether_an_entrypoint_script_execs_the_app_is_read_from_the_file(text, execs, tmp_path, monkeypatch):
    """A shell that runs the server as its child stays PID 1, and a shell as PID 1 ignores SIGTERM."""
    (tmp_path / "entrypoint.sh").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert analyse(["sh", "entrypoint.sh"]).app_execs is execs
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 2}}}}", command="[sh, entrypoint.sh]"))
    found = {(f.code, f.severity) for f in static_findings(pod, pod.containers[0])}
    assert (("shell-wrapper", "error") in found) is not execs, found


def test_a_script_file_that_is_not_here_is_left_unread_and_said_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "huge.sh").write_text("#" * (MAX_SCRIPT_BYTES + 1))
    assert analyse(["sh", "huge.sh"]).script is None
    command = analyse(["sh", "/entrypoint.sh"])
    assert (command.script, command.script_file) == (None, "/entrypoint.sh")
    for word in ("a" * 5000, "/app/" + "b" * 5000, "nul\0in.sh"):  # no file can be named so: unread, no error
        assert analyse(["sh", word]).script is None and analyse([word]).shell is None
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 2}}}}", command="[sh, /entrypoint.sh]"))
    (finding,) = [f for f in static_findings(pod, pod.containers[0]) if f.code == "shell-wrapper"]
    assert finding.severity == "warning" and "/entrypoint.sh, which is not here to read" in finding.message


def test_the_journal_names_a_script_file_rather_than_copying_its_text(tmp_path, monkeypatch):
    """A script file may set secrets the manifest never shows: `pod.started` names it."""
    (tmp_path / "boot.sh").write_text("export API_KEY=hunter2\nexec uvicorn app.main:app --port 8000\n")
    monkeypatch.chdir(tmp_path)
    localized, _ = localize(["sh", "boot.sh"], port=4321)
    assert any("hunter2" in word for word in localized)  # what runs is the whole script
    assert journaled_argv(localized, ["sh", "boot.sh"]) == [
        "sh",
        "-c",
        "<boot.sh, run with the app on the probe>",
        "boot.sh",
    ]
    inline = ["sh", "-c", "uvicorn app.main:app --port 8000"]
    assert journaled_argv(localize(inline, port=4321)[0], inline) == localize(inline, port=4321)[0]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ["uvicorn", "app.main:app", "--ssl-certfile", "/tls/tls.crt", "--ssl-keyfile=/tls/tls.key"], id="words"
        ),
        pytest.param(
            ["sh", "-c", "exec uvicorn app.main:app --ssl-certfile /tls/tls.crt --ssl-keyfile=/tls/tls.key"],
            id="in-a-shell",
        ),
    ],
)
def test_a_replay_leaves_the_servers_tls_out(argv):
    """The certificate is a mounted Secret, not here; drainspec's requests are plain HTTP on 127.0.0.1."""
    localized, app = localize(argv, port=4321)
    assert app == "app.main:app"
    text = " ".join(localized)
    assert "ssl" not in text and "/tls/" not in text and "127.0.0.1" in text


def test_an_entrypoint_at_its_path_in_the_image_is_found_below_here(tmp_path, monkeypatch):
    """`/app/docker-entrypoint.sh` is the image's copy of the checkout drainspec runs in."""
    entrypoint = "/app/docker-entrypoint.sh"
    script = "#!/bin/bash\nalembic upgrade heads\ngranian --interface asgi app.main:app --port 8000\n"
    (tmp_path / "docker-entrypoint.sh").write_text(script)
    monkeypatch.chdir(tmp_path)
    command = analyse([entrypoint])
    assert (command.shell, command.server, command.app_execs) == ("bash", "granian", False)
    localized, app = localize([entrypoint], port=4321)
    assert app == "app.main:app" and localized[:2] == ["/bin/bash", "-c"] and localized[-1] == entrypoint
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 2}}}}", command=f"[{entrypoint}]"))
    (finding,) = [f for f in static_findings(pod, pod.containers[0]) if f.code == "shell-wrapper"]
    assert finding.severity == "error" and "command: [granian, ...]" in finding.recommendation


ENTRYPOINT = (
    '#!/bin/sh\n. "$PRE_START_PATH"\nexport APP_MODULE=${APP_MODULE:-"$MODULE_NAME:$VARIABLE_NAME"}\n'
    'exec uvicorn --host 0.0.0.0 --port 8080 "${APP_MODULE}" --reload || { echo failed; exit 1; }\n'
)


@pytest.mark.parametrize(
    ("env", "app"),
    [
        pytest.param({"APP_MODULE": "app.main:app", "PRE_START_PATH": "a.b:c"}, "app.main:app", id="set"),
        pytest.param({"APP_MODULE": "/not/an/import/string"}, None, id="not-an-import-string"),
        pytest.param({}, None, id="unset"),
    ],
)
def test_a_script_server_takes_its_app_from_a_variable(env, app):
    argv = ["sh", "-c", ENTRYPOINT]
    assert app_variable(argv, env) == ("APP_MODULE", app)
    localized, found = localize(argv, port=5555, container_ports=[8080], env=env)
    assert found == app
    if app is not None:
        assert f"exec uvicorn   {PROBE_APP} --host 127.0.0.1 --port 5555 --reload" in localized[2]
        assert '. "$PRE_START_PATH"' in localized[2]  # only the server's own words are the app's
    assert app_variable(["sh", "-c", "exec uvicorn app.main:app"], env) is None


@pytest.mark.parametrize(
    ("line", "args", "pid_1", "fails"),
    [
        pytest.param('exec "$@"', ["uvicorn", "app.main:app"], "uvicorn", set(), id="exec-the-cmd"),
        pytest.param('exec "${@}"  # the CMD', ["uvicorn", "app.main:app"], "uvicorn", set(), id="braces"),
        pytest.param('"$@"', ["uvicorn", "app.main:app"], "sh", {"shell-wrapper"}, id="runs-the-cmd-as-a-child"),
        pytest.param(
            'exec "$@"', ["/bin/sh", "-c", "uvicorn app.main:app --port $PORT"], "sh", {"shell-wrapper"}, id="cmd-sh-c"
        ),
    ],
)
def test_an_entrypoint_script_that_runs_its_arguments(tmp_path, monkeypatch, line, args, pid_1, fails):
    """The docker-entrypoint idiom: ENTRYPOINT a script ending in `exec "$@"`, CMD the server."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "entrypoint.sh").write_text(f"#!/bin/sh\nset -e\necho starting\n{line}\n")
    argv = ["./entrypoint.sh", *args]
    command = analyse(argv)
    assert command.server == "uvicorn"
    assert (command.shell or "uvicorn") == pid_1
    pod = parse_manifest(pod_yaml("{lifecycle: {preStop: {sleep: {seconds: 2}}}}", command=str(argv)))
    assert {f.code for f in static_findings(pod, pod.containers[0])} & {"shell-wrapper"} == fails
    localized, app = localize(argv, port=5555, container_ports=[8000])
    assert app == "app.main:app"
    assert localized[0] == "./entrypoint.sh"
    assert PROBE_APP in " ".join(localized) and "5555" in " ".join(localized)
