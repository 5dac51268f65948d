from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaos.judge.timeline import Timeline, build
from chaos.judge.verdict import Verdict, judge
from chaos.runner import execute
from chaos.scenario import Scenario
from chaos.target import wait_gone

ROOT = Path(__file__).resolve().parent.parent

# The reference scenario, tuned down to tenths of a second: slow requests shorter than the
# background deliveries, so that a server (or an app) that does not wait for background work
# shows it.
REFERENCE = Scenario(
    app="app.main:app",
    requests=2,
    request_seconds=0.5,
    request_path="GET /slow?seconds={seconds}",
    background=2,
    background_seconds=1.0,
    background_path="POST /register/{id}?deliver_seconds={seconds}",
    integrity="app.integrity:check",
    grace=5.0,
)


@dataclasses.dataclass(frozen=True)
class RunResult:
    timeline: Timeline
    verdicts: list[Verdict]
    run_dir: Path

    @property
    def failed(self) -> set[str]:
        return {v.name for v in self.verdicts if v.failed}

    def verdict(self, name: str) -> Verdict:
        return next(v for v in self.verdicts if v.name == name)

    def explain(self) -> str:
        lines = []
        for v in self.verdicts:
            lines.append(f"{v.status.value:>14} {v.name}: {v.summary}")
            lines.extend(f"{'':>16}- {item}" for item in v.evidence)
        return "\n".join(lines)


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every process a test starts is gone when it ends, even when the test failed."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    leftover = [p for p in me.children(recursive=True) if p.pid not in before]
    wait_gone(leftover, timeout=5)
    alive = [p for p in leftover if _running(p)]
    for process in alive:
        process.kill()
    assert not alive, f"processes left running: {[p.cmdline() for p in alive]}"


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def run_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., RunResult]:
    """Run the reference scenario with overrides; returns the judged timeline."""
    monkeypatch.chdir(ROOT)
    counter = iter(range(1000))

    def run(scenario: Scenario = REFERENCE, **overrides: Any) -> RunResult:
        scenario = dataclasses.replace(scenario, **overrides)
        run_dir = tmp_path / f"run{next(counter)}"
        timeline = build(execute(scenario, run_dir))
        return RunResult(timeline, judge(timeline), run_dir)

    return run


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


@pytest.fixture
def replay_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., RunResult]:
    """Replay a manifest from `k8s/` (its first container) with `ReplayOptions` overrides."""
    from chaos.k8s.manifest import load_manifest
    from chaos.k8s.replay import ReplayOptions, replay

    monkeypatch.chdir(ROOT)
    counter = iter(range(1000))

    def run(manifest: str, **options: Any) -> RunResult:
        pod = load_manifest(ROOT / "k8s" / manifest)
        run_dir = tmp_path / f"replay{next(counter)}"
        timeline = build(replay(pod, pod.containers[0], ReplayOptions(**options), run_dir))
        return RunResult(timeline, judge(timeline), run_dir)

    return run
