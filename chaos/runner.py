"""
`drainspec run`: one run of a scenario on a server, start to finish, as a play on the lifecycle:

    spawn the server on the probe  ->  wait for lifespan startup in the journal
    put the requests in flight     ->  wait until the journal shows them inside the app
    terminate (chaos.k8s.kubelet)  ->  let the clients finish, reap the whole process tree
    data-integrity check (optional), journaled like everything else

Nothing here judges: the journal this writes is the input of `chaos.outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import subprocess
from collections.abc import Sequence

from chaos import faults, integrity, target, traffic
from chaos.errors import SetupError
from chaos.journal import Event, Kind, read_journal
from chaos.k8s import kubelet
from chaos.lifecycle import Run, open_run
from chaos.probe import PORT_ENV
from chaos.scenario import Scenario


async def _drive(
    run: Run,
    scenario: Scenario,
    process: subprocess.Popen[bytes],
    port: int,
    injected: Sequence[faults.Fault],
    stop_signal: signal.Signals,
) -> None:
    """Preflight, work in flight (unless the signal comes at `ready`), faults, the stop signal."""
    journal, tail = run.journal, run.tail()
    base_url = f"http://{target.HOST}:{port}"
    context = faults.FaultContext(process, journal, base_url, run.client_timeout)
    async with traffic.new_client(run.client_timeout) as client:
        await traffic.preflight(client, base_url, scenario, journal)
        in_flight = scenario.signal_at == "in-flight"
        clients = traffic.start_traffic(client, base_url, scenario, journal) if in_flight else {}
        extras = await faults.open_at_shutdown(context, injected)
        try:
            also = faults.evidence_before_signal(injected)
            await traffic.wait_in_flight(tail, clients, scenario, process, also=also)
            journal.write(Kind.IN_FLIGHT, requests=sorted(clients.values()))
            if scenario.signal_delay:
                await asyncio.sleep(scenario.signal_delay)  # a chosen offset, not a readiness wait
            extras += faults.timed(context, injected)
            await kubelet.terminate(process, stop_signal=stop_signal, grace=scenario.grace, journal=journal, floor=0.0)
            await run.settle([*clients, *extras])
        finally:
            await run.cancel([*clients, *extras])


# `run` takes --grace as given: the kubelet's 2 s floor (`kubelet.MINIMUM_GRACE_SECONDS`) is for
# replays of a manifest, where it is what Kubernetes does; a user's exact grace stays exact here.


def stop_signal_of(name: str, *, where: str = "--signal") -> signal.Signals:
    """The stop signal named by the user or the manifest; a bad name is a `SetupError`."""
    try:
        return kubelet.parse_signal(name)
    except ValueError as exc:
        raise SetupError(f"{where}: {exc}") from None


LOADED_WHILE_THE_SERVER_BOOTS = (
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
What the rest of a command needs (the client, the judge, the reports, the console) and nothing
loads before the server is spawned: a server takes longer to boot than these take to import, so
the user never waits on them (`bench/overhead.py`).
"""


def _load_while_the_server_boots() -> None:
    for name in LOADED_WHILE_THE_SERVER_BOOTS:
        with contextlib.suppress(ImportError):  # only ever sooner: what is not there loads when used, or fails then
            importlib.import_module(name)


def execute(scenario: Scenario, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Run the scenario; returns the journal's events. Raises `SetupError` for bad input."""
    return asyncio.run(_execute(scenario, run_dir))


async def _execute(scenario: Scenario, run_dir: str | os.PathLike[str]) -> list[Event]:
    stop_signal = stop_signal_of(scenario.signal)
    injected = faults.parse_faults(scenario.faults)
    traffic.plan_traffic(scenario)  # bad request specs fail before anything starts
    check = integrity.load_check(scenario.integrity) if scenario.integrity else None
    if scenario.port is not None:
        target.check_port_free(scenario.port)
    port = scenario.port or target.free_port()
    argv = target.server_argv(
        scenario.server, port, workers=scenario.workers, extra=scenario.server_args, command=scenario.command
    )
    async with open_run(scenario, run_dir) as run:
        journal = run.journal
        run.env.update(faults.server_environment(injected))
        run.env[PORT_ENV] = str(port)  # where an app's own script listens (`chaos.probe.script`)
        journal.write(Kind.RUN_START, scenario=scenario.to_dict(), port=port)
        process = run.spawn(argv)
        journal.write(Kind.SERVER_SPAWNED, target=process.pid, argv=argv)
        _load_while_the_server_boots()
        tail = run.tail()
        if scenario.signal_at == "startup":
            # Kubernetes deletes pods while they start (a superseded rollout, a scale-down).
            await target.wait_startup_begun(process, tail, timeout=scenario.ready_timeout, log=run.log)
            await kubelet.terminate(process, stop_signal=stop_signal, grace=scenario.grace, journal=journal, floor=0.0)
        else:
            await target.wait_ready(
                process, tail, port=port, workers=scenario.workers, timeout=scenario.ready_timeout, log=run.log
            )
            journal.write(Kind.SERVER_READY, target=process.pid, port=port)
            await _drive(run, scenario, process, port, injected, stop_signal)
        await run.finish()
        if check is not None:
            events = read_journal(run.journal_path)
            confirmed = integrity.confirmed_writes(events, scenario)
            problems, error = await integrity.run_check(check, integrity.IntegrityRun(events, confirmed, run.env))
            outcome = {"problems": problems} if error is None else {"error": error}
            journal.write(Kind.INTEGRITY_CHECKED, check=scenario.integrity, confirmed=len(confirmed), **outcome)
    return run.events
