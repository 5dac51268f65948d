"""The command line as CI uses it: exit codes, report files, and reports rebuilt from a journal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from chaos.reports.json import REPORT_SCHEMA
from chaos.servers import installed_version
from tests.conftest import ROOT
from tests.test_bad_input import drainspec

pytestmark = pytest.mark.e2e

REFERENCE_ARGS = [
    "--requests", "2", "--request-seconds", "0.4", "--request-path", "GET /slow?seconds={seconds}",
    "--background", "1", "--background-seconds", "0.6",
    "--background-path", "POST /register/{id}?deliver_seconds={seconds}",
    "--integrity", "app.integrity:check", "--grace", "5",
]  # fmt: skip


@pytest.mark.parametrize(
    ("app", "code", "failed"),
    [
        pytest.param("app.main:app", 0, set(), id="correct"),
        pytest.param("app.variants.exit_skips_teardown:app", 1, {"teardown-ran", "resources-closed"}, id="faulty"),
    ],
)
def test_exit_code_and_reports(tmp_path, app, code, failed):
    out = tmp_path / "out"
    result, _ = drainspec("run", "--app", app, *REFERENCE_ARGS, "--out", str(out))
    assert result.returncode == code, result.stdout + result.stderr
    module = app.partition(":")[0].replace(".", "/")
    assert f"{app} loaded from {ROOT / module}.py" in result.stdout  # which app was judged, by its file
    assert f", served by uvicorn {installed_version('uvicorn')}\n" in result.stdout  # and which release ran it
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == REPORT_SCHEMA
    assert {v["name"] for v in report["verdicts"] if v["status"] == "fail"} == failed
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("failures") == str(len(failed))
    assert {case.get("name") for case in suite if case.find("failure") is not None} == failed
    assert (out / "journal.jsonl").stat().st_mode & 0o777 == 0o600
    assert out.stat().st_mode & 0o777 == 0o700
    umask = os.umask(0)
    os.umask(umask)  # the app's files keep the modes the user's umask gives them, as in production
    assert (out / "data" / "reference.db").stat().st_mode & 0o777 == 0o644 & ~umask  # SQLite creates its files 0644

    rebuilt, _ = drainspec("report", str(out / "journal.jsonl"), "--json", str(tmp_path / "again.json"))
    assert rebuilt.returncode == code
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["verdicts"] == report["verdicts"]


def test_any_asgi_app_with_the_probe_endpoints(tmp_path):
    """No app endpoint named: the probe's own hold and background endpoints are driven."""
    out = tmp_path / "out"
    result, _ = drainspec(
        "run", "--app", "tests.apps.plain:app", "--request-seconds", "0.3",
        "--background-seconds", "0.5", "--grace", "5", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "PASS"


def test_app_without_lifespan(tmp_path):
    result, _ = drainspec(
        "run", "--app", "tests.apps.plain:no_lifespan", "--request-seconds", "0.3",
        "--background-seconds", "0.3", "--grace", "5", "--out", str(tmp_path), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    statuses = {v["name"]: v["status"] for v in report["verdicts"]}
    assert statuses["teardown-ran"] == "not-applicable"
    assert statuses["inflight-completed"] == "pass"
    reasons = {v["name"]: v["summary"] for v in report["verdicts"]}
    assert "refused the lifespan scope (ValueError: unsupported scope 'lifespan')" in reasons["teardown-ran"]


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(["--app", "tests.apps.plain:create_app"], id="guessed"),
        pytest.param(["--app", "tests.apps.plain:create_app()"], id="gunicorn-style"),
        pytest.param(["--app", "tests.apps.plain:create_app", "--server-arg=--factory"], id="uvicorn-flag"),
    ],
)
def test_an_app_factory_is_called_and_its_app_judged(tmp_path, how):
    """`create_app()` as uvicorn's `--factory` runs it: its app's lifespan runs (called as the app, it would raise)."""
    result, _ = drainspec(
        "run", *how, "--request-seconds", "0.3", "--background", "0", "--grace", "5", "--out", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(an app factory: called, its app judged)" in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    statuses = {v["name"]: v["status"] for v in report["verdicts"]}
    assert statuses["teardown-ran"] == "pass"


@pytest.mark.parametrize(
    ("app", "code"),
    [
        pytest.param("app.main:app", 0, id="correct"),
        pytest.param("app.variants.exit_skips_teardown:app", 1, id="faulty"),
    ],
)
def test_a_reader_that_leaves_early_changes_no_exit_code(tmp_path, app, code):
    """`drainspec run | head -1`: the verdicts decide the exit code, the reports are all written."""
    out = tmp_path / "out"
    with subprocess.Popen(
        [sys.executable, "-m", "chaos.cli", "run", "--app", app, *REFERENCE_ARGS, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # the first line, printed before the server starts
        process.stdout.close()  # the reader leaves: every later print meets a broken pipe
        try:
            returncode = process.wait(timeout=60)
        finally:
            process.kill()
        stderr = process.stderr.read().decode()
    assert first.startswith(f"starting {app} on uvicorn".encode())
    assert returncode == code, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    for name in ("report.json", "junit.xml", "timeline.html"):
        assert (out / name).is_file(), name
