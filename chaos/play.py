"""
The play of `drainspec run` once its server is spawned (`chaos.runner` spawns it):

    wait for lifespan startup in the journal
    put the requests in flight     ->  wait until the journal shows them inside the app
    terminate (chaos.k8s.kubelet)  ->  let the clients finish, reap the whole process tree
    data-integrity check (optional), journaled like everything else

Nothing here judges: the journal this writes is the input of `chaos.outcome`.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from chaos import faults, integrity, target, traffic, waits
from chaos.journal import Kind, read_journal
from chaos.k8s import kubelet
from chaos.lifecycle import Run, closing
from chaos.scenario import Scenario


@dataclass(frozen=True)
class Spawned:
    """A run whose server was just spawned, and what the play needs that was checked before."""

    run: Run
    process: subprocess.Popen[bytes]
    port: int
    injected: Sequence[faults.Fault]
    stop_signal: signal.Signals
    check: integrity.Check | None


async def play(spawned: Spawned) -> None:
    """From the spawn to the reaping; the run is closed on leaving, whatever happens."""
    run, process, scenario = spawned.run, spawned.process, spawned.run.scenario
    async with closing(run):
        tail = run.tail()
        if scenario.signal_at == "startup":
            # Kubernetes deletes pods while they start (a superseded rollout, a scale-down).
            await waits.wait_startup_begun(process, tail, timeout=scenario.ready_timeout, log=run.log)
            await kubelet.terminate(
                process, stop_signal=spawned.stop_signal, grace=scenario.grace, journal=run.journal, floor=0.0
            )
        else:
            await waits.wait_ready(
                process, tail, port=spawned.port, workers=scenario.workers, timeout=scenario.ready_timeout, log=run.log
            )
            run.journal.write(Kind.SERVER_READY, target=process.pid, port=spawned.port)
            await _drive(run, scenario, process, spawned.port, spawned.injected, spawned.stop_signal)
        await run.finish()
        if spawned.check is not None:
            await _check_integrity(run, spawned.check)


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


async def _check_integrity(run: Run, check: integrity.Check) -> None:
    """The user's data-integrity check, on the writes the clients saw confirmed; journaled."""
    scenario = run.scenario
    events = read_journal(run.journal_path)
    confirmed = integrity.confirmed_writes(events, scenario)
    problems, error = await integrity.run_check(check, integrity.IntegrityRun(events, confirmed, run.env))
    outcome = {"problems": problems} if error is None else {"error": error}
    run.journal.write(Kind.INTEGRITY_CHECKED, check=scenario.integrity, confirmed=len(confirmed), **outcome)
