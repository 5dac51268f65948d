"""
Replays behind a real ingress proxy (`drainspec k8s --ingress nginx|haproxy`): nginx and haproxy
from the distribution's packages, started on 127.0.0.1 with a generated config in the run
directory, reloaded when an endpoint changes, reaped with the run, their logs in the journal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaos.journal import Kind
from chaos.k8s.manifest import load_manifest
from chaos.k8s.plan import REPLAY_TRAFFIC, Replay
from chaos.k8s.rollout import rollout
from chaos.outcome import RunResult
from chaos.scenario import K8sOptions
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def _installed(program: str) -> bool:
    return shutil.which(program) is not None or os.access(f"/usr/sbin/{program}", os.X_OK)


needs_nginx = pytest.mark.skipif(not _installed("nginx"), reason="nginx is not installed (apt-get install nginx)")
needs_haproxy = pytest.mark.skipif(
    not _installed("haproxy"), reason="haproxy is not installed (apt-get install haproxy)"
)


def _no_proxy_left(run_dir: Path) -> None:
    """No proxy process of this run outlived it (its config path is on its command line)."""
    left = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or ())
        if str(run_dir) in cmdline:
            left.append(cmdline)
    assert not left, left


def _proxied(result) -> list:
    return [e for e in result.timeline.events if e.kind == Kind.PROXY_REQUEST]


@needs_nginx
def test_the_reference_deployment_passes_behind_nginx(replay_manifest, tmp_path: Path):
    result = replay_manifest("ingress/deployment.yaml", ingress="nginx", requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    assert result.verdict("no-proxy-errors").status == "pass"
    assert result.timeline.replay["ingress"] == "nginx"
    assert "upstream-keepalive-timeout=60" in result.timeline.replay["ingress_options"]
    proxied = _proxied(result)
    assert proxied and any(a.get("pod") == "reference-behind-ingress" for e in proxied for a in e.get("attempts"))
    assert (result.run_dir / "ingress" / "nginx.conf").exists()
    _no_proxy_left(tmp_path)


@needs_nginx
def test_no_prestop_behind_nginx_gets_502s_it_could_not_retry(replay_manifest, tmp_path: Path):
    """One pod: nginx has nowhere to retry a refused connection; each 502 names the pod and the refusal."""
    result = replay_manifest("ingress/no-prestop.yaml", ingress="nginx", requests=1, request_seconds=0.3)
    assert result.failed == {"no-refused-while-routed", "no-proxy-errors"}, result.explain()
    verdict = result.verdict("no-proxy-errors")
    assert "refused" in verdict.summary
    texts = [str(item) for item in verdict.evidence]
    assert any("no-prestop-behind-ingress 502" in text and "Connection refused" in text for text in texts), texts
    assert any("preStop sleep longer" in text for text in texts), texts
    # Judged from the journal's order: every 502 came after the deletion and before the removal.
    deleted, removed = result.timeline.deleted, result.timeline.routed_until
    assert deleted is not None and removed is not None
    failed = [e for e in _proxied(result) if e.get("status") == 502]
    assert failed
    _no_proxy_left(tmp_path)


def _rollout(manifest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **more: Any) -> RunResult:
    monkeypatch.chdir(ROOT)
    pod = load_manifest(ROOT / "k8s" / manifest)
    options = K8sOptions(propagation=(0.3, 0.3), ingress="nginx", **more)
    events = rollout(Replay(pod, pod.containers[0], REPLAY_TRAFFIC, options), tmp_path / "run")
    return RunResult.of(events, tmp_path / "run")


@needs_nginx
def test_the_reference_deployment_rolls_behind_nginx_with_zero_failed_requests(tmp_path, monkeypatch):
    result = _rollout("ingress/deployment.yaml", tmp_path, monkeypatch)
    statuses = {v.name: v.status for v in result.verdicts}
    assert statuses["rollout-zero-failed-requests"] == "pass", statuses
    assert statuses["no-proxy-errors"] == "pass", statuses
    _no_proxy_left(tmp_path)


@needs_nginx
def test_a_rollout_without_prestop_behind_nginx_shows_what_nginx_retried(tmp_path, monkeypatch):
    result = _rollout("ingress/no-prestop.yaml", tmp_path, monkeypatch)
    retried = [e for e in _proxied(result) if len(e.get("attempts")) > 1]
    assert retried, "nginx retried nothing"
    first = retried[0].get("attempts")[0]
    assert first["status"] == "502" and "Connection refused" in first["error"]
    verdict = next(v for v in result.verdicts if v.name == "no-proxy-errors")
    assert "retried" in verdict.summary
    _no_proxy_left(tmp_path)


@needs_haproxy
def test_the_reference_deployment_passes_behind_haproxy(replay_manifest, tmp_path: Path):
    result = replay_manifest("ingress/deployment.yaml", ingress="haproxy", requests=1, request_seconds=0.3)
    assert result.failed == set(), result.explain()
    assert result.timeline.replay["ingress"] == "haproxy"
    reloads = [e for e in result.timeline.events if e.kind == Kind.PROXY_RELOADED]
    assert len(reloads) >= 3  # started, the pod added, the pod removed
    _no_proxy_left(tmp_path)


@needs_nginx
def test_cli_prints_the_ingress_defaults_and_the_keepalive_finding(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chaos.cli",
            "k8s",
            "k8s/ingress/keepalive-below-proxy.yaml",
            "--ingress",
            "nginx",
            "--ingress-option",
            "upstream-keepalive-timeout=30",
            "--static",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "keepalive-below-proxy (#10)" in result.stdout and "keeps them 30s" in result.stdout


@needs_haproxy
def test_no_prestop_behind_haproxy_is_named_from_its_log(replay_manifest, tmp_path: Path):
    """HAProxy retries the refused connection, then answers 503; its log's termination state names the refusal."""
    result = replay_manifest("ingress/no-prestop.yaml", ingress="haproxy", requests=1, request_seconds=0.3)
    assert result.failed == {"no-refused-while-routed", "no-proxy-errors"}, result.explain()
    verdict = result.verdict("no-proxy-errors")
    assert "refused" in verdict.summary
    assert any("termination SC" in str(item) for item in verdict.evidence)
    _no_proxy_left(tmp_path)


@needs_nginx
def test_the_reference_deployment_rolls_behind_nginx_at_1000_requests_per_second(tmp_path, monkeypatch):
    """Paced keep-alive load: zero failed requests, each journaled with its connection."""
    result = _rollout("ingress/deployment.yaml", tmp_path, monkeypatch, load_rate=1000.0)
    statuses = {v.name: v.status for v in result.verdicts}
    assert statuses["rollout-zero-failed-requests"] == "pass", result.verdicts
    steady = [e for e in result.timeline.events if e.kind == Kind.CLIENT_REQUEST and e.get("role") == "steady"]
    assert len(steady) > 1000 and all(e.get("client_port") for e in steady)
    span = (max(int(e.get("sent")) for e in steady) - min(int(e.get("sent")) for e in steady)) / 1e9
    assert len(steady) / span > 800, f"{len(steady)} requests in {span:.2f}s"
    _no_proxy_left(tmp_path)


# The keep-alive race: uvicorn closes idle connections after 1 s, nginx pools them for 60 s. On
# loopback the pod's close reaches nginx within microseconds; 1 ms of emulated network each way
# (`chaos.k8s.link`) and bursts of POSTs aimed at the pod's close show it as a cluster does.
RACE = {
    "ingress": "nginx",
    "link_delay": 0.001,
    "load_bursts": 8,
    "load_connections": 32,
    "requests": 1,
    "request_seconds": 0.3,
    "seed": 1,
}


def _late(result: RunResult) -> list:
    return [e for e in result.timeline.events if e.kind == Kind.LINK_LATE_REQUEST]


@needs_nginx
def test_the_keepalive_race_behind_a_1ms_network_fails_with_502s_named_as_the_race(replay_manifest, tmp_path: Path):
    result = replay_manifest("ingress/keepalive-below-proxy.yaml", **RACE)
    verdict = result.verdict("no-proxy-errors")
    assert verdict.status == "fail" and "keep-alive" in verdict.summary, result.explain()
    texts = [item.text for item in verdict.evidence]
    assert any(text.startswith("k") and "upstream prematurely closed connection" in text for text in texts), texts
    assert any("the keep-alive race" in text and "--timeout-keep-alive" in text for text in texts), texts
    assert any("on the network to keepalive-below-proxy (1 ms each way)" in text for text in texts), texts
    assert "keepalive-below-proxy" in {f.get("code") for f in result.timeline.findings}
    # The journal's order: the link saw requests reach connections the pod had closed, each one
    # journaled at or after that close.
    late = _late(result)
    assert late and [e for e in _proxied(result) if e.get("status") == 502], result.explain()
    assert all(e.t >= e.get("pod_closed") for e in late)
    _no_proxy_left(tmp_path)


@needs_nginx
def test_a_proxy_that_drops_idle_connections_before_the_pod_has_no_race(replay_manifest, tmp_path: Path):
    """The same bursts and network, with nginx's upstream idle timeout below uvicorn's keep-alive."""
    result = replay_manifest(
        "ingress/keepalive-below-proxy.yaml", ingress_options=("upstream-keepalive-timeout=500ms",), **RACE
    )
    assert result.verdict("no-proxy-errors").status == "pass", result.explain()
    assert not _late(result), result.explain()
    assert result.failed == set(), result.explain()
    _no_proxy_left(tmp_path)
