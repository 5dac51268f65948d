from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaos.journal import Event
from chaos.outcome import RunResult
from chaos.plugin import DrainResult
from chaos.runner import execute
from chaos.scenario import K8sOptions, Scenario
from chaos.target import wait_gone
from tests.services import postgres, redis_server  # noqa: F401  (fixtures: real PostgreSQL and Redis)

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


@pytest.fixture(autouse=True)
def no_orphans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """
    Every process a test starts is gone when it ends, even when the test failed: the test
    process's own descendants, and what escaped them (a `setsid` child of a server, reparented
    to init) but still carries the journal path of a run under this session's temporary
    directory in its environment.
    """
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    started = time.time()
    base = str(tmp_path_factory.getbasetemp())
    yield
    leftover = [p for p in me.children(recursive=True) if p.pid not in before]
    seen = {p.pid for p in leftover}
    leftover += [p for p in _carrying_a_journal_under(base, since=started) if p.pid not in seen]
    wait_gone(leftover, timeout=5)
    alive = [p for p in leftover if _running(p)]
    described = []
    for process in alive:
        with contextlib.suppress(psutil.Error):
            described.append(process.cmdline())
            process.kill()
    assert not alive, f"processes left running: {described}"


def _carrying_a_journal_under(base: str, *, since: float) -> list[psutil.Process]:
    """Processes started since `since` whose DRAINSPEC_JOURNAL lies under `base` (this session's runs)."""
    found = []
    for process in psutil.process_iter(["create_time"]):
        with contextlib.suppress(psutil.Error, OSError):
            if process.pid == os.getpid() or (process.info["create_time"] or 0) < since - 1:
                continue
            if process.environ().get("DRAINSPEC_JOURNAL", "").startswith(base + os.sep) and _running(process):
                found.append(process)
    return found


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def probe_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The journal the probe imported in this test's own process writes to, its writer opened anew."""
    from chaos import probe

    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv(probe.JOURNAL_ENV, str(journal))
    monkeypatch.setattr(probe, "_writer", None)
    return journal


@pytest.fixture
def run_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DrainResult]:
    """Run the reference scenario with overrides; returns the judged timeline."""
    monkeypatch.chdir(ROOT)
    counter = iter(range(1000))

    def run(scenario: Scenario = REFERENCE, **overrides: Any) -> DrainResult:
        scenario = dataclasses.replace(scenario, **overrides)
        run_dir = tmp_path / f"run{next(counter)}"
        return _judged(execute(scenario, run_dir), run_dir)

    return run


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # A shell's background job starts with SIGINT ignored (`make test &`, a CI runner's script),
    # and every drainspec a test spawns would inherit that: the Ctrl-C tests would then send a
    # signal nobody gets. Caught here, it is back to its default in every child.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _judged(events: list[Event], run_dir: Path) -> DrainResult:
    """The shipped plugin's result: the suite judges runs exactly as users' tests do."""
    result = RunResult.of(events, run_dir)
    return DrainResult(result.timeline, result.verdicts, run_dir)


K8S_OPTIONS = {f.name for f in dataclasses.fields(K8sOptions)}


@pytest.fixture
def replay_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DrainResult]:
    """
    Replay a manifest from `k8s/` (its first container; `dockerfile`, also in `k8s/`, the image
    it runs): keyword arguments are `K8sOptions` fields (propagation, seed, latency, ...) or the
    replay's traffic (`Scenario` fields).
    """
    from chaos.k8s.image import assemble_workdir, load_dockerfile
    from chaos.k8s.manifest import load_manifest, with_image
    from chaos.k8s.plan import REPLAY_TRAFFIC, Replay
    from chaos.k8s.replay import replay

    monkeypatch.chdir(ROOT)
    counter = iter(range(1000))

    def run(manifest: str, *, dockerfile: str | None = None, **overrides: Any) -> DrainResult:
        pod = load_manifest(ROOT / "k8s" / manifest)
        image = load_dockerfile(ROOT / "k8s" / dockerfile) if dockerfile is not None else None
        container, _ = with_image(pod, pod.containers[0], image)
        options = K8sOptions(**{k: v for k, v in overrides.items() if k in K8S_OPTIONS})
        traffic = dataclasses.replace(REPLAY_TRAFFIC, **{k: v for k, v in overrides.items() if k not in K8S_OPTIONS})
        n = next(counter)
        workdir = None
        if image is not None and image.rearranges():
            workdir = tmp_path / f"workdir{n}"
            workdir.mkdir()
            assemble_workdir(image, workdir)
        run_dir = tmp_path / f"replay{n}"
        return _judged(replay(Replay(pod, container, traffic, options, workdir), run_dir), run_dir)

    return run
