"""The pytest plugin as a user meets it: the `drainspec` fixture, its marker, its assertion."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

SLOW = {"request_path": "GET /slow?seconds={seconds}", "request_seconds": 0.4, "background": 0}


@pytest.mark.e2e
@pytest.mark.drainspec(app="app.main:app", grace=5.0, requests=2)
def test_fixture_runs_the_marked_app(drainspec, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    result = drainspec.run(**SLOW)
    result.assert_passed()
    assert result.timeline.scenario is not None and result.timeline.scenario.requests == 2


@pytest.mark.e2e
@pytest.mark.drainspec(app="app.variants.exit_skips_teardown:app", grace=3.0)
def test_assert_passed_fails_with_the_evidence(drainspec, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    result = drainspec.run(**SLOW)
    assert result.failed == {"teardown-ran", "resources-closed"}
    with pytest.raises(pytest.fail.Exception, match="teardown-ran"):
        result.assert_passed()
    result.assert_passed(allow={"teardown-ran", "resources-closed"})


@pytest.mark.e2e
@pytest.mark.drainspec(grace=5.0, requests=2)
def test_fixture_runs_the_apps_own_script(drainspec, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.chdir(ROOT)
    result = drainspec.run(command="python tests/apps/serve_itself.py", request_path="/work?seconds={seconds}",
                           request_seconds=0.3, background=0)  # fmt: skip
    result.assert_passed()
    assert [e.get("app") for e in result.timeline.events if e.kind == "probe.loaded"] == ["__main__:app"]
    with pytest.raises(pytest.fail.Exception, match="teardown-ran"):
        drainspec.run(command="python tests/apps/serve_itself.py --in-thread", request_path="/work?seconds={seconds}",
                      request_seconds=0.3, background=0).assert_passed()  # fmt: skip


def test_marker_is_registered(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.drainspec(app="x:y")
        def test_needs_nothing(drainspec):
            assert drainspec.defaults == {"app": "x:y"}
        """
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_run_without_app_says_what_is_missing(pytester):
    pytester.makepyfile(
        """
        def test_no_app(drainspec):
            drainspec.run()
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*needs app='module:attribute'*or the app's own script: command='python main.py'*"])
