"""
`drainspec run`: one run of a scenario on a server, start to finish, as a play on the lifecycle:

    check the scenario             ->  open the run, spawn the server on the probe   (here)
    wait for lifespan startup in the journal
    put the requests in flight     ->  wait until the journal shows them inside the app
    terminate (chaos.k8s.kubelet)  ->  let the clients finish, reap the whole process tree
    data-integrity check (optional), journaled like everything else           (`chaos.play`)

The server is spawned first, before the rest of drainspec loads: everything up to the spawn is
in modules that load no asyncio (`tests/test_spawn_first.py` keeps it so), and asyncio, the
client, the play, the judge and the reports load while the server boots, which takes longer. A
user waits on the server and hardly on drainspec (`bench/overhead.py`).

Nothing here judges: the journal this writes is the input of `chaos.outcome`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chaos import target, workload
from chaos.environment import PORT_ENV
from chaos.errors import SetupError
from chaos.journal import Event, Kind
from chaos.lifecycle import Run
from chaos.scenario import Scenario, parse_signal

if TYPE_CHECKING:
    from chaos.faults import Fault
    from chaos.integrity import Check
    from chaos.play import Spawned


def stop_signal_of(name: str, *, where: str = "--signal") -> signal.Signals:
    """The stop signal named by the user or the manifest; a bad name is a `SetupError`."""
    try:
        return parse_signal(name)
    except ValueError as exc:
        raise SetupError(f"{where}: {exc}") from None


LOADED_WHILE_THE_SERVER_BOOTS = (
    "asyncio",
    "chaos.play",  # and with it the load driver, the faults and the kubelet
    "httpx",
    "httpcore",  # httpx loads it with its first client
    "anyio._backends._asyncio",  # and httpcore this, at its first request: 50 to 70 ms the two
    "chaos.outcome",
    "chaos.reports.json",
    "chaos.reports.junit",
    "chaos.reports.html",
    "rich.console",
    "rich.markup",
)
"""
What the rest of a command needs (the event loop, the client, the judge, the reports, the
console) and nothing loads before the server is spawned: a server takes longer to boot than these
take to import, so the user never waits on them (`bench/overhead.py`).
"""


def _load_while_the_server_boots() -> None:
    for name in LOADED_WHILE_THE_SERVER_BOOTS:
        with contextlib.suppress(ImportError):  # only ever sooner: what is not there loads when used, or fails then
            importlib.import_module(name)


def execute(scenario: Scenario, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Run the scenario; returns the journal's events. Raises `SetupError` for bad input."""
    stop_signal = stop_signal_of(scenario.signal)
    injected = _faults_of(scenario)
    workload.plan_traffic(scenario)  # bad request specs fail before anything starts
    check = _integrity_check_of(scenario)
    if scenario.port is not None:
        target.check_port_free(scenario.port)
    port = scenario.port or target.free_port()
    argv = target.server_argv(
        scenario.server, port, workers=scenario.workers, extra=scenario.server_args, command=scenario.command
    )
    run = Run.open(scenario, run_dir)
    try:
        spawned = _spawn(run, argv, port, injected, stop_signal, check)
    except BaseException:
        _close_at_once(run)
        raise
    import asyncio

    from chaos.play import play

    asyncio.run(play(spawned))
    return run.events


def _spawn(
    run: Run,
    argv: Sequence[str],
    port: int,
    injected: Sequence[Fault],
    stop_signal: signal.Signals,
    check: Check | None,
) -> Spawned:
    """Journal the run's start, spawn its server, and load the rest of drainspec while it boots."""
    if injected:
        from chaos.faults import server_environment

        run.env.update(server_environment(injected))
    run.env[PORT_ENV] = str(port)  # where an app's own script listens (`chaos.probe.script`)
    run.journal.write(Kind.RUN_START, scenario=run.scenario.to_dict(), port=port)
    process = run.spawn(argv, journal_as=Kind.SERVER_SPAWNED)
    _load_while_the_server_boots()
    from chaos.play import Spawned

    return Spawned(run, process, port, injected, stop_signal, check)


def _close_at_once(run: Run) -> None:
    """Close a run that failed before its play began (its server, if spawned, is reaped)."""
    import asyncio

    asyncio.run(run.close(strict=False))


def _faults_of(scenario: Scenario) -> list[Fault]:
    """The scenario's faults, checked; the faults load (and asyncio with them) only for a run that has some."""
    if not scenario.faults:
        return []
    from chaos.faults import parse_faults

    return parse_faults(scenario.faults)


def _integrity_check_of(scenario: Scenario) -> Check | None:
    """The `--integrity` check, imported and checked before anything starts."""
    if not scenario.integrity:
        return None
    from chaos.integrity import load_check

    return load_check(scenario.integrity)
