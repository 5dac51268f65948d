"""
Resources: the instrumentation (`chaos.probe.resources`), the timeline's resource views and the
two verdicts on them, `no-use-after-close` and `resources-closed`.

The verdicts are judged on hand-written journals (`tests.journals`). The instrumentation runs in
a fresh interpreter per test, as it does inside a server: hooks are installed before anything is
imported, each library is driven for real (SQLite, local HTTP servers, and this suite's own
PostgreSQL and Redis), and the journal it wrote is read back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chaos.journal import Event, Kind, read_journal, segments_of
from chaos.judge.timeline import build
from chaos.judge.verdict import PER_POD_REASON, Status, VerdictName, no_use_after_close
from chaos.probe import resources
from tests.conftest import ROOT
from tests.journals import WORKER, Journal, graceful, ns
from tests.services import Service

V = VerdictName
PG = "postgresql://db:5432/shop"


# --- verdicts, from hand-written journals --------------------------------------------------------


def served(pid: int = WORKER) -> Journal:
    """A server that drained one request, with an asyncpg pool opened at startup and used by it."""
    return (
        Journal()
        .run_start()
        .startup(pid=pid)
        .resource("p1", -850, pid=pid)
        .request("r1", start=-100, end=200, pid=pid)
        .use("p1", -90, -80, request="r1", pid=pid)
        .signal(0, target=pid)
    )


def test_a_pool_closed_after_the_drain_passes_both_verdicts_and_is_named() -> None:
    journal = served().shutdown(250, complete=270).add(260, Kind.RESOURCE_CLOSED, resource="p1", how="close").exit(300)
    verdict = journal.verdict(V.NO_USE_AFTER_CLOSE)
    assert verdict.status == Status.PASS and verdict.summary == f"no use of {PG} after it closed"
    closed = journal.verdict(V.RESOURCES_CLOSED)
    assert closed.status == Status.PASS and closed.summary == f"all 1 resource(s) closed: {PG}"
    (note,) = closed.evidence
    assert str(note) == f"{PG} (asyncpg pool): opened -0.850s at startup, closed +0.260s (close); 1 use(s)"


@pytest.mark.parametrize(
    ("opened", "owner", "says"),
    [
        pytest.param(-950, {}, "opened -0.950s at import", id="before-the-lifespan-startup"),
        pytest.param(-850, {}, "opened -0.850s at startup", id="during-the-lifespan-startup"),
        pytest.param(-90, {"request": "r1"}, "opened -0.090s by request r1", id="by-a-request"),
        pytest.param(-90, {"request": "b1", "task": "t7"}, "opened -0.090s by task t7 of request b1", id="by-a-task"),
    ],
)
def test_who_opened_a_resource_is_told_by_the_timeline(opened, owner, says) -> None:
    """An engine created when its module is imported was not opened by the lifespan: reports say which."""
    from chaos.reports.console import resource_lines

    timeline = Journal().startup(-900).resource("p1", opened, **owner).signal(0).exit(300).timeline()
    (line,) = resource_lines(timeline)
    assert says in line


def test_a_service_task_is_named_where_it_opens_a_resource_and_where_it_ends() -> None:
    """A task the lifespan started (a queue listener) is a service, not a request's work: named all the same."""
    from chaos.reports.console import resource_lines, timeline_lines

    timeline = (
        Journal()
        .startup(-900)
        .service("a1", -880, cancelled=260, name="app.events.consumer.event_listener")
        .resource("p1", -870, task="a1")
        .signal(0)
        .shutdown(250, complete=270)
        .exit(300)
        .timeline()
    )
    (line,) = resource_lines(timeline)
    assert "opened -0.870s by task event_listener [a1]" in line
    assert any(line.endswith("task event_listener [a1] cancelled") for line in timeline_lines(timeline))


def test_a_use_after_close_names_the_resource_the_use_who_and_when() -> None:
    journal = (
        served()
        .add(10, Kind.RESOURCE_CLOSED, resource="p1", how="close")
        .task("t7", -50, -40, request="b1", name="app.ship")
        .use(
            "p1",
            150,
            160,
            op="execute UPDATE orders SET",
            request="b1",
            task="t7",
            error="InterfaceError: pool is closed",
        )
        .use("p1", 120, 130, request="r1", thread="anyio-worker")
        .shutdown(250, complete=270)
        .exit(300)
    )
    verdict = journal.verdict(V.NO_USE_AFTER_CLOSE)
    assert verdict.status == Status.FAIL
    assert verdict.summary == f"{PG} was used 2 time(s) after it closed"
    first, second = verdict.evidence
    assert str(first) == (
        f"+0.120s pid {WORKER}: fetch SELECT 1 on {PG} by request r1 in thread anyio-worker, after it closed at +0.010s"
    )
    assert (first.request, first.task, first.worker, first.t) == ("r1", None, WORKER, ns(120))
    assert str(second) == (
        f"+0.150s pid {WORKER}: execute UPDATE orders SET on {PG} by task ship [t7] of request b1, "
        "after it closed at +0.010s; it raised InterfaceError: pool is closed"
    )
    assert (second.request, second.task) == ("b1", "t7")


def test_a_use_running_when_its_resource_closed_fails() -> None:
    journal = served().use("p1", -10, 40, request="r1").add(20, Kind.RESOURCE_CLOSED, resource="p1", how="close")
    verdict = journal.shutdown(250, complete=270).exit(300).verdict(V.NO_USE_AFTER_CLOSE)
    assert verdict.status == Status.FAIL and "1 time(s) while it closed" in verdict.summary
    assert "still running when it closed at +0.020s (ended +0.040s)" in str(verdict.evidence[0])


def test_work_using_a_resource_after_teardown_began_fails_but_the_teardown_itself_may() -> None:
    base = served().shutdown(250, complete=290).add(280, Kind.RESOURCE_CLOSED, resource="p1", how="close")
    teardown_flush = base.use("p1", 260, 265)  # the lifespan's own last write, before its close
    assert teardown_flush.verdict(V.NO_USE_AFTER_CLOSE).status == Status.PASS
    late_task = served().shutdown(250, complete=290).add(280, Kind.RESOURCE_CLOSED, resource="p1", how="close")
    late_task.use("p1", 260, 265, request="b1", task="a9")
    verdict = late_task.exit(300).verdict(V.NO_USE_AFTER_CLOSE)
    assert verdict.status == Status.FAIL and "1 time(s) after teardown began" in verdict.summary
    assert "by task a9 of request b1, after lifespan shutdown began at +0.250s" in str(verdict.evidence[0])


def test_a_sigkilled_worker_never_gets_no_use_of_the_pool_after_it_closed() -> None:
    """The pool never closed: `no-use-after-close` says so, and `resources-closed` fails naming it."""
    journal = served().killed(1000)
    verdict = journal.verdict(V.NO_USE_AFTER_CLOSE)
    assert "after it closed" not in verdict.summary and verdict.status == Status.PASS
    assert verdict.summary.startswith(f"{PG} never closed (worker {WORKER} was killed with it open)")
    closed = journal.verdict(V.RESOURCES_CLOSED)
    assert closed.status == Status.FAIL and closed.summary == f"1 of 1 resource(s) never closed: {PG}"
    (item,) = closed.evidence
    assert str(item) == (
        f"{PG} (asyncpg pool), opened -0.850s at startup, never closed: "
        f"worker {WORKER} was SIGKILLed with it open at +1.000s"
    )
    assert (item.worker, item.t) == (WORKER, ns(1000))  # dated when it became final: the SIGKILL


def test_a_pool_recorded_by_the_app_and_killed_open_is_said_never_closed() -> None:
    journal = Journal().run_start().startup().pool(-800).request("r1", -100, 200).signal(0).killed(1000)
    verdict = journal.verdict(V.NO_USE_AFTER_CLOSE)
    assert "no use of the pool after it closed" not in verdict.summary
    assert "pool main never closed" in verdict.summary
    assert journal.verdict(V.RESOURCES_CLOSED).status == Status.FAIL


def test_a_pool_left_open_by_a_clean_shutdown_fails_resources_closed() -> None:
    journal = served().shutdown(250, complete=270).exit(300)
    (item,) = journal.verdict(V.RESOURCES_CLOSED).evidence
    assert "lifespan shutdown completed at +0.270s without closing it" in str(item)


def test_clients_opened_by_requests_and_never_closed_are_each_named() -> None:
    journal = served()
    for n in range(1, 4):
        name = "httpx AsyncClient"
        journal.resource(f"c{n}", -60 + n, None, name=name, type="HTTP client", library="httpx", request=f"r{n}")
        journal.use(f"c{n}", -50 + n, -40 + n, op="GET api:80/x", host="api:80", request=f"r{n}")
    journal.shutdown(250, complete=270).add(260, Kind.RESOURCE_CLOSED, resource="p1", how="close").exit(300)
    verdict = journal.verdict(V.RESOURCES_CLOSED)
    assert verdict.status == Status.FAIL and verdict.summary.startswith("3 of 4 resource(s) never closed")
    assert [item.request for item in verdict.evidence] == ["r1", "r2", "r3"]
    assert "httpx AsyncClient to api:80 (HTTP client), opened -0.059s by request r1, never closed" in str(
        verdict.evidence[0]
    )


def test_resources_of_one_label_are_counted_once_in_a_summary() -> None:
    journal = served()
    for n in range(1, 4):
        journal.resource(f"c{n}", -60 + n, None, name="api", type="HTTP client", library="httpx", request=f"r{n}")
    journal.shutdown(250, complete=270).exit(300)
    verdict = journal.verdict(V.RESOURCES_CLOSED)
    assert verdict.summary == f"4 of 4 resource(s) never closed: {PG}, api (HTTP client) of worker {WORKER} (x3)"
    assert len(verdict.evidence) == 4  # each one still named, with who opened it


def test_a_connection_per_request_is_listed_up_to_a_limit_then_counted() -> None:
    journal = served()
    for n in range(1, 31):
        journal.resource(f"c{n}", -80 + n, -79 + n, type="peewee connection", library="peewee", request="r1")
    journal.shutdown(250, complete=270).add(260, Kind.RESOURCE_CLOSED, resource="p1", how="close").exit(300)
    for verdict in (journal.verdict(V.RESOURCES_CLOSED), journal.verdict(V.NO_USE_AFTER_CLOSE)):
        assert verdict.status == Status.PASS
        assert len(verdict.evidence) == 21 and str(verdict.evidence[-1]) == "... and 11 more"


@pytest.mark.parametrize(
    ("library", "request_id", "says_per_thread"),
    [("peewee", "r1", True), ("peewee", None, False), ("psycopg", "r1", False)],
    ids=["peewee-by-a-request", "peewee-at-startup", "other-library"],
)
def test_a_peewee_connection_a_request_left_open_is_told_to_close_per_request(
    library: str, request_id: str | None, says_per_thread: bool
) -> None:
    """peewee's connections are per thread: the lifespan cannot close one a request's thread opened."""
    journal = served()
    journal.resource("c1", -60, None, name=PG, type=f"{library} connection", library=library, request=request_id)
    journal.shutdown(250, complete=270).add(260, Kind.RESOURCE_CLOSED, resource="p1", how="close").exit(300)
    (item,) = journal.verdict(V.RESOURCES_CLOSED).evidence
    assert ("peewee keeps a connection per thread" in str(item)) is says_per_thread
    assert "lifespan shutdown completed at +0.270s without closing it" in str(item)


def test_a_close_while_the_worker_starts_is_a_reset_not_a_close() -> None:
    """A forked worker disposing its parent's pool, then using the engine: it is open again."""
    journal = (
        Journal()
        .run_start()
        .resource("e1", -990, -985, type="SQLAlchemy engine", library="sqlalchemy", how="dispose")
        .startup()
        .request("r1", -100, 200)
        .use("e1", -90, -80, request="r1")
        .signal(0)
        .shutdown(250, complete=270)
        .add(260, Kind.RESOURCE_CLOSED, resource="e1", how="dispose")
        .exit(300)
    )
    assert journal.verdict(V.NO_USE_AFTER_CLOSE).status == Status.PASS
    assert journal.verdict(V.RESOURCES_CLOSED).status == Status.PASS
    (view,) = journal.timeline().resources.values()
    assert (view.reset, view.closed) == (ns(-985), ns(260))


def test_closing_a_startup_resource_after_the_signal_begins_teardown() -> None:
    journal = (
        served()
        .add(5, Kind.RESOURCE_CLOSED, resource="p1", how="close")
        .resource("c1", 50, 90, name="httpx AsyncClient", type="HTTP client", request="r1")  # per request: no
        .shutdown(250, complete=270)
        .exit(300)
    )
    worker = journal.timeline().workers[WORKER]
    assert (worker.teardown, worker.teardown_cause) == (ns(5), f"{PG} (asyncpg pool) closed")
    verdict = journal.verdict(V.TEARDOWN_AFTER_DRAIN)
    assert verdict.status == Status.FAIL
    assert str(verdict.evidence[0]).startswith(f"worker {WORKER}: {PG} (asyncpg pool) closed at +0.005s")


def test_resources_of_the_same_name_are_told_apart_by_what_they_are() -> None:
    journal = served().resource("e2", -840, 260, type="SQLAlchemy engine", library="sqlalchemy")
    journal.add(260, Kind.RESOURCE_CLOSED, resource="p1", how="close").shutdown(250, complete=270).exit(300)
    summary = journal.verdict(V.RESOURCES_CLOSED).summary
    assert summary == f"all 2 resource(s) closed: {PG} (asyncpg pool), {PG} (SQLAlchemy engine)"


def test_not_applicable_only_when_no_resource_was_seen() -> None:
    plain = graceful()
    for name in (V.NO_USE_AFTER_CLOSE, V.RESOURCES_CLOSED):
        assert plain.verdict(name).status == Status.NOT_APPLICABLE
    off = graceful().add(-990, Kind.PROBE_LOADED, app="a:app", instrument=False)
    assert "instrumentation was off: DRAINSPEC_INSTRUMENT=0" in off.verdict(V.NO_USE_AFTER_CLOSE).summary
    assert "instrumentation was off" in off.verdict(V.RESOURCES_CLOSED).summary


def test_resources_closed_is_per_pod_in_a_rollout() -> None:
    journal = served().run_start(rollout={"replicas": 2})
    verdict = journal.verdict(V.RESOURCES_CLOSED)
    assert (verdict.status, verdict.summary) == (Status.NOT_APPLICABLE, PER_POD_REASON)


def test_a_pool_the_app_records_keeps_its_wording() -> None:
    journal = graceful().pool(-800, closed=255)
    assert journal.verdict(V.NO_USE_AFTER_CLOSE).summary.startswith("no use of the pool after it closed")
    refused = graceful().pool(-800, closed=255).add(270, Kind.POOL_USE_AFTER_CLOSE, pool="main", use="checkout")
    assert refused.verdict(V.NO_USE_AFTER_CLOSE).summary == "pool main was used 1 time(s) after it closed"


def test_the_reports_show_the_resources() -> None:
    from chaos.reports.console import resource_lines, timeline_lines
    from chaos.reports.html import render

    journal = served().add(10, Kind.RESOURCE_CLOSED, resource="p1", how="close").use("p1", 120, 130, request="r1")
    journal.shutdown(250, complete=270).exit(300)
    timeline = journal.timeline()
    assert resource_lines(timeline) == [f"{PG} (asyncpg pool): opened -0.850s at startup, closed +0.010s (close); "
                                        "2 use(s), 1 after its close"]  # fmt: skip
    lines = "\n".join(timeline_lines(timeline))
    assert f"{PG} closed (close)" in lines and f"fetch SELECT 1 on {PG} after it closed (r1)" in lines
    page = render(timeline, journal.verdicts())
    assert "<h2>Resources</h2>" in page and 'data-marker="pool-closed"' in page


# --- the instrumentation, in a fresh interpreter -------------------------------------------------

UPSTREAM = """
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

upstream = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=upstream.serve_forever, daemon=True).start()
BASE = f"http://127.0.0.1:{upstream.server_address[1]}"
"""


def instrumented(tmp_path: Path, code: str, *, install: bool = True, env: dict[str, str] | None = None) -> list[Event]:
    """Run `code` in a new interpreter with the hooks installed first; the events it journaled."""
    journal = tmp_path / "journal.jsonl"
    prelude = "from chaos.probe import resources\nresources.install()\n" if install else ""
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env={**os.environ, "DRAINSPEC_JOURNAL": str(journal), **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return read_journal(journal) if journal.exists() or segments_of(journal).exists() else []


def of(events: list[Event], kind: str, **match: Any) -> list[Event]:
    return [e for e in events if e.kind == kind and all(e.get(k) == v for k, v in match.items())]


def opened(events: list[Event]) -> list[tuple[str, str]]:
    return [(str(e.get("name")), str(e.get("type"))) for e in of(events, Kind.RESOURCE_OPEN)]


def ops(events: list[Event]) -> list[str]:
    """Each use's op, in the order the uses began (a whole use is journaled at its end)."""
    uses = of(events, Kind.RESOURCE_USE)
    return [str(e.get("op")) for e in sorted(uses, key=lambda e: e.get("start") or e.t)]


def errors(events: list[Event]) -> list[str]:
    return [str(e.get("error")) for e in events if e.kind.startswith("resource.use") and e.get("error")]


def test_the_switch() -> None:
    assert resources.enabled({}) and resources.enabled({"DRAINSPEC_INSTRUMENT": "1"})
    for off in ("0", "false", "No", " off "):
        assert not resources.enabled({"DRAINSPEC_INSTRUMENT": off})
    assert resources.LIBRARIES == (
        "sqlalchemy",
        "asyncpg",
        "psycopg",
        "psycopg_pool",
        "psycopg2",
        "peewee",
        "redis",
        "httpx",
        "aiohttp",
    )


def test_the_verdicts_name_every_library_the_hooks_see_in_their_order() -> None:
    from chaos.judge.verdict import SEEN_BY_ITSELF

    named = SEEN_BY_ITSELF.lower().replace(" and ", ", ").split(", ")
    assert [name.split()[0].removesuffix("'s") for name in named] == list(resources.LIBRARIES)


def test_no_library_is_imported_that_the_app_does_not_import(tmp_path: Path) -> None:
    code = """
    import sys
    watched = ("sqlalchemy", "asyncpg", "psycopg", "psycopg_pool", "psycopg2", "peewee", "redis", "httpx", "aiohttp")
    assert not [name for name in watched if name in sys.modules], sys.modules.keys()
    import httpx
    assert getattr(httpx.AsyncClient.send, "_drainspec", False)
    """
    instrumented(tmp_path, code)


def test_sqlalchemy_engines_sync_and_async(tmp_path: Path) -> None:
    code = f"""
    import asyncio
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    db = {str(tmp_path / "x.db")!r}
    engine = create_engine("sqlite:///" + db)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        try:
            conn.execute(text("SELEC broken"))
        except Exception:
            pass
    engine.execution_options(isolation_level="AUTOCOMMIT").dispose(close=False)  # a reset, not a close
    engine.execution_options(isolation_level="AUTOCOMMIT").dispose()
    with engine.connect() as conn:
        conn.execute(text("SELECT 'after'"))  # SQLAlchemy reopens silently: a use after close

    async def main():
        engine = create_async_engine("sqlite+aiosqlite:///" + db)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 2"))
        await engine.dispose()
    asyncio.run(main())
    """
    events = instrumented(tmp_path, code)
    name = f"sqlite:///{tmp_path / 'x.db'}"
    assert opened(events) == [(name, "SQLAlchemy engine"), (name, "SQLAlchemy async engine")]
    assert ops(events) == ["SELECT 1", "SELEC broken", "SELECT", "SELECT 2"]  # literals never journaled
    (error,) = errors(events)
    assert error == 'OperationalError: near "SELEC": syntax error'
    closes = of(events, Kind.RESOURCE_CLOSED)
    assert [e.get("how") for e in closes] == ["dispose", "dispose"]
    sync_id = of(events, Kind.RESOURCE_OPEN)[0].get("resource")
    after = of(events, Kind.RESOURCE_USE, op="SELECT")[0]
    assert after.get("resource") == sync_id and after.t > closes[0].t


def test_a_connection_checked_out_before_a_dispose_and_given_back_after_it_is_a_use(tmp_path: Path) -> None:
    """The engine was disposed under it; one checked out after the dispose is seen by its statements."""
    code = f"""
    from sqlalchemy import create_engine, text
    engine = create_engine("sqlite:///" + {str(tmp_path / "x.db")!r})
    held = engine.connect()
    held.execute(text("SELECT 1"))
    engine.dispose()
    held.close()
    with engine.connect() as conn:
        conn.execute(text("SELECT 2"))
    """
    events = instrumented(tmp_path, code)
    assert ops(events) == ["SELECT 1", "connection given back (checked out before the close)", "SELECT 2"]
    (closed,) = of(events, Kind.RESOURCE_CLOSED)
    late = [e for e in of(events, Kind.RESOURCE_USE) if e.t > closed.t]
    assert [e.get("op") for e in late] == ["connection given back (checked out before the close)", "SELECT 2"]


def test_uses_are_attributed_to_the_request_the_task_and_the_thread(tmp_path: Path) -> None:
    code = f"""
    import contextvars, threading
    from sqlalchemy import create_engine, text
    from chaos.probe import current_request, current_task

    engine = create_engine("sqlite:///" + {str(tmp_path / "x.db")!r})
    current_request.set("b1")
    current_task.set("t4")
    context = contextvars.copy_context()

    def work():
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    thread = threading.Thread(target=context.run, args=(work,), name="sync-task")
    thread.start(); thread.join()
    """
    events = instrumented(tmp_path, code)
    (use,) = of(events, Kind.RESOURCE_USE)
    assert (use.get("request"), use.get("task"), use.get("thread")) == ("b1", "t4", "sync-task")


def test_httpx_and_aiohttp_clients(tmp_path: Path) -> None:
    code = (
        UPSTREAM
        + """
import asyncio, httpx, aiohttp

with httpx.Client(base_url=BASE) as client:
    client.get("/a?token=secret")

async def main():
    client = httpx.AsyncClient()
    await client.get(BASE + "/b")
    await client.aclose()
    try:
        await client.get(BASE + "/c")
    except RuntimeError:
        pass
    async with aiohttp.ClientSession() as session:
        async with session.get(BASE + "/d") as response:
            await response.read()
asyncio.run(main())
"""
    )
    events = instrumented(tmp_path, code)
    host = of(events, Kind.RESOURCE_USE)[0].get("host")
    assert opened(events) == [
        (f"httpx Client to {host}", "HTTP client"),
        ("httpx AsyncClient", "HTTP client"),
        ("aiohttp ClientSession", "HTTP client"),
    ]
    assert ops(events) == [f"GET {host}/a", f"GET {host}/b", f"GET {host}/c", f"GET {host}/d"]  # no query string
    assert [e.get("how") for e in of(events, Kind.RESOURCE_CLOSED)] == ["end of its with block", "aclose", "close"]
    assert errors(events) == ["RuntimeError: Cannot send a request, as the client has been closed."]


def test_every_use_is_in_the_journal_of_a_process_sigkilled_right_after_it(tmp_path: Path) -> None:
    """
    Each use is written the moment it ends, into the process's journal segment: a server killed
    a moment after its last query (by its re-raised SIGTERM, or the grace deadline) loses none.
    """
    code = f"""
    import os, signal
    from sqlalchemy import create_engine, text

    engine = create_engine("sqlite:///" + {str(tmp_path / "x.db")!r})
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT 2"))
    os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no flush: only what was written survives
    """
    journal = tmp_path / "journal.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", "from chaos.probe import resources\nresources.install()\n" + textwrap.dedent(code)],
        env={**os.environ, "DRAINSPEC_JOURNAL": str(journal)},
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == -9, result.stderr
    assert ops(read_journal(journal)) == ["SELECT 1", "SELECT 2"]


def test_a_hook_that_fails_is_a_warning_and_the_app_runs_on(tmp_path: Path) -> None:
    code = """
    from chaos.probe import resources

    def incompatible(module):
        raise AttributeError("Pool has no _async__init__")
    resources._installed = False
    resources.install([resources.Hook("email.utils", "asyncpg", incompatible)])
    import email.utils
    assert email.utils.formatdate()
    """
    events = instrumented(tmp_path, code, install=False)
    (warning,) = of(events, Kind.PROBE_WARNING)
    assert warning.get("library") == "asyncpg"
    assert warning.get("error") == (
        "cannot hook email.utils; its resources are not seen: AttributeError: Pool has no _async__init__"
    )


# --- the instrumentation on real PostgreSQL and Redis ----------------------------------------------


def no_secret(events: list[Event], service: Service) -> None:
    assert not [e for e in events if service.password in e.to_json()]


def test_asyncpg_pools_each_query_once_and_a_refused_acquire(tmp_path: Path, postgres: Service) -> None:
    pytest.importorskip("asyncpg")
    code = f"""
    import asyncio, asyncpg

    async def main():
        pool = await asyncpg.create_pool({postgres.url!r}, min_size=1, max_size=2)
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        await pool.execute("SELECT pg_sleep(0)")
        standalone = await asyncpg.connect({postgres.url!r})  # a connection of its own: not a pool
        await standalone.fetchval("SELECT 2")
        await standalone.close()
        await pool.close()
        try:
            await pool.fetchval("SELECT 3")
        except asyncpg.InterfaceError:
            pass
    asyncio.run(main())
    """
    events = instrumented(tmp_path, code)
    no_secret(events, postgres)
    assert opened(events) == [(f"postgresql://127.0.0.1:{postgres.port}/shop", "asyncpg pool")]
    assert ops(events) == ["fetchval SELECT 1", "execute SELECT pg_sleep(0)", "acquire"]  # no RESET ALL on release
    assert errors(events) == ["InterfaceError: pool is closed"]
    assert [e.get("how") for e in of(events, Kind.RESOURCE_CLOSED)] == ["close"]


def test_psycopg_connections_and_pools_and_sqlalchemy_on_them_count_once(tmp_path: Path, postgres: Service) -> None:
    pytest.importorskip("psycopg_pool")
    code = f"""
    import psycopg, psycopg_pool
    from sqlalchemy import create_engine, text

    url = {postgres.url!r}
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1")
    pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=2, open=True)
    with pool.connection() as conn:
        conn.execute("SELECT 2")
    pool.close()
    try:
        pool.getconn()
    except psycopg_pool.PoolClosed:
        pass
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        conn.execute(text("SELECT 3"))
    engine.dispose()
    """
    events = instrumented(tmp_path, code)
    no_secret(events, postgres)
    name = f"postgresql://127.0.0.1:{postgres.port}/shop"
    assert opened(events) == [(name, "psycopg connection"), (name, "psycopg_pool pool"), (name, "SQLAlchemy engine")]
    by_resource = {e.get("resource"): e.get("type") for e in of(events, Kind.RESOURCE_OPEN)}
    used = [(by_resource[e.get("resource")], e.get("op")) for e in of(events, Kind.RESOURCE_USE)]
    assert ("psycopg connection", "SELECT 1") in used and ("psycopg_pool pool", "SELECT 2") in used
    assert ("psycopg_pool pool", "getconn") in used and ("SQLAlchemy engine", "SELECT 3") in used
    assert len([op for _, op in used if op == "SELECT 3"]) == 1  # SQLAlchemy's psycopg connection: not counted again
    assert [e.get("how") for e in of(events, Kind.RESOURCE_CLOSED)] == ["close", "close", "dispose"]


@pytest.mark.parametrize("pool_class", ["SimpleConnectionPool", "ThreadedConnectionPool"])
def test_psycopg2_pools_a_refused_getconn_and_a_connection_given_back_late(
    tmp_path: Path, postgres: Service, pool_class: str
) -> None:
    """psycopg2's queries run in C and are not seen; its pools are Python, and what makes a use after close is."""
    pytest.importorskip("psycopg2")
    dsn = f"dbname=shop user=postgres password={postgres.password} host=127.0.0.1 port={postgres.port}"
    code = f"""
    import psycopg2.pool

    pool = psycopg2.pool.{pool_class}(1, 2, {dsn!r})
    conn = pool.getconn()
    conn.cursor().execute("SELECT 1")
    pool.putconn(conn)
    held = pool.getconn()
    pool.closeall()
    for late in (lambda: pool.putconn(held), pool.getconn):
        try:
            late()
        except psycopg2.pool.PoolError:
            pass
    """
    events = instrumented(tmp_path, code)
    no_secret(events, postgres)
    assert opened(events) == [(f"postgresql://127.0.0.1:{postgres.port}/shop", "psycopg2 pool")]
    (closed,) = of(events, Kind.RESOURCE_CLOSED)
    assert closed.get("how") == "closeall"
    late = [e for e in events if e.kind == Kind.RESOURCE_USE]
    assert [e.get("op") for e in late] == ["connection given back (checked out before the close)", "getconn"]
    assert all(e.t > closed.t for e in late)
    assert errors(events) == ["PoolError: connection pool is closed"]


def test_peewee_connections_per_thread_and_a_query_after_the_close_opens_another(tmp_path: Path) -> None:
    """peewee keeps a connection per thread and reconnects on a query after `close()`: each is a resource."""
    pytest.importorskip("peewee")
    path = tmp_path / "shop.db"
    code = f"""
    import threading, peewee

    db = peewee.SqliteDatabase({str(path)!r})
    db.connect()
    db.execute_sql("CREATE TABLE item (id INTEGER PRIMARY KEY)")
    worker = threading.Thread(target=lambda: db.execute_sql("SELECT count(*) FROM item"))  # its own, autoconnected
    worker.start()
    worker.join()
    db.close()
    db.execute_sql("INSERT INTO item (id) VALUES (1)")  # after the close: peewee connects again
    try:
        with db.atomic():
            db.close()  # refused inside a transaction: nothing closed
    except peewee.OperationalError:
        pass
    """
    events = instrumented(tmp_path, code)
    name = f"sqlite:///{path}"
    assert opened(events) == [(name, "peewee connection")] * 3
    first, in_thread, again = (e.get("resource") for e in of(events, Kind.RESOURCE_OPEN))
    assert [(e.get("resource"), e.get("how")) for e in of(events, Kind.RESOURCE_CLOSED)] == [(first, "close")]
    used = [(e.get("resource"), e.get("op"), e.get("thread")) for e in of(events, Kind.RESOURCE_USE)]
    assert used[0] == (first, "CREATE TABLE item", None)
    assert used[1][:2] == (in_thread, "SELECT count(*) FROM") and used[1][2]  # named with its thread
    assert (again, "INSERT INTO item", None) in used  # the INSERT, then the transaction's BEGIN
    assert of(events, Kind.RESOURCE_OPEN, resource=again)[0].t > of(events, Kind.RESOURCE_CLOSED)[0].t


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg"])
def test_peewee_on_postgresql_named_without_its_password(tmp_path: Path, postgres: Service, driver: str) -> None:
    """
    A URL given as the database's name (libpq expands it) is named without its credentials; on
    psycopg 3, whose own connections are hooked too, each connection is counted once.
    """
    peewee = pytest.importorskip("peewee")
    pytest.importorskip(driver)
    if driver == "psycopg" and not hasattr(peewee.PostgresqlDatabase, "psycopg3_adapter"):
        pytest.skip(f"peewee {peewee.__version__} does not drive psycopg 3")
    options = ", prefer_psycopg3=True" if driver == "psycopg" else ""
    code = f"""
    import peewee

    db = peewee.PostgresqlDatabase({postgres.url!r}{options})
    db.execute_sql("SELECT 1")  # autoconnect
    db.close()
    by_keywords = peewee.PostgresqlDatabase("shop", user="postgres", password={postgres.password!r},
                                            host="127.0.0.1", port={postgres.port}{options})
    with by_keywords.connection_context():
        by_keywords.execute_sql("SELECT 2")
    """
    events = instrumented(tmp_path, code)
    no_secret(events, postgres)
    name = f"postgresql://127.0.0.1:{postgres.port}/shop"
    assert opened(events) == [(name, "peewee connection")] * 2
    assert ops(events) == ["SELECT 1", "SELECT 2"]
    assert {e.get("library") for e in of(events, Kind.RESOURCE_OPEN)} == {"peewee"}
    assert [e.get("how") for e in of(events, Kind.RESOURCE_CLOSED)] == ["close", "close"]


def test_redis_pools_commands_pipelines_and_a_silent_use_after_close(tmp_path: Path, redis_server: Service) -> None:
    pytest.importorskip("redis")
    code = f"""
    import asyncio
    import redis.asyncio as redis

    async def main():
        client = redis.from_url({redis_server.url!r})
        await client.set("k", "v")
        async with client.pipeline() as pipe:
            await pipe.get("k").incr("n").execute()
        await client.aclose()
        assert await client.get("k") == b"v"  # redis-py reconnects: nothing tells the app
        await client.aclose()
    asyncio.run(main())
    """
    events = instrumented(tmp_path, code)
    no_secret(events, redis_server)
    assert opened(events) == [(f"redis://127.0.0.1:{redis_server.port}/0", "redis.asyncio pool")]
    assert ops(events) == ["SET", "pipeline of 2 command(s)", "GET"]
    (closed,) = of(events, Kind.RESOURCE_CLOSED)
    assert closed.get("how") == "aclose" and of(events, Kind.RESOURCE_USE, op="GET")[0].t > closed.t


def test_redis_sync_client_pools_commands_and_a_use_after_close(tmp_path: Path, redis_server: Service) -> None:
    """The sync client (a rate limiter, a cache in a sync endpoint) is seen as redis.asyncio's is."""
    pytest.importorskip("redis")
    code = f"""
    import redis

    client = redis.Redis.from_url({redis_server.url!r})
    client.set("k", "v")
    with client.pipeline() as pipe:
        pipe.get("k").incr("n").execute()
    pubsub = client.pubsub()
    pubsub.subscribe("news")
    pubsub.get_message(timeout=0.01)
    pubsub.close()
    client.close()
    assert client.get("k") == b"v"  # redis-py reconnects: nothing tells the app
    """
    events = instrumented(tmp_path, code)
    no_secret(events, redis_server)
    assert opened(events) == [(f"redis://127.0.0.1:{redis_server.port}/0", "redis pool")]
    assert ops(events)[:2] == ["SET", "pipeline of 2 command(s)"] and "SUBSCRIBE" in ops(events)
    assert "pub/sub read" in ops(events)
    (closed,) = of(events, Kind.RESOURCE_CLOSED)
    assert closed.get("how") in ("close", "disconnect")  # redis-py 5 disconnects the pool, 6 and later close it
    assert of(events, Kind.RESOURCE_USE, op="GET")[-1].t > closed.t


def test_celerys_own_redis_pools_are_not_the_apps(tmp_path: Path, redis_server: Service) -> None:
    """
    A task sent through Celery's Redis broker (kombu) opens pools the app neither opens nor closes:
    only the app's own client is a resource.
    """
    pytest.importorskip("kombu")
    code = f"""
    import redis
    from kombu import Connection

    with Connection({redis_server.url!r}) as broker:
        queue = broker.SimpleQueue("jobs")
        queue.put({{"job": 1}})
        queue.close()
    client = redis.Redis.from_url({redis_server.url!r})
    client.llen("jobs")
    client.close()
    """
    events = instrumented(tmp_path, code)
    assert opened(events) == [(f"redis://127.0.0.1:{redis_server.port}/0", "redis pool")]
    assert ops(events) == ["LLEN"]


def test_a_redis_pubsub_reading_across_the_close_of_its_pool_is_a_use_of_it(
    tmp_path: Path, redis_server: Service
) -> None:
    """A listener that reads while the pool closes, then unsubscribes after: both uses of the pool."""
    pytest.importorskip("redis")
    code = f"""
    import asyncio
    import redis.asyncio as redis

    async def main():
        client = redis.from_url({redis_server.url!r})
        pubsub = client.pubsub()
        await pubsub.subscribe("news")
        await pubsub.get_message(timeout=0.2)  # the subscription's confirmation
        reading = asyncio.ensure_future(pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5))
        await asyncio.sleep(0.1)
        await client.aclose()
        try:
            await reading
        except redis.ConnectionError:  # the pool closed the connection under the read
            pass
        await pubsub.unsubscribe("news")  # redis-py reconnects to the closed pool to send it
        await pubsub.aclose()
    asyncio.run(main())
    """
    events = instrumented(tmp_path, code)
    used = ops(events)  # redis-py subscribes again on the connection it reopens, before the UNSUBSCRIBE
    assert used[:3] == ["SUBSCRIBE", "pub/sub read", "pub/sub read"] and used[-1] == "UNSUBSCRIBE", used
    (closed,) = of(events, Kind.RESOURCE_CLOSED)
    across, after = (
        of(events, Kind.RESOURCE_USE, op="pub/sub read")[1],
        of(events, Kind.RESOURCE_USE, op="UNSUBSCRIBE")[0],
    )
    assert across.get("start") < closed.t < across.t and (after.get("start") or after.t) > closed.t
    first = events[0]  # judged as in a server that was serving: a close before that is a reset
    serving = [
        Event(first.t - 2, first.pid, Kind.STARTUP_RECEIVED),
        Event(first.t - 1, first.pid, Kind.STARTUP_COMPLETE),
    ]
    verdict = no_use_after_close(build(serving + sorted(events, key=lambda event: event.t)))
    assert verdict.status == Status.FAIL, verdict.summary
    misuses = [str(item) for item in verdict.evidence]
    assert any("pub/sub read" in text and "still running when it closed" in text for text in misuses), misuses
    assert any("UNSUBSCRIBE" in text and "after it closed" in text for text in misuses), misuses


def test_an_app_already_instrumented_by_opentelemetry_is_seen_by_both(
    tmp_path: Path, postgres: Service, redis_server: Service
) -> None:
    """
    OpenTelemetry wraps the very methods drainspec hooks (asyncpg's queries, redis' commands)
    with wrapt, before drainspec (asyncpg here) or after it (redis, httpx): the app works, and
    both see every use. Uninstrumenting OpenTelemetry afterwards leaves drainspec's hooks working.
    """
    for module in ("asyncpg", "redis", "httpx"):
        pytest.importorskip(f"opentelemetry.instrumentation.{module}")
    code = (
        UPSTREAM
        + f"""
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
AsyncPGInstrumentor().instrument()  # before drainspec: drainspec wraps OpenTelemetry's wrapper
from chaos.probe import resources
resources.install()
import asyncpg, httpx
import redis.asyncio as redis
RedisInstrumentor().instrument()  # after drainspec: OpenTelemetry wraps drainspec's hook
HTTPXClientInstrumentor().instrument()

async def main():
    pool = await asyncpg.create_pool({postgres.url!r}, min_size=1, max_size=1)
    assert await pool.fetchval("SELECT 41 + 1") == 42
    await pool.close()
    client = redis.from_url({redis_server.url!r})
    await client.set("otel", "1")
    await client.aclose()
    async with httpx.AsyncClient(base_url=BASE) as http:
        assert (await http.get("/x")).status_code == 200
asyncio.run(main())
names = [span.name for span in exporter.get_finished_spans()]
assert set(["SELECT", "SET", "GET"]) <= set(names), names  # its own view, asyncpg's RESET query included
RedisInstrumentor().uninstrument()
AsyncPGInstrumentor().uninstrument()

async def again():
    client = redis.from_url({redis_server.url!r})
    assert await client.get("otel") == b"1"
    await client.aclose()
asyncio.run(again())
assert len(exporter.get_finished_spans()) == len(names)
"""
    )
    events = instrumented(tmp_path, code, install=False)
    assert [kind for _, kind in opened(events)] == [
        "asyncpg pool",
        "redis.asyncio pool",
        "HTTP client",
        "redis.asyncio pool",
    ]
    assert [op.split()[0] for op in ops(events)] == ["fetchval", "SET", "GET", "GET"]
    assert len(of(events, Kind.RESOURCE_CLOSED)) == 4


def test_instrumented_constructors_keep_their_keyword_arguments(tmp_path: Path) -> None:
    """
    SQLAlchemy's `create_engine` hands `Engine.__init__` only the keywords that function names,
    read from its code: with a `(*args, **kwargs)` hook, `create_async_engine(url, echo=True)`
    (a public TODO app does exactly this) raised "Invalid argument(s) 'echo'" at import.
    """
    code = f"""
    import asyncio
    from sqlalchemy import create_engine, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_engine("sqlite:///" + {str(tmp_path / "x.db")!r}, echo=True, logging_name="app")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()

    async def main():
        engine = create_async_engine("sqlite+aiosqlite:///" + {str(tmp_path / "y.db")!r}, echo=True, future=True)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 2"))
        await engine.dispose()

    asyncio.run(main())
    """
    events = instrumented(tmp_path, code)
    assert ops(events) == ["SELECT 1", "SELECT 2"]
    assert len([e for e in events if e.kind == Kind.RESOURCE_CLOSED]) == 2


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        pytest.param(
            asyncio.CancelledError("Cancelled via cancel scope 7f20 by <Task ...>"), "CancelledError", id="cancelled"
        ),
        pytest.param(
            ConnectionError("Connection closed by server.\nmore"),
            "ConnectionError: Connection closed by server.",
            id="first-line",
        ),
    ],
)
def test_a_use_that_raised_says_what_in_one_line(exc: BaseException, text: str) -> None:
    """A cancelled use is `CancelledError`: anyio's message only names its cancel scope and task."""
    assert resources._error_text(exc) == text
