"""
The findings table itself: one row per code, research numbers in range, every check quiet on
the reference Deployment, and the manifest module still handing out the same functions.
"""

from __future__ import annotations

import pytest

from chaos.k8s import findings, manifest
from chaos.k8s.findings import RULES, Facts, Rule
from tests.conftest import ROOT

RESEARCH_ROWS = range(1, 20)  # the research table of misconfigurations has rows 1-19


def test_each_code_is_registered_once_with_a_research_row():
    codes = [rule.code for rule in RULES]
    assert len(codes) == len(set(codes))
    assert all(rule.number in RESEARCH_ROWS for rule in RULES)


@pytest.mark.parametrize("rule", RULES, ids=[rule.code for rule in RULES])
def test_every_check_is_quiet_on_the_reference_deployment(rule: Rule):
    pod = manifest.load_manifest(ROOT / "k8s" / "deployment.yaml")
    assert rule.apply(Facts.of(pod, pod.containers[0], propagation=1.0)) is None


def test_the_manifest_module_re_exports_the_findings():
    assert manifest.static_findings is findings.static_findings
    assert manifest.Finding is findings.Finding


def test_prestop_triggers_shutdown_is_one_rule_for_exec_and_http():
    text = """
kind: Pod
spec:
  containers:
    - {name: w, command: [uvicorn, a:b], lifecycle: {preStop: {httpGet: {path: /shutdown}}}}
"""
    pod = manifest.parse_manifest(text)
    found = [f for f in findings.static_findings(pod, pod.containers[0]) if f.code == "prestop-triggers-shutdown"]
    assert [(f.number, f.severity) for f in found] == [(14, "warning")]
