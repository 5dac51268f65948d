"""
Rolling updates replayed: `replicas` pods behind the router, replaced as maxSurge and
maxUnavailable allow, under steady load. The correct Deployment loses no request; a pod without
a preStop delay, or a strategy that leaves no ready pod, does.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chaos.errors import SetupError
from chaos.k8s.manifest import load_manifest, parse_manifest
from chaos.k8s.plan import Replay
from chaos.k8s.rollout import Strategy, rollout
from chaos.outcome import RunResult
from chaos.scenario import K8sOptions
from tests.conftest import ROOT

K8S = ROOT / "k8s"


ZERO_FAILED = "rollout-zero-failed-requests"


def replay_rollout(manifest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: object) -> RunResult:
    monkeypatch.chdir(ROOT)
    pod = load_manifest(K8S / manifest)
    plan = Replay(pod, pod.containers[0], options=K8sOptions(**options))  # type: ignore[arg-type]
    events = rollout(plan, tmp_path / "run")
    return RunResult.of(events)


def steady(result: RunResult) -> list:
    return [e for e in result.events if e.kind == "client.request" and e.get("role") == "steady"]


@pytest.mark.e2e
def test_the_reference_deployment_rolls_without_a_failed_request(tmp_path, monkeypatch):
    result = replay_rollout("deployment.yaml", tmp_path, monkeypatch)
    assert result.failed == set() and result.status(ZERO_FAILED) == "pass", result.explain()
    started = [e.get("pod") for e in result.events if e.kind == "pod.started"]
    deleted = [e.get("pod") for e in result.events if e.kind == "pod.deleted"]
    assert started == ["reference-old1", "reference-old2", "reference-new3", "reference-new4"]
    assert deleted == ["reference-old1", "reference-old2"]
    assert len(steady(result)) > 10


@pytest.mark.e2e
def test_no_prestop_loses_requests_during_a_rollout(tmp_path, monkeypatch):
    result = replay_rollout("bad/no-prestop.yaml", tmp_path, monkeypatch)
    assert result.failed == {ZERO_FAILED}, result.explain()
    assert any(e.get("outcome") != "ok" for e in steady(result))


@pytest.mark.e2e
def test_a_capacity_hole_leaves_no_endpoint(tmp_path, monkeypatch):
    result = replay_rollout("bad/capacity-hole.yaml", tmp_path, monkeypatch, propagation=(0.2, 0.2))
    assert result.failed == {ZERO_FAILED}, result.explain()
    kinds = [(e.kind, e.get("pod")) for e in result.events if e.kind in ("pod.deleted", "server.ready")]
    # maxSurge 0: the only pod is deleted before its replacement is ready.
    assert kinds.index(("pod.deleted", "capacity-hole-old1")) < kinds.index(("server.ready", "capacity-hole-new2"))


@pytest.mark.e2e
def test_cli_rollout_fails_its_junit_case(tmp_path):
    junit = tmp_path / "junit.xml"
    out = tmp_path / "out"
    command = ["k8s", "k8s/bad/no-prestop.yaml", "--rollout", "--junit", str(junit), "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL {ZERO_FAILED}" in result.stdout
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert cases[ZERO_FAILED].find("failure") is not None
    failed = [name for name, case in cases.items() if case.find("failure") is not None]
    assert failed == [ZERO_FAILED]


@pytest.mark.parametrize(
    ("replicas", "surge", "unavailable", "expected"),
    [
        pytest.param(4, "25%", "25%", (4, 1, 1), id="defaults"),
        pytest.param(2, "25%", "25%", (2, 1, 0), id="surge-rounds-up"),
        pytest.param(3, 0, 1, (3, 0, 1), id="counts"),
    ],
)
def test_strategy_resolves_percentages_like_the_controller(replicas, surge, unavailable, expected):
    text = f"""
kind: Deployment
metadata: {{name: d}}
spec:
  replicas: {replicas}
  strategy: {{rollingUpdate: {{maxSurge: {surge!r}, maxUnavailable: {unavailable!r}}}}}
  template: {{spec: {{containers: [{{name: w, command: [uvicorn, a:b]}}]}}}}
"""
    strategy = Strategy.of(parse_manifest(text))
    assert (strategy.replicas, strategy.surge, strategy.unavailable) == expected


def test_a_strategy_that_cannot_progress_is_refused():
    text = """
kind: Deployment
spec:
  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}
  template: {spec: {containers: [{name: w, command: [uvicorn, a:b]}]}}
"""
    with pytest.raises(SetupError, match="both 0"):
        Strategy.of(parse_manifest(text))
