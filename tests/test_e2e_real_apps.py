"""
drainspec on apps modelled on public FastAPI services, reached the way a user reaches them:
with flags only, or with a scenario file only. None of them imports drainspec.

- `tests.apps.articles`: a token login, a JSON POST that queues a BackgroundTask, a pool;
- `tests.apps.newsfeed`: a background task that blocks the loop inside a library call, and a
  fire-and-forget task that raises after teardown.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from chaos.journal import Kind, read_journal
from chaos.judge.timeline import build
from chaos.lifecycle import DATA_DIR
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

TOKEN_HEADER = "Authorization: Token secret-token-for-tests"
ARTICLE = '{"article": {"title": "{id}", "body": "hello"}}'
ARTICLES = [
    "--app", "tests.apps.articles:app",
    "--header", TOKEN_HEADER,
    "--json", ARTICLE,
    "--request-path", "GET /api/articles/feed?seconds={seconds}",
    "--requests", "1", "--request-seconds", "0.4",
    "--background-path", "POST /api/articles?notify_seconds={seconds}",
    "--background", "2", "--background-seconds", "0.8",
    "--grace", "5",
]  # fmt: skip


def drainspec(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaos.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def failed_in(out: Path) -> set[str]:
    """The verdicts a run's report.json says failed."""
    report = json.loads((out / "report.json").read_text())
    return {verdict["name"] for verdict in report["verdicts"] if verdict["status"] == "fail"}


def with_option(args: list[str], option: str, value: str | None) -> list[str]:
    """`args` with `option`'s value replaced (or the option dropped when `value` is None)."""
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
            continue
        if word == option:
            skip = True
            if value is not None:
                out += [option, value]
            continue
        out.append(word)
    return out


def test_a_token_protected_json_api_is_driven_with_flags_only(tmp_path):
    out = tmp_path / "out"
    result = drainspec("run", *ARTICLES, "--integrity", "tests.apps.articles_integrity:check", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    statuses = {v["name"]: v["status"] for v in report["verdicts"]}
    assert statuses["inflight-completed"] == statuses["background-fate"] == statuses["data-integrity"] == "pass"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(("--request-path", "GET /api/article/feed?seconds={seconds}"), "answered 404", id="typo-404"),
        pytest.param(("--header", None), "answered 401", id="no-token-401"),
        pytest.param(("--json", '{"title": "{id}"}'), "answered 422", id="bad-body-422"),
    ],
)
def test_a_wrong_request_stops_the_run_with_one_line(tmp_path, change, says):
    args = with_option(ARTICLES, *change)
    result = drainspec("run", *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "preflight" in lines[0], result.stderr


def test_nothing_in_flight_at_the_signal_is_never_a_pass(tmp_path):
    """
    A request the app answered before the stop signal proves nothing about the drain. The signal
    comes 0.5 s after the journal shows the instant request inside the app (`--signal-delay`),
    and the journal's order is checked first: that request ended before the signal.
    """
    args = with_option(with_option(ARTICLES, "--request-seconds", "0"), "--background", "0")
    result = drainspec("run", *args, "--signal-delay", "0.5", "--out", str(tmp_path / "out"))
    events = read_journal(tmp_path / "out" / "journal.jsonl")
    signal_t = next(e.t for e in events if e.kind == Kind.SIGNAL_SENT)
    ended = [e.t for e in events if e.kind == Kind.REQUEST_END and e.get("request") == "r1"]
    assert ended and ended[0] < signal_t, "the instant request was still in the app at the signal"
    assert result.returncode == 2, result.stdout + result.stderr
    assert "nothing was in flight at the stop signal" in result.stdout and "not verified" in result.stdout
    assert "shutdown verified" not in result.stdout


def test_an_async_integrity_check_finds_a_lost_confirmed_write(tmp_path):
    """The fire-and-forget variant answers 201 before writing: the check finds what was lost."""
    out = tmp_path / "out"
    args = [*ARTICLES, "--integrity", "tests.apps.articles_integrity:check", "--env", "ARTICLES_FIRE_AND_FORGET=1"]
    result = drainspec("run", *args, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    integrity = next(v for v in report["verdicts"] if v["name"] == "data-integrity")
    assert integrity["status"] == "fail"
    assert any("was confirmed with 201 but is not in the database" in item["text"] for item in integrity["evidence"])


def test_a_crashing_integrity_check_is_exit_2_with_its_traceback(tmp_path):
    out = tmp_path / "out"
    result = drainspec("run", *ARTICLES, "--integrity", "tests.apps.articles_integrity:crashes", "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the integrity check crashed (RuntimeError: the check's own database is unreachable)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    integrity = next(v for v in report["verdicts"] if v["name"] == "data-integrity")
    assert integrity["status"] == "not-applicable"
    assert any("Traceback" in item["text"] for item in integrity["evidence"])


def test_secrets_given_with_env_and_header_reach_no_output_file(tmp_path):
    out = tmp_path / "out"
    secrets = ["hunter2-secret-key", "pw-in-url-123", "secret-token-for-tests"]
    args = [
        *ARTICLES,
        "--env",
        "SECRET_KEY=hunter2-secret-key",
        "--env",
        "DATABASE_URL=postgresql://u:pw-in-url-123@h/db",
    ]
    result = drainspec("run", *args, "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.stat().st_mode & 0o777 == 0o700, "the run's directory is readable by others"
    for path in out.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not [s for s in secrets if s in text], f"a secret is in {path}"
            if DATA_DIR not in path.relative_to(out).parts:  # the app's own files keep its modes
                assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert not [s for s in secrets if s in result.stdout + result.stderr]


def test_a_pyproject_scenario_runs_with_no_flags(tmp_path):
    """The scenario file alone: `drainspec run --scenario publish` in the service's directory."""
    service = tmp_path / "service"
    service.mkdir()
    (service / "pyproject.toml").write_text(
        f"""
[project]
name = "articles-service"

[tool.drainspec]
app = "tests.apps.articles:app"
header = ["{TOKEN_HEADER}"]
grace = 5
requests = 1
request-seconds = 0.4
request-path = "GET /api/articles/feed?seconds={{seconds}}"
background = 0

[tool.drainspec.scenarios.publish]
background = 2
background-path = "POST /api/articles?notify_seconds={{seconds}}"
background-seconds = 0.8
json = '{ARTICLE}'
integrity = "tests.apps.articles_integrity:check"
"""
    )
    env_path = f"PYTHONPATH={ROOT}"
    result = subprocess.run(
        ["env", env_path, sys.executable, "-m", "chaos.cli", "run", "--scenario", "publish", "--out", "out"],
        cwd=service,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((service / "out" / "report.json").read_text())
    assert report["scenario"]["background"] == 2 and report["scenario"]["integrity"]
    assert {v["name"]: v["status"] for v in report["verdicts"]}["data-integrity"] == "pass"
    unknown = drainspec("run", "--scenario", "nope", cwd=service)
    assert unknown.returncode == 2 and "no scenario 'nope'; its scenarios: publish" in unknown.stderr


def test_the_blocking_frame_is_the_apps_own_line(tmp_path):
    out = tmp_path / "out"
    args = ["--app", "tests.apps.newsfeed:app", "--request-path", "GET /feed?seconds={seconds}"]
    args += ["--background-path", "POST /articles/{id}/summary", "--grace", "5", "--request-seconds", "0.4"]
    result = drainspec("run", *args, "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    blocked = next(v for v in report["verdicts"] if v["name"] == "loop-not-blocked")
    assert blocked["status"] == "fail"
    text = " ".join(item["text"] for item in blocked["evidence"])
    assert "tests/apps/newsfeed.py" in text and "in download" in text and "blocked in" in text


def test_an_error_of_a_fire_and_forget_task_is_shown_everywhere(tmp_path):
    out = tmp_path / "out"
    args = ["--app", "tests.apps.newsfeed:app", "--request-path", "GET /feed?seconds={seconds}"]
    args += ["--background", "0", "--requests", "1", "--request-seconds", "0.3", "--grace", "5"]
    result = drainspec("run", *args, "--out", str(out), "--junit", str(out / "junit.xml"))
    message = "ConnectionError: the cache went away during shutdown"
    assert message in result.stdout, result.stdout + result.stderr
    assert message in (out / "report.json").read_text()
    assert message in (out / "timeline.html").read_text()
    junit = ET.parse(out / "junit.xml").getroot()
    assert any(message in (failure.text or "") for failure in junit.iter("failure"))
    assert "Task exception was never retrieved" in (out / "server.log").read_text()


def test_an_event_stream_is_in_flight_until_the_server_ends_it(tmp_path):
    """
    The preflight takes an event stream's status and leaves (it would wait for ever: a tick a
    second never trips a read timeout); the run's requests read theirs to the end, which the app
    sends once uvicorn is told to exit.
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--app", "tests.apps.events:app", "--request-path", "GET /events", "--background", "0",
        "--grace", "5", "--out", str(out), timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    events = read_journal(out / "journal.jsonl")
    clients = {e.get("id"): e for e in events if e.kind == Kind.CLIENT_REQUEST}
    assert clients["preflight-r"].get("stream") is True
    assert all(clients[f"r{n}"].get("outcome") == "ok" for n in (1, 2, 3)), clients
    signalled = next(e.t for e in events if e.kind == Kind.SIGNAL_SENT)
    assert all(clients[f"r{n}"].t > signalled for n in (1, 2, 3)), "a stream ended before the server was told to exit"


@pytest.mark.parametrize(
    ("bound", "within_grace"),
    [
        pytest.param((), "fail", id="unbounded-drain-killed-at-the-deadline"),
        pytest.param(("--server-arg=--timeout-graceful-shutdown", "--server-arg=1"), "pass", id="drain-bounded"),
    ],
)
def test_a_feed_nobody_ends_holds_the_drain_until_the_server_bounds_it(tmp_path, bound, within_grace):
    """
    A streamed answer (chunks, no length) is taken by the preflight on its status, so an endless
    feed can be judged: uvicorn waits for it until SIGKILL, and within-grace names it and says
    how to bound the drain; bounded, the server cuts it itself and exits in time.
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--app", "tests.apps.events:app", "--request-path", "GET /feed", "--requests", "1",
        "--background", "0", "--grace", "3", *bound, "--out", str(out), timeout=40,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    verdicts = {v["name"]: v for v in report["verdicts"]}
    assert verdicts["inflight-completed"]["status"] == "fail"  # a stream cut by the drain's end either way
    assert verdicts["within-grace"]["status"] == within_grace
    if within_grace == "fail":
        texts = [item["text"] for item in verdicts["within-grace"]["evidence"]]
        assert texts[0].startswith("r1 /feed, in flight since ") and texts[0].endswith("a stream nobody ended")
        assert "bound it: uvicorn --timeout-graceful-shutdown 1" in texts[-1]
    clients = {e.get("id"): e for e in read_journal(out / "journal.jsonl") if e.kind == Kind.CLIENT_REQUEST}
    assert clients["preflight-r"].get("stream") is True


OUTLIVED = "1 of 1 task(s) the app started at startup outlived its teardown"
ENDED = "1 task(s) started at startup, all ended before teardown"


@pytest.mark.parametrize(
    ("app", "code", "summary", "says"),
    [
        pytest.param("app", 1, OUTLIVED, "the teardown never asked it to stop", id="never-stopped"),
        pytest.param("stopped", 0, ENDED, None, id="stopped-by-teardown"),
        pytest.param(
            "cancelled", 1, OUTLIVED, "the teardown called its cancel() without awaiting it", id="cancel-not-awaited"
        ),
        pytest.param("cancelled_and_awaited", 0, ENDED, None, id="cancel-awaited"),
    ],
)
def test_a_queue_worker_the_lifespan_started_must_be_stopped_by_its_teardown(tmp_path, app, code, summary, says):
    """
    The job a worker holds at shutdown is lost when the loop's closing cancels the worker, after
    teardown; a teardown that calls its cancel() without awaiting it only asks, and the
    cancellation never runs before uvicorn ends the process.
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--app", f"tests.apps.queue_worker:{app}", "--request-path", "POST /jobs?seconds={seconds}",
        "--requests", "1", "--request-seconds", "0.4", "--background", "0", "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    fate = next(v for v in report["verdicts"] if v["name"] == "background-fate")
    assert summary in fate["summary"]
    if code:  # the evidence names the worker, still running once the shutdown had completed
        assert "tests.apps.queue_worker.run_jobs" in fate["evidence"][0]["text"]
        assert says in fate["evidence"][0]["text"], fate["evidence"][0]["text"]


SERVE_ITSELF = "tests/apps/serve_itself.py"


KILLED_IN_FLIGHT = {"inflight-completed", "teardown-ran", "resources-closed"}


@pytest.mark.parametrize(
    ("command", "code", "failed", "loaded", "idle"),
    [
        pytest.param(f"python {SERVE_ITSELF}", 0, set(), ["__main__:app"], 0, id="uvicorn-run-in-the-main-thread"),
        pytest.param(
            "python -m tests.apps.serve_itself --workers",
            0,
            set(),
            ["tests.apps.serve_itself:app"] * 2,
            3,  # the supervisor's engine, and each worker's re-run of the script
            id="an-import-string-and-two-workers",
        ),
        pytest.param(
            f"python {SERVE_ITSELF} --reload",
            0,
            set(),
            ["tests.apps.serve_itself:app"],
            2,  # the reloader's engine, and its server's re-run of the script
            id="uvicorn-run-with-its-reloader",
        ),
        pytest.param(
            f"python {SERVE_ITSELF} --in-thread", 1, KILLED_IN_FLIGHT, ["__main__:app"], 0, id="the-server-in-a-thread"
        ),
        pytest.param(f"python {SERVE_ITSELF} --hypercorn", 0, set(), ["__main__:app"], 0, id="hypercorn-serve"),
        pytest.param(
            f"python {SERVE_ITSELF} --granian", 0, set(), ["tests.apps.serve_itself:app"], 1, id="granian-serve"
        ),
        pytest.param(
            f"python {SERVE_ITSELF} --gunicorn",
            0,
            set(),
            ["__main__:app"] * 2,
            1,  # the arbiter's engine, made at import before it forked its workers, each with a copy
            id="gunicorn-base-application",
        ),
        pytest.param(
            f"python {SERVE_ITSELF} --gunicorn --import-app",
            0,
            set(),
            ["tests.apps.serve_itself:app"] * 2,
            1,  # the arbiter's engine (the script's module); each worker imports the app's own module
            id="gunicorn-base-application-importing-the-app",
        ),
        pytest.param(
            f"python {SERVE_ITSELF} --hypercorn --own-trigger",
            1,
            KILLED_IN_FLIGHT,
            ["__main__:app"],
            0,
            id="hypercorn-serve-with-a-trigger-nothing-sets",
        ),
    ],
)
def test_a_service_that_starts_its_own_server(tmp_path, command, code, failed, loaded, idle):
    """
    `python main.py` calling `uvicorn.run(app, host="0.0.0.0", port=8000)`, hypercorn's
    `serve(app, config)`, granian's `Granian(...).serve()` or gunicorn's `BaseApplication`: the
    app is judged in the probe, on drainspec's port; a server run in a thread, or given a shutdown
    trigger nothing sets, has no signal handler, and SIGTERM ends the process with its requests in
    flight and its engine open. The engines the script's module makes where the app is not served
    (a supervisor, an arbiter before it forks, a spawned worker's re-run of the script) and never
    uses are named and not judged; every worker's own, a forked copy too, is.
    """
    server = next((name for name in ("hypercorn", "granian", "gunicorn") if f"--{name}" in command), "uvicorn")
    if server in ("hypercorn", "granian"):
        pytest.importorskip(server)
    out = tmp_path / "out"
    result = drainspec(
        "run", "--command", command, "--request-path", "/work?seconds={seconds}", "--requests", "2",
        "--request-seconds", "0.3", "--background", "0", "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    assert failed_in(out) == failed
    events = read_journal(out / "journal.jsonl")
    assert [e.get("app") for e in events if e.kind == Kind.PROBE_LOADED] == loaded
    assert f"the script starts {server} with {len(loaded)} worker(s)" in result.stdout, result.stdout
    assert f"The script starts {server} with {len(loaded)} worker(s)." in (out / "timeline.html").read_text()
    ready = next(e for e in events if e.kind == Kind.SERVER_READY)
    started = [e for e in events if e.kind == Kind.REQUEST_START and e.get("path") == "/work"]
    assert len(started) >= 2 and ready.get("port") != 8000  # the script's own port was not the one served
    timeline = build(events)
    assert len(timeline.idle_resources) == idle, timeline.idle_resources
    serving = {e.pid for e in events if e.kind == Kind.PROBE_LOADED}
    assert {r.pid for r in timeline.resources.values()} == serving  # one engine judged in each worker
    if not failed:
        assert all(r.closed is not None for r in timeline.resources.values())
        assert any(r.uses for r in timeline.resources.values())


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian", "gunicorn"])
def test_a_script_that_serves_https_itself_is_verified_in_plain_http_and_says_so(tmp_path, server):
    """
    The TLS a script configures (uvicorn's `ssl_certfile`, hypercorn's and gunicorn's `certfile`,
    granian's `ssl_cert`) is left out, as its address is: drainspec's requests are plain HTTP on loopback,
    and would otherwise meet a server that closes every one of them. A warning says so.
    """
    if server in ("hypercorn", "granian"):
        pytest.importorskip(server)
    trustme = pytest.importorskip("trustme")
    tls = tmp_path / "tls"
    tls.mkdir()
    issued = trustme.CA().issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(tls / "cert.pem")
    issued.private_key_pem.write_to_path(tls / "key.pem")
    choice = "" if server == "uvicorn" else f" --{server}"
    out = tmp_path / "out"
    result = drainspec(
        "run", "--command", f"python {SERVE_ITSELF} --tls {tls}{choice}", "--request-path", "/work?seconds={seconds}",
        "--requests", "2", "--request-seconds", "0.3", "--background", "0", "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    events = read_journal(out / "journal.jsonl")
    (warning,) = {e.get("error"): e for e in events if e.kind == Kind.PROBE_WARNING}.values()  # gunicorn: once per load
    assert warning.get("library") == server and "verified without TLS" in str(warning.get("error"))
    assert f"probe.warning ({server}): the script's" in result.stdout
    answered = [e for e in events if e.kind == Kind.CLIENT_REQUEST and e.get("outcome") == "ok"]
    assert len(answered) >= 3  # the preflight and both requests in flight


@pytest.mark.parametrize(
    ("option", "code"),
    [pytest.param("", 1, id="disposed-after-serve"), pytest.param(" --in-lifespan", 0, id="in-the-lifespan")],
)
def test_an_engine_disposed_after_the_server_returns_is_never_disposed(tmp_path, option, code):
    """
    `try: await server.serve() finally: await engine.dispose()`: uvicorn re-raises SIGTERM once it
    has shut down, the process dies of it inside `serve()`, and the engine stays open; the
    evidence says why. Disposed by the lifespan, it is closed.
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--command", f"python {SERVE_ITSELF} --dispose-after-serve{option}", "--request-path",
        "/work?seconds={seconds}", "--requests", "1", "--request-seconds", "0.3", "--background", "0",
        "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    closed = next(v for v in report["verdicts"] if v["name"] == "resources-closed")
    assert [v["name"] for v in report["verdicts"] if v["status"] == "fail"] == (["resources-closed"] if code else [])
    if code:
        evidence = closed["evidence"][0]["text"]
        assert "the process then died of SIGTERM" in evidence and "`server.serve()`" in evidence, evidence


def test_an_engine_a_preloading_arbiter_made_at_import_is_judged_in_each_worker_it_forked(tmp_path):
    """
    `gunicorn --preload`: the arbiter imports the app, and its engine, before it forks; each
    worker then has a copy of its own, disposed by its own lifespan, whatever the other did
    first. Each copy is judged in its worker; the arbiter's original, never used, is set aside.
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--app", "tests.apps.serve_itself:app", "--server", "gunicorn", "--workers", "2",
        "--server-arg=--preload", "--request-path", "/work?seconds={seconds}", "--requests", "2",
        "--request-seconds", "0.3", "--background", "0", "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    events = read_journal(out / "journal.jsonl")
    workers = {e.pid for e in events if e.kind == Kind.STARTUP_RECEIVED}
    (arbiter,) = {e.pid for e in events if e.kind == Kind.PROBE_LOADED}
    timeline = build(events)
    assert len(workers) == 2 and arbiter not in workers
    assert {r.pid for r in timeline.resources.values()} == workers
    assert all(r.closed is not None and r.forked_from == arbiter for r in timeline.resources.values())
    assert [(r.pid, sorted(r.forked_into)) for r in timeline.idle_resources] == [(arbiter, sorted(workers))]


def test_a_script_that_starts_no_server_is_one_line_and_exit_2(tmp_path):
    result = drainspec("run", "--command", f"python {SERVE_ITSELF} --no-server", "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        result.stderr.count("\n") == 1
        and "returned without starting uvicorn, hypercorn, granian or gunicorn" in result.stderr
    )
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("cli", "code", "failed", "loaded"),
    [
        pytest.param("fastapi run app/main.py --port 8000", 0, set(), "app.main:app", id="the-reference-app"),
        pytest.param(
            "fastapi run app/variants/pool_closed_on_sigterm.py",
            1,
            {"no-use-after-close", "teardown-after-drain", "background-fate"},  # the variant's own FAILS
            "app.variants.pool_closed_on_sigterm:app",
            id="a-variant-closing-its-pool-on-sigterm",
        ),
    ],
)
def test_an_app_the_fastapi_cli_serves_is_judged_in_the_probe(tmp_path, cli, code, failed, loaded):
    """
    `fastapi run PATH` finds the app and hands uvicorn its import string in-process, as a script
    calling `uvicorn.run` does: the CLI runs through drainspec's script launcher, the app it found
    is loaded by the probe, on drainspec's port, and judged like any other.
    """
    pytest.importorskip("fastapi_cli")
    out = tmp_path / "out"
    result = drainspec(
        "run", "--command", cli, "--request-path", "GET /slow?seconds={seconds}", "--requests", "2",
        "--request-seconds", "0.5", "--background-path", "POST /register/{id}?deliver_seconds={seconds}",
        "--background", "2", "--background-seconds", "0.6", "--grace", "5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    assert failed_in(out) == failed
    events = read_journal(out / "journal.jsonl")
    assert [e.get("app") for e in events if e.kind == Kind.PROBE_LOADED] == [loaded]
    assert "the script starts uvicorn with 1 worker(s)" in result.stdout, result.stdout
    ready = next(e for e in events if e.kind == Kind.SERVER_READY)
    assert ready.get("port") != 8000  # the CLI's own port was not the one served


def test_a_client_no_hook_sees_is_named_when_no_resource_was_seen(tmp_path):
    """
    An app on aiosqlite directly: drainspec sees none of its resources, and says which library
    it loaded unseen rather than leaving "no resource was seen" to read as "it holds none".
    """
    out = tmp_path / "out"
    result = drainspec(
        "run", "--app", "tests.apps.notes_aiosqlite:app", "--request-path", "GET /notes?seconds={seconds}",
        "--requests", "1", "--request-seconds", "0.3", "--background", "0", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((out / "report.json").read_text())
    verdicts = {v["name"]: v for v in report["verdicts"]}
    for name in ("resources-closed", "no-use-after-close"):
        assert verdicts[name]["status"] == "not-applicable", verdicts[name]
        assert "the app loaded aiosqlite, which drainspec does not hook" in verdicts[name]["summary"]
