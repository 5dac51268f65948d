"""
A replay keeps everything on 127.0.0.1: what the container binds, and where probes and hooks
send requests. No test here sends a byte to a non-loopback address.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from chaos.cli import main
from chaos.errors import ManifestError, SetupError
from chaos.k8s.loopback import checked_paths, keep_loopback, pod_path, pod_url
from chaos.k8s.manifest import localize, parse_manifest
from chaos.k8s.plan import Replay
from chaos.target import check_loopback_only
from tests.conftest import ROOT

LOCAL = "127.0.0.1"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(
            ["gunicorn", "-b0.0.0.0:8000", "app.main:app"],
            ["gunicorn", "chaos.probe.asgi:app", "--bind", f"{LOCAL}:5555"],
            id="gunicorn-attached-b",
        ),
        pytest.param(
            ["python3", "-m", "http.server", "8000"],
            ["python3", "-m", "http.server", "5555", "--bind", LOCAL],
            id="http-server-binds-everything",
        ),
        pytest.param(
            ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"],
            ["python3", "-m", "http.server", "5555", "--bind", LOCAL],
            id="http-server-bind-any",
        ),
        pytest.param(["mysrv", "--listen", "[::]:8000"], ["mysrv", "--listen", f"{LOCAL}:5555"], id="ipv6-any"),
        pytest.param(
            ["sh", "-c", "exec gunicorn -b0.0.0.0:8000 app.main:app"],
            ["sh", "-c", f"exec gunicorn  chaos.probe.asgi:app --bind {LOCAL}:5555"],
            id="script",
        ),
    ],
)
def test_every_bind_is_rewritten_to_loopback(argv, expected):
    localized, _ = localize(argv, port=5555, container_ports=[8000])
    assert keep_loopback(localized) == expected
    assert not any("0.0.0.0" in word or "[::]" in word for word in keep_loopback(localized))


@pytest.mark.parametrize(
    "path",
    ["@192.0.2.2:9999/x", "/@192.0.2.2:9999/x", "//192.0.2.2/x", "/x?next=http://192.0.2.2/", "healthz"],
)
def test_probe_and_hook_paths_stay_on_the_pod(path):
    url = pod_url(8000, pod_path(path, where="readinessProbe.httpGet.path"))
    assert url.host == LOCAL and url.port == 8000
    assert url.raw_path.startswith(b"/")


@pytest.mark.parametrize("path", ["/x\r\nHost: evil", "/a b", "/x#frag", "/\x00"])
def test_unsendable_paths_are_refused(path):
    with pytest.raises(ManifestError, match="fix it in the manifest"):
        pod_path(path, where="readinessProbe.httpGet.path")


def manifest(
    readiness: str | None = "/readyz", prestop: str | None = None, command: str = "[uvicorn, app.main:app]"
) -> str:
    """A one-container Pod; paths are written as YAML double-quoted strings, escapes and all."""
    probe = f", readinessProbe: {{httpGet: {{path: {json.dumps(readiness)}, port: 8000}}}}" if readiness else ""
    hook = f", lifecycle: {{preStop: {{httpGet: {{path: {json.dumps(prestop)}, port: 8000}}}}}}" if prestop else ""
    return (
        "kind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, command: "
        f"{command}, ports: [{{containerPort: 8000}}]{probe}{hook}}}]}}\n"
    )


def test_a_readiness_path_with_an_at_sign_is_requested_on_loopback():
    pod = parse_manifest(manifest(readiness="@192.0.2.2:9999/x"))
    path = checked_paths(Replay(pod, pod.containers[0]))
    assert path == "/@192.0.2.2:9999/x"
    assert pod_url(4321, path).host == LOCAL


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(manifest(readiness="/ready\r\nx"), id="crlf-readiness"),
        pytest.param(manifest(prestop="/drain\nx"), id="crlf-prestop"),
    ],
)
def test_a_replay_with_an_unsendable_path_stops_before_anything_runs(tmp_path, capsys, text):
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    code = main(["k8s", str(path), "--out", str(tmp_path / "out"), "--rollout"])
    code_single = main(["k8s", str(path), "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert code == code_single == 2, err
    assert err.count("drainspec: error: ") == 2 and "fix it in the manifest" in err
    assert not (tmp_path / "out" / "journal.jsonl").exists()


LISTEN = """
import socket, sys, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((sys.argv[1], int(sys.argv[2])))
server.listen()
print("listening", flush=True)
time.sleep(30)
"""


def _listener(host: str) -> subprocess.Popen[str]:
    with socket.socket() as probe:
        probe.bind((LOCAL, 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", LISTEN, host, str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "listening"
    return process


def test_a_server_on_loopback_passes_the_listen_check():
    process = _listener(LOCAL)
    try:
        check_loopback_only(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_server_on_every_interface_is_stopped():
    process = _listener("0.0.0.0")
    try:
        with pytest.raises(SetupError, match=r"listens on 0\.0\.0\.0:\d+ .* not only on 127\.0\.0\.1"):
            check_loopback_only(process.pid)
    finally:
        process.kill()
        process.wait()


def test_a_port_answered_by_another_process_is_not_the_servers(tmp_path):
    """A port taken by another process after it was picked answers too: the run must not drive that process."""
    import asyncio

    from chaos.waits import wait_port

    other = _listener(LOCAL)  # holds the port, as another test's server would
    port = int(other.args[-1])
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # never listens there
    try:
        with pytest.raises(SetupError, match=rf"{LOCAL}:{port} is answered by another process than the server"):
            asyncio.run(wait_port(server, port=port, timeout=0.5, log=tmp_path / "server.log"))
        asyncio.run(wait_port(other, port=port, timeout=5, log=tmp_path / "server.log"))  # its own: ready
    finally:
        for process in (other, server):
            process.kill()
            process.wait()


@pytest.mark.e2e
def test_a_replay_of_a_command_listening_everywhere_is_refused(tmp_path):
    """The command binds 0.0.0.0 itself (nothing to rewrite): the replay stops once it listens."""
    code = "import socket, sys, time; server = socket.socket(); server.bind(('0.0.0.0', int(sys.argv[1])));"
    code += " server.listen(); time.sleep(30)"
    text = manifest(readiness=None, command=f"[python3, -c, {json.dumps(code)}, '8000']")
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", "k8s", str(path), "--out", str(tmp_path / "out"), "--ready-timeout", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "listens on 0.0.0.0" in lines[0], result.stderr
