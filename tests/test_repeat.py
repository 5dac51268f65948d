"""
The same verdicts, run after run, with a CPU-busy neighbour on the machine: drainspec's
evidence is ordering on one clock, not timing luck. `DRAINSPEC_REPEAT` sets the count (the
issue asks for 30; CI runs a smaller count with `-m repeat` included in the default run).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.test_e2e_uvicorn import VARIANTS

pytestmark = [pytest.mark.e2e, pytest.mark.repeat]
REPEAT = int(os.environ.get("DRAINSPEC_REPEAT", "2"))
CASES = ["app.main:app", *(f"app.variants.{v}:app" for v in VARIANTS)]


@pytest.fixture
def busy_neighbour() -> Iterator[None]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("app", CASES, ids=[c.split(":")[0].rsplit(".", 1)[-1] for c in CASES])
def test_same_verdicts_every_time(run_scenario, busy_neighbour, app):
    module = importlib.import_module(app.split(":")[0])
    expected = set(getattr(module, "FAILS", ()))
    seen = []
    for _ in range(REPEAT):
        result = run_scenario(app=app, grace=2.0, env={"REFERENCE_TEARDOWN_SECONDS": "10"})
        seen.append(result.failed)
        assert result.failed == expected, result.explain()
    assert seen == [expected] * REPEAT


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        pytest.param("deployment.yaml", set(), id="reference-deployment"),
        pytest.param("bad/no-prestop.yaml", {"no-refused-while-routed"}, id="no-prestop"),
    ],
)
def test_same_replay_verdicts_every_time(replay_manifest, busy_neighbour, manifest, expected):
    for _ in range(REPEAT):
        result = replay_manifest(manifest, requests=1, request_seconds=0.5)
        assert result.failed == expected, result.explain()
