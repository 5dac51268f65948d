"""Small parts with no process behind them: signal names, request specs, server commands."""

from __future__ import annotations

import argparse
import dataclasses
import signal

import pytest

from chaos.cli import SUBCOMMANDS, build_parser
from chaos.errors import SetupError, exception_line
from chaos.k8s.kubelet import Termination
from chaos.scenario import Scenario, parse_signal
from chaos.target import PROBE_APP, server_argv
from chaos.workload import RequestSpec, durations_not_carried


@pytest.mark.parametrize("text", ["TERM", "SIGTERM", "sigterm", "15"])
def test_signal_names(text):
    assert parse_signal(text) == signal.SIGTERM


def test_unknown_signal_lists_choices():
    with pytest.raises(ValueError, match="use one of TERM, INT"):
        parse_signal("STOPNOW")


@pytest.mark.parametrize(
    ("returncode", "killed", "exit_code"),
    [(-15, False, 143), (0, False, 0), (-9, True, 137), (3, False, 3)],
)
def test_exit_code_as_a_container_runtime_reports_it(returncode, killed, exit_code):
    assert Termination(returncode, killed).exit_code == exit_code


def test_request_spec_parses_method_and_fills_template():
    spec = RequestSpec.parse("post /register/{id}?s={seconds}")
    assert spec.method == "POST"
    assert spec.render(seconds=0.5, request_id="b1").path == "/register/b1?s=0.5"
    assert RequestSpec.parse("/hold").method == "GET"


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn", "hypercorn", "granian"])
def test_every_server_binds_loopback_and_runs_the_probe(server):
    argv = server_argv(server, 8123)
    assert PROBE_APP in argv
    joined = " ".join(argv)
    assert "127.0.0.1" in joined and "8123" in joined and "0.0.0.0" not in joined


def test_command_template():
    argv = server_argv("uvicorn", 9000, command="python -m uvicorn {app} --port {port}")
    assert argv[-3:] == [PROBE_APP, "--port", "9000"]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"extra": ["--factory"]}, id="server-arg"),
        pytest.param({"command": "python -m uvicorn --factory {app} --port {port}"}, id="command"),
    ],
)
def test_factory_flag_is_left_to_the_probe(kwargs):
    """The probe's app is no factory; told it is one, uvicorn would call it with no arguments and exit."""
    argv = server_argv("uvicorn", 9000, **kwargs)
    assert PROBE_APP in argv and "--factory" not in argv


def test_empty_command_is_refused():
    with pytest.raises(SetupError, match="--command is empty"):
        server_argv("uvicorn", 9000, command="  ")


SQLALCHEMY_TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/db.py", line 61, in open
    await conn.run_sync(create_schema)
sqlite3.OperationalError: database is locked

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/srv/app/main.py", line 40, in lifespan
    await db.open()
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
[SQL: CREATE TABLE IF NOT EXISTS outbox (id INTEGER NOT NULL)]
(Background on this error at: https://sqlalche.me/e/21/e3q8)
"""


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (SQLALCHEMY_TRACEBACK, "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"),
        ("RuntimeError: no database\n", "RuntimeError: no database"),
        ("first\nsecond", "first"),
        ("", "?"),
    ],
    ids=["multi-line-message", "one-line", "no-traceback", "empty"],
)
def test_a_startup_failure_is_named_by_its_exception_line(text, line):
    assert exception_line(text) == line


@pytest.mark.parametrize(
    ("changes", "flags"),
    [
        ({"request_seconds": 3.0, "request_path": "GET /healthz"}, ["--request-seconds"]),
        ({"request_seconds": 3.0, "request_path": "GET /slow?seconds={seconds}"}, []),
        ({"request_seconds": 3.0, "request_path": "POST /jobs", "json_body": '{"wait": {seconds}}'}, []),
        ({"request_seconds": 3.0, "request_path": "GET /x", "headers": ("X-Wait: {seconds}",)}, []),
        ({"request_path": "GET /healthz"}, []),
        ({"request_seconds": 3.0, "request_path": "GET /healthz", "requests": 0}, []),
        ({"background_seconds": 2.0, "background_path": "POST /register/{id}"}, ["--background-seconds"]),
    ],
    ids=["path-without", "path-with", "body-with", "header-with", "default-seconds", "no-requests", "background"],
)
def test_a_duration_the_requests_cannot_carry_is_noted(changes, flags):
    scenario = dataclasses.replace(Scenario(app="app.main:app"), **changes)
    notes = durations_not_carried(scenario)
    assert [note.split()[0] for note in notes] == flags
    assert all("no {seconds} in it" in note for note in notes)


@pytest.mark.parametrize(
    ("changes", "subject"),
    [
        ({}, "app.main:app on uvicorn"),
        ({"server": "hypercorn"}, "app.main:app on hypercorn"),
        ({"command": "mysrv --port {port} {app}"}, "app.main:app on mysrv --port {port} {app}"),
        ({"app": "main.py", "command": "python main.py --debug"}, "python main.py --debug"),
        ({"app": "app.main", "command": "python -X dev -m app.main"}, "python -X dev -m app.main"),
        ({"app": "main.py", "command": "tini -- python -m chaos.probe.script main.py"}, "tini -- python main.py"),
    ],
    ids=["server", "another-server", "command-template", "own-script", "own-module", "replayed-own-script"],
)
def test_a_report_names_what_ran_once(changes, subject):
    assert dataclasses.replace(Scenario(app="app.main:app"), **changes).subject == subject


@pytest.mark.parametrize(
    ("signal_at", "workload"),
    [
        pytest.param("in-flight", "3 request(s) and 1 background request(s) put in flight", id="in-flight"),
        pytest.param("ready", "the stop signal once ready, with nothing in flight", id="ready"),
        pytest.param("startup", "the stop signal during the lifespan startup, nothing sent", id="startup"),
    ],
)
def test_a_report_says_what_the_stop_signal_meets(signal_at, workload):
    """A run that signals during startup sends no request: its first line must not claim any in flight."""
    assert Scenario(app="app.main:app", requests=3, background=1, signal_at=signal_at).workload == workload


def _subcommand_help(parser: argparse.ArgumentParser, name: str) -> str:
    (commands,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[name].format_help()


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_a_subcommand_built_alone_reads_as_it_does_among_all(name):
    """Only the subcommand about to run gets its arguments built: its help must not differ for it."""
    assert _subcommand_help(build_parser(only=name), name) == _subcommand_help(build_parser(), name)


def test_the_report_subcommand_says_where_each_report_goes():
    text = " ".join(_subcommand_help(build_parser(only="report"), "report").split())
    assert "write report.json here" in text and "write JUnit XML here" in text, text


def test_an_image_path_does_not_hide_the_tools_and_the_app_here(tmp_path, monkeypatch):
    """An image's `ENV PATH="/opt/venv/bin:$PATH"` or `ENV PYTHONPATH=/app` names directories of
    the image: the replay keeps them, after the tools beside drainspec and the run's directory."""
    import os
    import sys
    from pathlib import Path

    from chaos.lifecycle import server_environment

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    image_env = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "PYTHONPATH": "/app"}
    env = server_environment(
        Scenario(app="app.main:app", env=image_env), tmp_path, tmp_path / "journal.jsonl", "/work/app"
    )
    tools = str(Path(sys.executable).parent)
    assert env["PATH"].split(os.pathsep) == [tools, "/opt/venv/bin", "/usr/bin", "/bin"]
    assert env["PYTHONPATH"].split(os.pathsep) == ["/work/app", "/app"]
    plain = server_environment(Scenario(app="app.main:app"), tmp_path, tmp_path / "journal.jsonl", "/work/app")
    assert plain["PATH"].split(os.pathsep) == [tools, "/usr/bin", "/bin"]
