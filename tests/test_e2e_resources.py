"""
Resources seen without a code change, end to end: real uvicorn processes on apps that use a
real PostgreSQL (through an asyncpg pool, and through a SQLAlchemy engine on psycopg), a real
Redis and an HTTP service, none of which imports drainspec. drainspec names every resource,
passes the correct version of each app, and fails each mistake on the verdict it makes wrong:

| app | mistake | fails |
|---|---|---|
| `shop_asyncpg` | the pool is never closed | resources-closed |
| `ledger_sqlalchemy` | the engine is disposed from a SIGTERM handler | no-use-after-close, and what follows |
| `counter_redis` | the Redis client is closed before the drain | no-use-after-close, and what follows |
| `notifier_httpx` | the client is closed, then pending background sends use it | no-use-after-close, and what follows |
| `tracked_jobs` | spawned jobs cancelled, not awaited, before the dispose | teardown-after-drain, no-use-after-close |
| `todos_peewee` | queries on peewee's autoconnect: a connection per pool thread, never closed | resources-closed |

"What follows" a close before the drain: teardown began while work was in flight
(teardown-after-drain), and the background work ran after it (background-fate).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chaos.judge.verdict import Status
from chaos.plugin import DrainResult
from chaos.scenario import HOLD_PATH
from tests.conftest import ROOT
from tests.services import Service

pytestmark = pytest.mark.e2e

AFTER_A_CLOSE_BEFORE_THE_DRAIN = {"no-use-after-close", "teardown-after-drain", "background-fate"}


@dataclass(frozen=True)
class App:
    """One test app: how to drive it, what it needs, and the mistake a variable switches on."""

    module: str
    request_path: str
    background_path: str
    needs: str  # "postgres", "redis" or "" (the app starts its own upstream)
    mistake: str
    fails: frozenset[str]
    driver: str = ""  # a Python package the app imports
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, service: Service | None, *, mistake: bool = False) -> dict[str, str]:
        env = dict(self.extra_env)
        if service is not None:
            env["DATABASE_URL" if self.needs == "postgres" else "REDIS_URL"] = service.url
        if mistake:
            env[self.mistake] = "1"
        return env


APPS = {
    "asyncpg": App(
        "tests.apps.shop_asyncpg:app",
        "GET /orders?seconds={seconds}",
        "POST /orders/{id}?ship_seconds={seconds}",
        "postgres",
        "SHOP_LEAK_POOL",
        frozenset({"resources-closed"}),
        driver="asyncpg",
    ),
    "sqlalchemy": App(
        "tests.apps.ledger_sqlalchemy:app",
        "GET /balance?seconds={seconds}",
        "POST /entries/{id}?post_seconds={seconds}",
        "postgres",
        "LEDGER_DISPOSE_ON_SIGTERM",
        frozenset(AFTER_A_CLOSE_BEFORE_THE_DRAIN),
        driver="psycopg",
    ),
    "redis": App(
        "tests.apps.counter_redis:app",
        "GET /visits?seconds={seconds}",
        "POST /events/{id}?seconds={seconds}",
        "redis",
        "COUNTER_CLOSE_ON_SIGTERM",
        frozenset(AFTER_A_CLOSE_BEFORE_THE_DRAIN),
        driver="redis",
    ),
    "httpx": App(
        "tests.apps.notifier_httpx:app",
        "GET /quote?seconds={seconds}",
        "POST /notify/{id}?seconds={seconds}",
        "",
        "NOTIFIER_CLOSE_FIRST",
        frozenset(AFTER_A_CLOSE_BEFORE_THE_DRAIN),
    ),
}
# Requests of half a second and background work a second longer, both in flight at SIGTERM: the
# background work must still be pending when the drain of the requests ends, on a slow machine
# too (0.3 s longer was not enough once: quotes through the upstream took 0.76 s).
TRAFFIC = {"requests": 2, "request_seconds": 0.5, "background": 2, "background_seconds": 1.5, "grace": 5.0}
NAMES = {
    "asyncpg": ("postgresql://127.0.0.1:{port}/shop", "asyncpg pool"),
    "sqlalchemy": ("postgresql://127.0.0.1:{port}/shop", "SQLAlchemy async engine"),
    "redis": ("redis://127.0.0.1:{port}/0", "redis.asyncio pool"),
    "httpx": ("httpx AsyncClient to 127.0.0.1:", "HTTP client"),
}


@pytest.fixture(params=sorted(APPS))
def app(request: pytest.FixtureRequest) -> tuple[str, App, Service | None]:
    """Each app, with the real service it needs started (the fixture skips when it cannot be)."""
    name = request.param
    spec = APPS[name]
    if spec.driver:
        pytest.importorskip(spec.driver)
    service = (
        request.getfixturevalue("postgres" if spec.needs == "postgres" else "redis_server") if spec.needs else None
    )
    return name, spec, service


def run(run_scenario: Callable[..., DrainResult], spec: App, env: dict[str, str]) -> DrainResult:
    return run_scenario(
        app=spec.module,
        request_path=spec.request_path,
        background_path=spec.background_path,
        env=env,
        integrity=None,
        **TRAFFIC,
    )


def test_the_correct_app_passes_with_its_resource_named(run_scenario, app) -> None:
    name, spec, service = app
    result = run(run_scenario, spec, spec.env(service))
    assert result.failed == set(), result.explain()
    (resource,) = result.timeline.resources.values()  # nothing counted twice (SQLAlchemy's psycopg connections)
    label, kind = NAMES[name]
    assert resource.label.startswith(label.format(port=service.port if service else "")), resource
    assert resource.type == kind and resource.long_lived and resource.closed is not None
    assert len(resource.uses) >= 2 * 2 + 2  # two requests' queries at least, and the background work's
    for verdict_name in ("no-use-after-close", "resources-closed"):
        verdict = result.verdict(verdict_name)
        assert verdict.status == Status.PASS and resource.label in verdict.summary, result.explain()
    assert result.timeline.unawaited == []


def test_the_mistake_fails_on_the_right_verdict_naming_the_resource(run_scenario, app) -> None:
    name, spec, service = app
    result = run(run_scenario, spec, spec.env(service, mistake=True))
    assert result.failed == spec.fails, result.explain()
    (resource,) = result.timeline.resources.values()
    if name == "asyncpg":
        verdict = result.verdict("resources-closed")
        assert "lifespan shutdown completed" in str(verdict.evidence[0]) and "without closing it" in str(
            verdict.evidence[0]
        )
        assert result.verdict("no-use-after-close").summary.startswith(f"{resource.label} never closed")
    else:
        verdict = result.verdict("no-use-after-close")
        assert verdict.summary.startswith(f"{resource.label} was used"), verdict.summary
        named = [item for item in verdict.evidence if resource.label in item.text and "after it closed" in item.text]
        assert named and all(item.request and item.worker and item.t for item in named), result.explain()
        by_tasks = [item for item in named if item.task]
        assert len(by_tasks) == 2, result.explain()  # each background task that used it, by id
    assert resource.label in verdict.summary


def test_a_close_never_awaited_is_named_where_the_shutdown_dropped_it(run_scenario, postgres: Service) -> None:
    pytest.importorskip("asyncpg")
    spec = APPS["asyncpg"]
    result = run(run_scenario, spec, {**spec.env(postgres), spec.mistake: "unawaited"})
    assert result.failed == {"resources-closed"}, result.explain()
    (dropped,) = result.timeline.unawaited
    assert dropped.get("coroutine") == "Pool.close", dropped
    where = str(dropped.get("where"))
    assert where.startswith("tests/apps/shop_asyncpg.py:"), where
    line = int(where.rpartition(":")[2])
    assert "pool.close()" in (ROOT / "tests/apps/shop_asyncpg.py").read_text().splitlines()[line - 1]
    evidence = str(result.verdict("resources-closed").evidence[0])
    assert evidence.endswith(f"the shutdown dropped Pool.close() at {where} without awaiting it (a missing `await`?)")


def test_instrumentation_off_sees_no_resource(run_scenario, redis_server) -> None:
    pytest.importorskip("redis")
    spec = APPS["redis"]
    result = run(run_scenario, spec, {**spec.env(redis_server, mistake=True), "DRAINSPEC_INSTRUMENT": "0"})
    assert result.timeline.resources == {} and result.timeline.instrumented is False
    verdict = result.verdict("no-use-after-close")
    assert verdict.status == Status.NOT_APPLICABLE and "DRAINSPEC_INSTRUMENT=0" in verdict.summary


def test_the_report_shows_the_resources_and_never_a_password(tmp_path: Path, postgres: Service) -> None:
    pytest.importorskip("asyncpg")
    spec, out = APPS["asyncpg"], tmp_path / "out"
    argv = ["run", "--app", spec.module, "--request-path", spec.request_path, "--background-path", spec.background_path,
            "--requests", "2", "--request-seconds", "0.5", "--background", "1", "--background-seconds", "0.8",
            "--grace", "5", "--env", f"DATABASE_URL={postgres.url}", "--env", f"{spec.mistake}=1",
            "--out", str(out)]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "chaos.cli", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    name = f"postgresql://127.0.0.1:{postgres.port}/shop"
    assert f"Resources (seen in the app; a use is a query, a command or a request)\n  {name} (asyncpg pool): " in (
        result.stdout
    )
    assert f"FAIL resources-closed         1 of 1 resource(s) never closed: {name}" in result.stdout
    report = json.loads((out / "report.json").read_text())
    (failed,) = [v for v in report["verdicts"] if v["status"] == "fail"]
    assert failed["name"] == "resources-closed" and name in failed["evidence"][0]["text"]
    assert "<h2>Resources</h2>" in (out / "timeline.html").read_text()
    for path in out.rglob("*"):
        if path.is_file():
            assert postgres.password not in path.read_text(errors="replace"), path
    assert postgres.password not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("env", "fails"),
    [
        pytest.param({"JOBS_AWAIT_CANCELLED": "1"}, set(), id="cancelled-then-awaited"),
        pytest.param({}, {"teardown-after-drain", "no-use-after-close"}, id="cancelled-not-awaited"),
    ],
)
def test_jobs_the_teardown_cancels(run_scenario, env: dict[str, str], fails: set[str]) -> None:
    """
    Jobs started with `asyncio.create_task`, cancelled by the lifespan's end, which the policy
    `allow-cancel` accepts. Awaited before the engine's dispose, their last write ("cancelled")
    comes before the close: the drain the app means. Not awaited, it lands after the close (or
    never, when the loop closes first: background-fate then fails too).
    """
    pytest.importorskip("aiosqlite")
    result = run_scenario(
        app="tests.apps.tracked_jobs:app",
        requests=1,
        request_seconds=0.3,
        request_path=HOLD_PATH,
        background=2,
        background_seconds=5.0,
        background_path="POST /jobs/{id}?seconds={seconds}",
        background_policy="allow-cancel",
        env=env,
        integrity=None,
        grace=5.0,
    )
    assert fails <= result.failed <= fails | {"background-fate"}, result.explain()
    jobs = [task for task in result.timeline.tasks.values() if task.spawned and task.name.endswith(".run")]
    assert len(jobs) >= 2 and all(task.cancelled is not None or task.work_end is None for task in jobs[1:])
    writes = [use for resource in result.timeline.resources.values() for use in resource.uses if use.task]
    (engine,) = result.timeline.resources.values()
    assert engine.closed is not None
    (worker,) = result.timeline.workers.values()
    assert worker.shutdown_received is not None
    cleanups = [use for use in writes if use.start >= worker.shutdown_received]
    assert cleanups, result.explain()  # each cancelled job's last write, once the lifespan's end began
    if fails:
        assert all(use.start >= engine.closed for use in cleanups), result.explain()
    else:
        assert all(use.end is not None and use.end <= engine.closed for use in cleanups), result.explain()


@pytest.mark.parametrize("mistake", [False, True], ids=["connection-per-request", "connection-per-thread"])
def test_peewee_connections_each_closed_or_each_named(run_scenario, tmp_path: Path, mistake: bool) -> None:
    """
    peewee keeps a connection per thread: requests and background tasks in the server's thread
    pool each open one. Closed around each piece of work, every one is closed and the app passes;
    left to autoconnect, every pool thread's connection outlives the teardown, which closed only
    its own, and each is named with who opened it and what closes it.
    """
    pytest.importorskip("peewee")
    env = {"TODOS_DB": str(tmp_path / "todos.db"), **({"TODOS_PER_THREAD": "1"} if mistake else {})}
    result = run_scenario(
        app="tests.apps.todos_peewee:app",
        request_path="GET /todos?seconds={seconds}",
        background_path="POST /todos/{id}?done_seconds={seconds}",
        env=env,
        integrity=None,
        **TRAFFIC,
    )
    connections = list(result.timeline.resources.values())
    assert all(r.type == "peewee connection" and r.label == f"sqlite:///{env['TODOS_DB']}" for r in connections)
    (lifespan,) = [r for r in connections if r.long_lived]
    assert lifespan.closed is not None, result.explain()  # the lifespan's own, closed by its close()
    by_work = [r for r in connections if not r.long_lived]
    # the requests', the posts' and the background tasks' (a thread may serve more than one)
    assert by_work and all(r.request for r in by_work), result.explain()
    if not mistake:
        assert result.failed == set(), result.explain()
        assert all(r.closed is not None for r in by_work)
        return
    assert result.failed == {"resources-closed"}, result.explain()
    verdict = result.verdict("resources-closed")
    assert all(r.closed is None for r in by_work)
    assert len(verdict.evidence) == len(by_work), result.explain()
    assert all("peewee keeps a connection per thread" in item.text and item.request for item in verdict.evidence)
