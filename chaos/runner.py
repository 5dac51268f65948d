"""
One run of a scenario, start to finish:

    spawn the server on the probe  ->  wait for lifespan startup in the journal
    put the requests in flight     ->  wait until the journal shows them inside the app
    terminate (chaos.k8s.kubelet)      ->  let the clients finish, reap the whole process tree
    data-integrity check (optional), journaled like everything else

Nothing here judges: the journal this writes is the input of `chaos.judge.verdict`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from chaos import faults, target, traffic
from chaos.errors import SetupError
from chaos.journal import Event, JournalTail, JournalWriter, Kind, read_journal
from chaos.k8s import kubelet
from chaos.probe import JOURNAL_ENV, STALL_ENV
from chaos.scenario import Scenario

IntegrityCheck = Callable[[Sequence[Event], Mapping[str, str]], list[str]]
JOURNAL_FILE = "journal.jsonl"
SERVER_LOG = "server.log"
DATA_DIR = "data"  # the app's private, empty directory: DRAINSPEC_RUN_DIR
CLIENT_SLACK_SECONDS = 5.0


def prepare_run_dir(path: str | os.PathLike[str]) -> Path:
    """A private directory for one run's files (0700), emptied of a previous run's journal."""
    run_dir = Path(path).resolve()
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_dir.chmod(0o700)
    except OSError as exc:
        raise SetupError(f"cannot use {run_dir} for the run's files: {exc.strerror}") from None
    for name in (JOURNAL_FILE, SERVER_LOG):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    data = run_dir / DATA_DIR
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(mode=0o700)
    return run_dir


def load_integrity_check(import_string: str) -> IntegrityCheck:
    from uvicorn.importer import ImportFromStringError, import_from_string

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        check = import_from_string(import_string)
    except ImportFromStringError as exc:
        raise SetupError(f"--integrity: {exc}") from None
    except Exception as exc:
        raise SetupError(f"--integrity: importing {import_string!r} raised {exc!r}") from None
    if not callable(check):
        raise SetupError(f"--integrity: {import_string!r} is not a function")
    return check


def server_environment(scenario: Scenario, run_dir: Path, journal: Path) -> dict[str, str]:
    env = dict(os.environ)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH")) if p)
    env[JOURNAL_ENV] = str(journal)
    env[STALL_ENV] = str(scenario.stall_ms)
    env["DRAINSPEC_APP"] = scenario.app
    env["DRAINSPEC_RUN_DIR"] = str(run_dir / DATA_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(scenario.env)
    return env


def execute(scenario: Scenario, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Run the scenario; returns the journal's events. Raises `SetupError` for bad input."""
    return asyncio.run(execute_async(scenario, prepare_run_dir(run_dir)))


async def execute_async(scenario: Scenario, run_dir: Path) -> list[Event]:
    stop_signal = _signal(scenario.signal)
    injected = [faults.parse_fault(text) for text in scenario.faults]
    check = load_integrity_check(scenario.integrity) if scenario.integrity else None
    if scenario.port is not None:
        target.check_port_free(scenario.port)
    port = scenario.port or target.free_port()
    argv = target.server_argv(
        scenario.server,
        port,
        workers=scenario.workers,
        extra=scenario.server_args,
        command=scenario.command,
    )
    journal_path = run_dir / JOURNAL_FILE
    log = run_dir / SERVER_LOG
    journal = JournalWriter(journal_path)
    env = server_environment(scenario, run_dir, journal_path)
    env.update(faults.server_environment(injected))
    journal.write(Kind.RUN_START, scenario=scenario.to_dict(), port=port)
    process = target.spawn(argv, env=env, cwd=os.getcwd(), log=log)
    try:
        journal.write(Kind.SERVER_SPAWNED, target=process.pid, argv=argv)
        tail = JournalTail(journal_path)
        await target.wait_ready(
            process,
            tail,
            port=port,
            workers=scenario.workers,
            timeout=scenario.ready_timeout,
            log=log,
        )
        journal.write(Kind.SERVER_READY, target=process.pid, port=port)
        client_timeout = scenario.grace + max(scenario.request_seconds, 1.0) + CLIENT_SLACK_SECONDS
        base_url = f"http://{target.HOST}:{port}"
        context = faults.FaultContext(process, journal, base_url, client_timeout)
        async with traffic.new_client(client_timeout) as client:
            clients = _start_traffic(client, base_url, scenario, journal)
            extras = await faults.open_at_shutdown(context, injected)
            try:
                await _wait_in_flight(tail, clients, scenario, process, also=faults.evidence_before_signal(injected))
                if scenario.signal_delay:
                    await asyncio.sleep(scenario.signal_delay)  # a chosen offset, not a readiness wait
                extras += faults.timed(context, injected)
                await kubelet.terminate(process, stop_signal=stop_signal, grace=scenario.grace, journal=journal)
                await asyncio.wait([*clients, *extras], timeout=client_timeout)
            finally:
                for task in (*clients, *extras):
                    task.cancel()
                await asyncio.gather(*clients, *extras, return_exceptions=True)
    finally:
        target.reap(process)
    if check is not None:
        events = read_journal(journal_path)
        try:
            problems = check(events, env)
        except Exception as exc:
            problems = [f"the integrity check itself failed: {exc!r}"]
        journal.write(Kind.INTEGRITY_CHECKED, check=scenario.integrity, problems=problems)
    journal.close()
    return read_journal(journal_path)


def _signal(name: str) -> Any:
    try:
        return kubelet.parse_signal(name)
    except ValueError as exc:
        raise SetupError(str(exc)) from None


def _start_traffic(
    client: Any, base_url: str, scenario: Scenario, journal: JournalWriter
) -> dict[asyncio.Task[traffic.Outcome], str]:
    """The slow requests (`r1..`) and the background-task requests (`b1..`), all at once."""
    try:
        slow = traffic.RequestSpec.parse(scenario.request_path)
        background = traffic.RequestSpec.parse(scenario.background_path)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    plans = [(f"r{n}", slow, scenario.request_seconds, "slow") for n in range(1, scenario.requests + 1)]
    plans += [
        (f"b{n}", background, scenario.background_seconds, "background") for n in range(1, scenario.background + 1)
    ]
    tasks = {}
    for request_id, spec, seconds, role in plans:
        rendered = spec.render(seconds=seconds, request_id=request_id)
        coro = traffic.perform(client, base_url, rendered, request_id, journal, role=role)
        tasks[asyncio.create_task(coro)] = request_id
    return tasks


async def _wait_in_flight(
    tail: JournalTail,
    clients: Mapping[asyncio.Task[traffic.Outcome], str],
    scenario: Scenario,
    process: Any,
    also: Mapping[str, str] | None = None,
) -> None:
    """
    Wait for evidence, not time: every slow request has started inside the app, every
    background request has a task running, and each id in `also` has shown its event kind.
    Only then is the stop signal meaningful.
    """
    slow = {f"r{n}" for n in range(1, scenario.requests + 1)}
    background = {f"b{n}" for n in range(1, scenario.background + 1)}
    pending_also = dict(also or {})
    started: set[str] = set()
    with_task: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scenario.in_flight_timeout
    while True:
        for event in tail.poll():
            request = event.get("request")
            if event.kind == Kind.REQUEST_START and request in slow:
                started.add(request)
            elif event.kind == Kind.TASK_STARTED and request in background:
                with_task.add(request)
            who = request or event.get("id")
            if who in pending_also and pending_also[who] == event.kind:
                del pending_also[who]
        if started >= slow and with_task >= background and not pending_also:
            return
        missing = sorted((slow - started) | (background - with_task) | set(pending_also))
        if process.poll() is not None:
            raise SetupError(f"the server exited (code {process.returncode}) before work was in flight")
        if all(task.done() for task in clients) or loop.time() > deadline:
            outcomes = ", ".join(
                f"{clients[task]}={task.result().value}"
                for task in clients
                if task.done() and not task.cancelled() and clients[task] in missing
            )
            raise SetupError(
                f"requests {', '.join(missing)} never got in flight inside the app"
                + (f" (client saw: {outcomes})" if outcomes else "")
                + "; check --request-path/--background-path and that they are slow enough"
            )
        await asyncio.sleep(0.01)
