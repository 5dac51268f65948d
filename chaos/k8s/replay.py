"""
Replay a Deployment's termination locally, as the kubelet and the Service would run it:

    container command as PID 1 of a new PID namespace, behind a router (the Service)
    slow requests in flight, plus a steady stream of new requests through the router
    deletion at t0:  the router keeps routing to the pod for `propagation` seconds   (track 1)
                     preStop -> stop signal to PID 1 -> SIGKILL at the deadline      (track 2)

A play on `chaos.lifecycle`, journaled like a plain run plus the manifest's static findings,
so the same verdicts judge it and `drainspec report` can rebuild it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Sequence

from chaos import target, traffic
from chaos.journal import Event, Kind
from chaos.k8s import kubelet
from chaos.k8s.findings import static_findings
from chaos.k8s.loopback import checked_paths, keep_loopback
from chaos.k8s.manifest import localize
from chaos.k8s.plan import Replay
from chaos.k8s.pod import handles_signal
from chaos.k8s.prestop import describe, prestop_runner
from chaos.lifecycle import open_run
from chaos.runner import stop_signal_of


def replay(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Replay the pod's termination; returns the journal's events."""
    return asyncio.run(_replay(plan, run_dir))


async def _replay(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    pod, container, options = plan.pod, plan.container, plan.options
    port = target.free_port()
    argv, app = localize(container.argv, port=port, container_ports=container.ports)
    argv = keep_loopback(argv)
    steady_path = checked_paths(plan)
    scenario = plan.scenario(argv, app)
    stop_signal = stop_signal_of(scenario.signal, where="lifecycle.stopSignal")
    propagation = options.pick_propagation()
    async with open_run(scenario, run_dir) as run:
        journal = run.journal
        replay_info = {
            "pod": pod.name,
            "container": container.name,
            "propagation": propagation,
            "seed": options.seed,
            "prestop": describe(container.prestop),
        }
        journal.write(Kind.RUN_START, scenario=scenario.to_dict(), port=port, replay=replay_info)
        for finding in static_findings(pod, container):
            journal.write(Kind.STATIC_FINDING, **dataclasses.asdict(finding))
        run.require_command(argv[0])
        started = await run.start_pod(argv, namespace=options.namespace)
        journal.write(Kind.POD_STARTED, target=started.pid1, namespaced=started.namespaced, argv=argv)
        tail = run.tail()
        if app:
            await target.wait_ready(
                started.process, tail, port=port, workers=1, timeout=scenario.ready_timeout, log=run.log
            )
        else:
            await target.wait_port(started.process, port=port, timeout=scenario.ready_timeout, log=run.log)
        journal.write(
            Kind.SERVER_READY,
            target=started.pid1,
            port=port,
            handles_stop_signal=handles_signal(started.pid1, stop_signal),
        )
        router = await run.router(options, propagation)
        router.add(pod.name, port)
        url = f"http://{target.HOST}:{router.port}"
        async with traffic.new_client(run.client_timeout) as client:
            clients = traffic.start_traffic(client, url, scenario, journal)
            stop_steady = asyncio.Event()
            steady = asyncio.create_task(traffic.steady_load(client, url, steady_path, journal, stop_steady))
            try:
                if clients:
                    await traffic.wait_in_flight(tail, clients, scenario, started.process)
                journal.write(Kind.POD_DELETED, grace=pod.grace)
                router.terminate(pod.name)
                await kubelet.terminate(
                    started.process,
                    stop_signal=stop_signal,
                    grace=pod.grace,
                    journal=journal,
                    main_pid=started.pid1,
                    prestop=prestop_runner(container, started, port, journal, run.helper_started),
                )
                stop_steady.set()
                await run.settle([steady, *clients])
            finally:
                stop_steady.set()
                await run.cancel([steady, *clients])
    return run.events


def measured_drain(events: Sequence[Event]) -> float | None:
    """Seconds from the stop signal to the exit, when the process exited by itself."""
    signal_t = next((e.t for e in events if e.kind == Kind.SIGNAL_SENT), None)
    exit_event = next((e for e in events if e.kind == Kind.SERVER_EXITED), None)
    if signal_t is None or exit_event is None or exit_event.get("killed"):
        return None
    return (exit_event.t - signal_t) / 1e9
