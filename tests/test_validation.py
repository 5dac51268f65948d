"""
Hostile and malformed input, each one a line of the audit: one line on stderr, exit 2, quickly,
never a traceback and never a hang. In-process, and nothing here starts a server.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from chaos.cli import main
from chaos.errors import ManifestError, SetupError
from chaos.faults import parse_fault, parse_faults
from chaos.k8s.manifest import parse_manifest
from chaos.k8s.rollout import MAX_REPLICAS, Strategy
from chaos.validate import validate_request_path

START = {"t": 1, "pid": 2, "kind": "run.start", "scenario": {"app": "a:b"}}
EXIT = {"t": 3, "pid": 2, "kind": "server.exited", "returncode": 0, "exit_code": 0, "killed": False}


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], message: str, seconds: float = 3.0) -> None:
    started = time.monotonic()
    code = main(argv)
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), err
    assert message in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert took < seconds, f"took {took:.1f}s"


# --- manifests -------------------------------------------------------------------------------


def billion_laughs() -> str:
    lines = ["kind: Pod", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(billion_laughs(), "billion laughs", id="billion-laughs"),
        pytest.param("kind: Pod\nspec: " + "[" * 20_000 + "]" * 20_000 + "\n", "invalid YAML", id="20000-deep-flow"),
        pytest.param(
            "kind: Pod\n" + "".join(" " * n + f"k{n}:\n" for n in range(2000)), "deeper than", id="deep-block"
        ),
    ],
)
def test_hostile_yaml_is_refused_quickly(tmp_path, capsys, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    refused(capsys, ["k8s", str(path), "--static"], message)


def test_a_50_mb_manifest_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    with open(path, "wb") as file:
        file.truncate(50 * 1024 * 1024)  # sparse: costs no disk
    refused(capsys, ["k8s", str(path), "--static"], "over the 4 MB", seconds=1.0)


@pytest.mark.parametrize("command", ["k8s", "report"])
def test_devices_and_fifos_are_refused_not_read(tmp_path, capsys, command):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    extra = ["--static"] if command == "k8s" else []
    refused(capsys, [command, "/dev/zero", *extra], "a device", seconds=1.0)
    refused(capsys, [command, str(fifo), *extra], "a FIFO", seconds=1.0)
    refused(capsys, [command, str(tmp_path), *extra], "a directory", seconds=1.0)


def test_replicas_are_capped_for_a_local_rollout():
    pod = parse_manifest(
        "kind: Deployment\nspec: {replicas: 5000, template: {spec: {containers: [{name: web, "
        "command: [uvicorn, app.main:app]}]}}}\n"
    )
    with pytest.raises(SetupError, match=f"at most {MAX_REPLICAS}"):
        Strategy.of(pod)


def test_a_manifest_error_is_one_line_even_with_line_breaks_in_a_value(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text('kind: Deployment\nmetadata: {name: "a\\nb\\u001e"}\nspec: {replicas: x}\n')
    refused(capsys, ["k8s", str(path), "--static"], "spec.replicas")


def test_yaml_within_bounds_still_loads():
    anchors = "kind: Pod\nx: &env [{name: A, value: '1'}]\n"
    anchors += "spec: {containers: [{name: web, command: [uvicorn, app.main:app]}]}\n"
    assert parse_manifest(anchors).containers[0].name == "web"
    with pytest.raises(ManifestError, match="invalid YAML"):
        parse_manifest("kind: [\n")


# --- journals --------------------------------------------------------------------------------


def journal_with(tmp_path: Path, *events: dict[str, object], raw: str = "") -> Path:
    path = tmp_path / "journal.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in (START, *events)) + raw + json.dumps(EXIT) + "\n")
    return path


@pytest.mark.parametrize(
    ("event", "raw", "message"),
    [
        pytest.param({}, "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply", id="deep-json"),
        pytest.param(
            {},
            json.dumps({"t": 2, "pid": 2, "kind": "x", "a": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}) + "\n",
            "nested deeper than",
            id="nested-field",
        ),
        pytest.param(
            {"t": 2, "pid": 9, "kind": "client.request", "id": "r1", "sent": "abc"},
            "",
            '"sent" must be an integer',
            id="sent-abc",
        ),
        pytest.param(
            {"t": 2, "pid": 9, "kind": "run.start", "scenario": {"app": "a:b", "grace": "five"}},
            "",
            '"grace" must be a number',
            id="string-grace",
        ),
        pytest.param(
            {"t": 2, "pid": 9, "kind": "server.exited", "returncode": None},
            "",
            '"returncode" must be an integer',
            id="null-returncode",
        ),
        pytest.param({"t": "2", "pid": 9, "kind": "x"}, "", '"t" must be', id="string-time"),
        pytest.param({"t": 2, "pid": 9, "kind": "x", "request": ["r1"]}, "", '"request" must be', id="list-id"),
    ],
)
def test_malformed_journal_fields_are_refused_with_the_line(tmp_path, capsys, event, raw, message):
    path = journal_with(tmp_path, *([event] if event else []), raw=raw)
    refused(capsys, ["report", str(path)], message)


def test_a_journal_over_the_size_cap_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as file:
        file.truncate(300 * 1024 * 1024)  # sparse
    refused(capsys, ["report", str(path)], "over the", seconds=1.0)


def test_rich_markup_in_a_journal_is_shown_as_text(tmp_path, capsys):
    path = journal_with(tmp_path, {"t": 2, "pid": 2, "kind": "client.request", "id": "[/bold]", "outcome": "[/]",
                                    "path": "[bold red]x[/]", "sent": 2, "role": "slow"})  # fmt: skip
    code = main(["report", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 1, 2) and "Traceback" not in out + err
    assert "[/bold]" in out


# --- command-line values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--command", "mysrv --port {port} {nope}"], "placeholder drainspec cannot fill", id="command-nope"
        ),
        pytest.param(["--fault", "stall:nan"], "must be a number of seconds", id="stall-nan"),
        pytest.param(["--fault", "stall:-1"], "must not be negative", id="stall-negative"),
        pytest.param(["--fault", "sigkill@nan"], "must be a number of seconds", id="sigkill-nan"),
        pytest.param(["--fault", "sigkill@1e9"], "at most 3600 seconds", id="sigkill-forever"),
    ],
)
def test_bad_run_values_stop_before_any_server(tmp_path, capsys, monkeypatch, args, message):
    from chaos import target

    monkeypatch.setattr(target, "spawn", lambda *a, **k: pytest.fail("a server was started"))
    argv = ["run", "--app", "app.main:app", "--requests", "1", "--background", "0", *args]
    refused(capsys, [*argv, "--out", str(tmp_path / "out")], message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("scenario: {app: app.main:app, grace: five}\n", '"grace" must be a number', id="grace-five"),
        pytest.param("scenario: {app: app.main:app, grace: .inf}\n", "finite", id="grace-inf"),
        pytest.param(
            "scenario: {app: app.main:app, faults: stall:1}\n", '"faults" must be', id="scenario-faults-string"
        ),
        pytest.param("scenario: {app: app.main:app}\nfaults: [stall:nan]\n", "stall:nan", id="nan-fault"),
        pytest.param("scenario: {app: app.main:app}\noffset: .nan\n", "'offset'", id="nan-offset"),
        pytest.param("scenario: {app: app.main:app}\nruns: 1000000\n", "at most", id="too-many-runs"),
        pytest.param("scenario: {app: app.main:app}\nexpect: {pass: 12}\n", "list of strings", id="expect-int"),
    ],
)
def test_bad_experiment_files_are_refused(tmp_path, capsys, text, message):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    refused(capsys, ["experiment", str(path), "--out", str(tmp_path / "out")], message)


def test_a_faults_list_given_as_one_string_is_one_fault():
    assert [fault.text for fault in parse_faults("stall:0.5@0.2")] == ["stall:0.5@0.2"]
    assert parse_fault("stream:inf").arg == "inf"  # the one endless value


@pytest.mark.parametrize(
    "text",
    ["GET /x/{foo}", "GET /x/{", "GET /x}", "GET slow", "GET /x\r\nHost: y", "G ET /x", "GET /a b", "GET /x#f"],
)
def test_request_paths_are_validated(text):
    with pytest.raises(ValueError):
        validate_request_path(text)


@pytest.mark.parametrize(
    "text", ["GET /slow?seconds={seconds}", "POST /register/{id}", "/healthz", "DELETE /x?a=1&b=2"]
)
def test_good_request_paths_pass(text):
    validate_request_path(text)


def test_a_journaled_signal_name_that_is_not_one_is_refused(tmp_path, capsys):
    """Every report prints the scenario's signal; markup in its place is refused, not rendered."""
    start = {"t": 1, "pid": 2, "kind": "run.start", "scenario": {"app": "a:b", "signal": "[/bold]"}}
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(start) + "\n" + json.dumps(EXIT) + "\n")
    refused(capsys, ["report", str(path)], '"signal" must be a signal name')
