"""
Property-based fuzzing of everything drainspec reads from outside: command lines, manifests and
journals. Whatever comes in, `drainspec` answers with exit code 0, 1 or 2, in bounded time,
never with a traceback (exit 3 is a bug in drainspec and fails these tests).

Everything runs in-process through `chaos.cli.main`, and nothing starts a server: the plays
(`run`, `chaos`, `matrix`, `experiment`, a replay, a rollout) are replaced by a stand-in that
does the checks a play does before it starts anything, claims its output directory, and returns
a recorded journal. Manifests go through `k8s --static` (and the stand-in replay), journals
through `report` with every report written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chaos.cli
from chaos import faults, runner, workload
from chaos.journal import Event, Kind
from chaos.lifecycle import prepare_run_dir
from chaos.scenario import Scenario
from tests.journals import graceful

SCALE = int(os.environ.get("DRAINSPEC_FUZZ_SCALE", "1"))  # e.g. 20 for a long local hunt
EXAMPLES = {"cli": 250 * SCALE, "manifest": 150 * SCALE, "journal": 150 * SCALE}  # 550 generated inputs in all
SECONDS_PER_CALL = 5.0
FUZZ = settings(
    max_examples=1,  # each test sets its own count
    deadline=None,  # bounded by SECONDS_PER_CALL below, measured around each call
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

# --- the stand-in plays -------------------------------------------------------------------------


def _recorded_journal() -> list[Event]:
    journal = graceful()
    events = sorted(journal.events, key=lambda event: event.t)
    scenario = Scenario(app="app.main:app", requests=1, background=0)
    start = Event(t=events[0].t - 1, pid=1000, kind=Kind.RUN_START, fields={"scenario": scenario.to_dict()})
    return [start, *events[1:]]


RECORDED = _recorded_journal()


def _stand_in_execute(scenario: Scenario, run_dir: str | os.PathLike[str]) -> list[Event]:
    """What `chaos.runner.execute` checks before it starts a server, then a recorded journal."""
    runner.stop_signal_of(scenario.signal)
    faults.parse_faults(scenario.faults)
    workload.plan_traffic(scenario)
    from chaos import target

    target.server_argv(
        scenario.server, 8000, workers=scenario.workers, extra=scenario.server_args, command=scenario.command
    )
    prepare_run_dir(run_dir)
    return list(RECORDED)


def _stand_in_replay(plan: Any, run_dir: str | os.PathLike[str]) -> list[Event]:
    from chaos.k8s.loopback import checked_paths, keep_loopback
    from chaos.k8s.manifest import localize

    argv, _ = localize(plan.container.argv, port=8000, container_ports=plan.container.ports)
    keep_loopback(argv)
    checked_paths(plan)
    runner.stop_signal_of(plan.scenario(None).signal, where="lifecycle.stopSignal")
    prepare_run_dir(run_dir)
    return list(RECORDED)


@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Plays replaced by stand-ins; the working directory a private temporary one."""
    import chaos.experiment
    import chaos.k8s.replay
    import chaos.k8s.rollout
    import chaos.matrix

    monkeypatch.setattr(runner, "execute", _stand_in_execute)
    monkeypatch.setattr(chaos.experiment, "execute", _stand_in_execute)
    monkeypatch.setattr(chaos.matrix, "execute", _stand_in_execute)
    monkeypatch.setattr(chaos.k8s.replay, "replay", _stand_in_replay)
    monkeypatch.setattr(chaos.k8s.rollout, "rollout", _stand_in_replay)
    with tempfile.TemporaryDirectory(prefix="drainspec-fuzz-") as directory:
        monkeypatch.chdir(directory)
        yield Path(directory)


_calls = count()


def drainspec(argv: Sequence[str]) -> tuple[int, str, str]:
    """`chaos.cli.main` in-process: exit code, stdout, stderr; the call must be quick."""
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = chaos.cli.main(list(argv))
        except SystemExit as exit_:  # argparse's --help and --version
            code = exit_.code if isinstance(exit_.code, int) else 0
    took = time.monotonic() - started
    assert took < SECONDS_PER_CALL, f"{list(argv)} took {took:.1f}s"
    return code, out.getvalue(), err.getvalue()


def assert_clean(argv: Sequence[str], code: int, out: str, err: str) -> None:
    shown = f"drainspec {' '.join(map(repr, argv))}\n--- stdout\n{out[-2000:]}\n--- stderr\n{err[-2000:]}"
    assert code in (0, 1, 2), shown
    assert "Traceback" not in out + err, shown
    if code == 2 and err.strip():
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), shown


# --- what is fuzzed -----------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "nan",
        "inf",
        "-inf",
        "-1",
        "0",
        "1e400",
        "70000",
        "{nope}",
        "{",
        "}",
        "{id}",
        "{seconds}",
        "GET /x/{foo}",
        "GET /x/{",
        "GET /x\r\nHost: evil",
        "GET slow",
        "POST /register/{id}?s={seconds}",
        "[/bold]",
        "<script>alert(1)</script>",
        "'",
        '"',
        "uvicorn=--x '",
        ",",
        "TERM,INT",
        "SIGBOGUS",
        "stall:nan",
        "stall:-1",
        "sigkill@nan",
        "second-signal:INT@0.3",
        "stream:inf",
        "a:b",
        "app.main:app",
        "KEY=VALUE",
        "NOEQUALS",
        "0.5..3",
        "3..1",
        "@/nonexistent",
        "2xx",
        "99x",
        "Name: value",
        "mysrv --bind {host}:{port} {app}",
        "/dev/zero",
        "\x00",
    ]
)
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=12), st.from_regex(r"-?[0-9]{1,6}(\.[0-9]{0,3})?", fullmatch=True))
NUMBER = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.1", "2", "1e9", "70000", "x"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 100_000).map(str),
)
# A run count is honoured, so a large one is a long experiment, not a fault: counts stay small.
RUNS = st.one_of(st.sampled_from(["nan", "inf", "-1", "0", "0.1", "1e9x", "x", ""]), st.integers(-5, 40).map(str))

TRAFFIC_FLAGS = {
    "--requests": NUMBER,
    "--request-seconds": NUMBER,
    "--request-path": TEXT,
    "--background": NUMBER,
    "--background-seconds": NUMBER,
    "--background-path": TEXT,
    "--background-policy": st.sampled_from(["complete", "allow-cancel", "bogus"]),
    "--header": TEXT,
    "--json": TEXT,
    "--data": TEXT,
    "--expect-status": TEXT,
    "--ready-timeout": NUMBER,
    "--stall-ms": NUMBER,
    "--junit": st.sampled_from(["junit.xml", "missing/dir/junit.xml", "link.xml", "."]),
}
SERVER_FLAGS = {
    "--app": st.one_of(st.sampled_from(["app.main:app", "nosuch:app", "app.main", ""]), TEXT),
    "--server": st.sampled_from(["uvicorn", "gunicorn", "hypercorn", "granian", "nginx", ""]),
    "--command": TEXT,
    "--server-arg": TEXT,
    "--workers": NUMBER,
    "--port": NUMBER,
    "--signal": TEXT,
    "--grace": NUMBER,
    "--integrity": TEXT,
    "--env": TEXT,
    "--fault": TEXT,
    "--signal-delay": NUMBER,
    "--signal-at": st.sampled_from(["in-flight", "ready", "startup", "never"]),
}
COMMAND_FLAGS: dict[str, dict[str, Any]] = {
    "run": {**SERVER_FLAGS, **TRAFFIC_FLAGS},
    "chaos": {
        **SERVER_FLAGS,
        **TRAFFIC_FLAGS,
        "--runs": RUNS,
        "--seed": NUMBER,
        "--offset": NUMBER,
        "--choose-fault": TEXT,
        "--replay-seed": NUMBER,
    },
    "matrix": {**SERVER_FLAGS, **TRAFFIC_FLAGS, "--servers": TEXT, "--signals": TEXT, "--knob": TEXT},
    "k8s": {
        **TRAFFIC_FLAGS,
        "--container": TEXT,
        "--propagation": TEXT,
        "--seed": NUMBER,
        "--steady-path": TEXT,
        "--latency": NUMBER,
        "--reset-rate": NUMBER,
        "--link-delay": NUMBER,
        "--load-bursts": NUMBER,
    },
    "experiment": {},
    "report": {
        "--json": st.sampled_from(["r.json", "link.json", "missing/r.json"]),
        "--junit": st.sampled_from(["j.xml", "missing/j.xml"]),
        "--html": st.sampled_from(["t.html"]),
    },
}
FLAGS_ALONE = {
    "run": ["--quiet"],
    "k8s": ["--static", "--rollout", "--no-namespace"],
    "chaos": [],
    "matrix": [],
    "experiment": [],
    "report": [],
}

MANIFESTS = {
    "good.yaml": (Path(__file__).parent.parent / "k8s" / "deployment.yaml").read_text(),
    "shell.yaml": (Path(__file__).parent.parent / "k8s" / "bad" / "shell-wrapper.yaml").read_text(),
    "garbage.yaml": "kind: [\n",
}
EXPERIMENTS = {
    "ok.yaml": "scenario: {app: app.main:app, requests: 1, background: 0}\nruns: 2\nfaults: [stall:0.1@0.1]\n",
    "string-faults.yaml": "scenario: {app: app.main:app}\nfaults: stall:0.1\n",
    "five.yaml": "scenario: {app: app.main:app, grace: five}\n",
    "negative.yaml": "scenario: {app: app.main:app}\nruns: -3\n",
    "nan.yaml": "scenario: {app: app.main:app}\noffset: .nan\n",
}


def _write_inputs(directory: Path) -> None:
    for name, text in {**MANIFESTS, **EXPERIMENTS}.items():
        (directory / name).write_text(text)
    (directory / "journal.jsonl").write_text("".join(event.to_json() + "\n" for event in RECORDED))
    with contextlib.suppress(FileExistsError):
        (directory / "link.xml").symlink_to(directory / "victim")
        (directory / "link.json").symlink_to(directory / "victim")


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    command = draw(st.sampled_from(sorted(COMMAND_FLAGS)))
    argv = [command]
    if command == "k8s":
        argv.append(draw(st.sampled_from([*MANIFESTS, "missing.yaml", "/dev/zero", "."])))
    elif command == "experiment":
        argv += draw(st.lists(st.sampled_from([*EXPERIMENTS, "missing.yaml"]), min_size=1, max_size=2))
    elif command == "report":
        argv.append(draw(st.sampled_from(["journal.jsonl", "missing.jsonl", "/dev/zero", "."])))
    flags = COMMAND_FLAGS[command]
    for _ in range(draw(st.integers(0, 6))):
        if FLAGS_ALONE[command] and draw(st.booleans()):
            argv.append(draw(st.sampled_from(FLAGS_ALONE[command])))
        elif flags:
            flag = draw(st.sampled_from(sorted(flags)))
            argv += [flag, draw(flags[flag])]
    if command in ("run", "chaos", "matrix") and "--app" not in argv and draw(st.booleans()):
        argv += ["--app", "app.main:app"]
    if command == "chaos" and draw(st.booleans()):
        argv += ["--runs", "2"]
    if draw(st.booleans()):
        argv += ["--", *draw(st.lists(TEXT, max_size=3))]
    return argv


@given(argv=command_lines())
@settings(FUZZ, max_examples=EXAMPLES["cli"])
def test_any_command_line(no_servers, argv):
    _write_inputs(no_servers)
    if argv[0] != "report":
        split = argv.index("--") if "--" in argv else len(argv)
        argv = [*argv[:split], "--out", str(no_servers / f"out{next(_calls)}"), *argv[split:]]
    code, out, err = drainspec(argv)
    assert_clean(argv, code, out, err)


# --- manifests ----------------------------------------------------------------------------------

KEYS = ["kind", "metadata", "name", "spec", "template", "containers", "command", "args", "lifecycle", "preStop",
        "httpGet", "path", "port", "readinessProbe", "livenessProbe", "terminationGracePeriodSeconds", "replicas",
        "strategy", "rollingUpdate", "maxSurge", "maxUnavailable", "ports", "containerPort", "env", "value",
        "stopSignal", "os", "sleep", "seconds", "exec", "periodSeconds", "failureThreshold", "timeoutSeconds",
        "image", "tcpSocket"]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(
        [
            "Deployment",
            "Pod",
            "Service",
            "web",
            "uvicorn",
            "app.main:app",
            "gunicorn",
            "sh",
            "-c",
            "@192.0.2.2:9999/x",
            "/x\r\ny",
            "SIGTERM",
            "SIGBOGUS",
            "25%",
            "0.0.0.0",
            "8000",
            "$(PORT)",
        ]
    ),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=8),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=30,
)


def _deployment(draw: st.DrawFn) -> dict[str, Any]:
    """A Deployment-shaped document whose fields are drawn from anything."""
    container = draw(st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=6))
    container.setdefault("name", "web")
    commands = st.sampled_from(
        [["uvicorn", "app.main:app"], ["gunicorn", "-b0.0.0.0:8000", "app.main:app"], ["sh", "-c", "x"]]
    )
    container.setdefault("command", draw(st.one_of(commands, DOCUMENTS)))
    pod = draw(st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=3))
    pod["containers"] = [container]
    kind = draw(st.sampled_from(["Deployment", "Pod"]))
    spec = pod if kind == "Pod" else {"template": {"spec": pod}, "replicas": draw(SCALARS)}
    return {"kind": kind, "metadata": {"name": draw(st.text(max_size=8))}, "spec": spec}


GOOD = next(doc for doc in yaml.safe_load_all(MANIFESTS["good.yaml"]) if doc and doc.get("kind") == "Deployment")


def _mutated(draw: st.DrawFn) -> Any:
    """The reference Deployment with one value somewhere in it replaced by anything."""
    document = json.loads(json.dumps(GOOD))
    node: Any = document
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node))) if isinstance(node, list) else []
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or not child or draw(st.integers(0, 3)) == 0:
            node[key] = draw(DOCUMENTS)
            break
        node = child
    return document


@st.composite
def manifests(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["mutated", "mutated", "deployment", "anything", "text", "aliases"]))
    if shape == "mutated":
        return yaml.safe_dump(_mutated(draw), allow_unicode=True)
    if shape == "deployment":
        return yaml.safe_dump(_deployment(draw), allow_unicode=True)
    if shape == "anything":
        return yaml.safe_dump(draw(DOCUMENTS), allow_unicode=True)
    if shape == "aliases":
        levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        lines = ["kind: Pod", 'a0: &a0 ["lol"]']
        lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels + 1)]
        return "\n".join(lines) + "\n"
    return draw(st.text(max_size=200))


@given(text=manifests(), rollout=st.booleans(), static=st.booleans())
@settings(FUZZ, max_examples=EXAMPLES["manifest"])
def test_any_manifest(no_servers, text, rollout, static):
    path = no_servers / "manifest.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["k8s", str(path), *(["--static"] if static else []), *(["--rollout"] if rollout else [])]
    argv += ["--out", str(no_servers / f"out{next(_calls)}")]
    code, out, err = drainspec(argv)
    assert_clean(argv, code, out, err)


# --- journals -----------------------------------------------------------------------------------

FIELD_NAMES = ["sent", "status", "target", "returncode", "exit_code", "killed", "ok", "handled", "id", "request",
               "task", "pod", "endpoint", "outcome", "role", "signal", "path", "method", "error", "frame",
               "stalled_ms", "lag_ms", "after", "grace", "propagation", "scenario", "replay", "rollout",
               "problems", "check", "message", "name", "sync", "spawned", "conn", "accepted", "decision",
               "severity", "code", "detail", "comm", "use", "pool"]  # fmt: skip
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),
        st.text(max_size=10),
        st.sampled_from(["[/bold]", "<script>", "ok", "reset", "r1", "s1", "SIGTERM", "abc", "five"]),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10,
)
SCENARIO_FIELDS = st.dictionaries(
    st.sampled_from(
        [
            "app",
            "server",
            "grace",
            "requests",
            "background",
            "signal",
            "faults",
            "env",
            "command",
            "request_seconds",
            "background_policy",
            "integrity",
            "port",
            "workers",
            "headers",
        ]
    ),
    st.one_of(st.sampled_from(["[/bold]", "[bold]x", "<script>", "TERM", "[/]"]), JSON_VALUES),
    max_size=4,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {
        "t": draw(st.one_of(st.integers(0, 10**13), JSON_VALUES))
        if draw(st.integers(0, 9)) == 0
        else draw(st.integers(10**12, 10**12 + 10**10)),
        "pid": draw(st.sampled_from([1, 1000, 4242])) if draw(st.integers(0, 9)) else draw(JSON_VALUES),
        "kind": draw(st.sampled_from([k.value for k in Kind])) if draw(st.integers(0, 9)) else draw(JSON_VALUES),
    }
    event.update(draw(st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=4)))
    if event["kind"] == Kind.RUN_START and draw(st.booleans()):
        event["scenario"] = {"app": "a:b", **draw(SCENARIO_FIELDS)}
    return event


def _line(event: dict[str, Any]) -> str:
    try:
        return json.dumps(event, allow_nan=True)
    except (ValueError, OverflowError):
        return json.dumps({key: repr(value) for key, value in event.items()})


@st.composite
def journals(draw: st.DrawFn) -> str:
    lines = [event.to_json() for event in RECORDED] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 6))):
        lines.insert(draw(st.integers(0, len(lines))), _line(draw(events())))
    if draw(st.integers(0, 4)) == 0:
        lines.append(draw(st.sampled_from(["not json", "[1, 2]", "{", '{"t": 1}', "[" * 5000 + "]" * 5000])))
    return "\n".join(lines) + "\n"


@given(text=journals(), reports=st.booleans())
@settings(FUZZ, max_examples=EXAMPLES["journal"])
def test_any_journal(no_servers, text, reports):
    path = no_servers / "journal.jsonl"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    argv = ["report", str(path)]
    if reports:
        n = next(_calls)
        argv += ["--json", f"r{n}.json", "--junit", f"j{n}.xml", "--html", f"t{n}.html"]
    code, out, err = drainspec(argv)
    assert_clean(argv, code, out, err)


def test_nan_and_infinity_never_reach_a_report(no_servers):
    """JSON's NaN and Infinity in a journal are refused or judged: the reports stay valid JSON."""
    line = json.dumps({"t": 5, "pid": 1, "kind": "loop.stall", "stalled_ms": math.nan})
    path = no_servers / "journal.jsonl"
    path.write_text("".join(event.to_json() + "\n" for event in RECORDED[:2]) + line + "\n" + RECORDED[2].to_json())
    code, out, err = drainspec(["report", str(path), "--json", "r.json"])
    assert code == 2 and '"stalled_ms" must be a number' in err, out + err
