"""
The pytest plugin (registered through the `pytest11` entry point): a `drainspec` fixture that
runs a shutdown scenario against your app and hands back the verdicts.

    @pytest.mark.drainspec(grace=5, requests=3)
    def test_my_app_drains(drainspec):
        result = drainspec.run(app="myservice.main:app", request_path="GET /slow?seconds={seconds}")
        result.assert_passed()

A service that starts its own server is run as it ships: `drainspec.run(command="python main.py")`.

Options come from `Scenario`; the marker gives defaults, `run()` keyword arguments override
them. Every server process is reaped before the fixture returns, whatever the test did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.errors import DrainspecError
from chaos.outcome import RunResult
from chaos.runner import execute
from chaos.scenario import Scenario
from chaos.servers import own_script_of

MARKER = "drainspec"


class DrainResult(RunResult):
    """The verdicts of one run (`chaos.outcome.RunResult`), with an assertion for tests."""

    def assert_passed(self, *, allow: set[str] | frozenset[str] = frozenset()) -> None:
        """Fail the test, with the evidence, if any verdict outside `allow` failed or evidence is missing."""
        unexpected = self.failed - set(allow)
        if unexpected:
            pytest.fail(f"shutdown verdicts failed: {sorted(unexpected)}\n{self.explain()}", pytrace=False)
        if self.missing_evidence:
            pytest.fail(f"incomplete evidence: {'; '.join(self.missing_evidence)}\n{self.explain()}", pytrace=False)


class Drainspec:
    """The fixture's handle: `run()` as many scenarios as the test needs."""

    def __init__(self, defaults: dict[str, Any], directory: Path) -> None:
        self.defaults = defaults
        self.directory = directory
        self._runs = 0

    def run(self, **options: Any) -> DrainResult:
        values = {**self.defaults, **options}
        if "app" not in values and (script := own_script_of(values.get("command"))) is not None:
            values["app"] = script.name  # the app's own script decides which app its server runs
        if "app" not in values:
            raise TypeError(
                "drainspec.run() needs app='module:attribute' (or the marker's app=), "
                "or the app's own script: command='python main.py'"
            )
        if "server_args" in values:
            values["server_args"] = tuple(values["server_args"])
        scenario = Scenario(**values)
        self._runs += 1
        run_dir = self.directory / f"run{self._runs}"
        try:
            events = execute(scenario, run_dir)
        except DrainspecError as exc:
            # One line, not a traceback through drainspec: what the user must change is all of it.
            pytest.fail(f"drainspec could not run the scenario: {exc}", pytrace=False)
        result = RunResult.of(events, run_dir)
        return DrainResult(result.timeline, result.verdicts, run_dir)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): default Scenario options for the drainspec fixture (app, server, requests, grace, ...)",
    )


@pytest.fixture
def drainspec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Drainspec]:
    defaults: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        defaults.update(marker.kwargs)
    yield Drainspec(defaults, tmp_path / "drainspec")
