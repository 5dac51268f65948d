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
import signal
from collections.abc import Coroutine, Sequence
from typing import Any

import httpx

from chaos import target, traffic, waits
from chaos.environment import PORT_ENV
from chaos.journal import Event, JournalTail, JournalWriter, Kind
from chaos.judge.timeline import Timeline, build
from chaos.k8s import kubelet
from chaos.k8s.findings import keepalive_below_proxy, server_keepalive, static_findings
from chaos.k8s.ingress import Ingress, open_ingress, parse_options, upstream_idle_timeout
from chaos.k8s.loopback import checked_paths, keep_loopback
from chaos.k8s.manifest import journaled_argv
from chaos.k8s.plan import Replay
from chaos.k8s.pod import Pod, handles_signal
from chaos.k8s.prestop import describe, prestop_runner
from chaos.k8s.router import Router
from chaos.lifecycle import Run, open_run
from chaos.runner import stop_signal_of
from chaos.scenario import K8sOptions

SHELL_NAMES = frozenset({"sh", "bash", "dash", "ash", "zsh", "busybox"})
ROUTER_REMOVAL_SLACK = 2.0  # seconds past the propagation delay the replay waits for the router


def replay(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Replay the pod's termination; returns the journal's events."""
    return asyncio.run(_replay(plan, run_dir))


async def _replay(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    pod, container, options = plan.pod, plan.container, plan.options
    port = target.free_port()
    argv, app = plan.localized(port)
    argv = keep_loopback(argv)
    steady_path = checked_paths(plan)
    scenario = plan.scenario(app)
    stop_signal = stop_signal_of(scenario.signal, where="lifecycle.stopSignal")
    propagation = options.pick_propagation()
    async with open_run(scenario, run_dir, cwd=plan.workdir) as run:
        journal = run.journal
        run.env[PORT_ENV] = str(port)  # where an app's own script listens (`chaos.probe.script`)
        replay_info = {
            "pod": pod.name,
            "container": container.name,
            "propagation": propagation,
            "seed": options.seed,
            "prestop": describe(container.prestop),
        }
        if container.command_from is not None:  # the command was the image's, read from this Dockerfile
            replay_info["dockerfile"] = container.command_from
        ingress_options = parse_options(options.ingress, options.ingress_options)
        if options.ingress != "builtin":
            replay_info["ingress"] = options.ingress
            replay_info["ingress_options"] = ", ".join(f"{key}={value}" for key, value in ingress_options.items())
            if options.link_delay:
                replay_info["link_delay"] = options.link_delay
        if options.load_bursts:
            replay_info["load"] = f"{options.load_bursts} bursts of {options.load_connections} POSTs"
        journal.write(Kind.RUN_START, scenario=scenario.to_dict(), port=port, replay=replay_info)
        findings = static_findings(pod, container)
        idle = upstream_idle_timeout(options.ingress, ingress_options)
        if idle is not None and (race := keepalive_below_proxy(container, options.ingress, idle)) is not None:
            findings.append(race)
        for finding in findings:
            journal.write(Kind.STATIC_FINDING, **dataclasses.asdict(finding))
        run.require_command(argv[0])
        started = await run.start_pod(argv, namespace=options.namespace)
        journaled = journaled_argv(argv, container.argv)
        journal.write(Kind.POD_STARTED, target=started.pid1, namespaced=started.namespaced, argv=journaled)
        tail = run.tail()
        if app:
            await waits.wait_ready(
                started.process, tail, port=port, workers=1, timeout=scenario.ready_timeout, log=run.log
            )
        else:
            await waits.wait_port(started.process, port=port, timeout=scenario.ready_timeout, log=run.log)
        journal.write(
            Kind.SERVER_READY,
            target=started.pid1,
            port=port,
            handles_stop_signal=handles_signal(started.pid1, stop_signal),
        )
        router: Router | Ingress
        if options.ingress == "builtin":
            router = await run.router(options, propagation)
        else:
            router = await open_ingress(
                run, options.ingress, ingress_options, propagation, link_delay=options.link_delay
            )
        router.add(pod.name, port)
        if isinstance(router, Ingress):
            await router.reloaded()  # the controller saw the pod ready: it is in the upstream set
        url = f"http://{target.HOST}:{router.port}"
        try:
            await _play(run, plan, started, tail, router, url, steady_path, stop_signal, propagation, port)
        finally:
            if isinstance(router, Ingress):
                await router.close()  # its logs into the journal, before the run closes it
    return run.events


async def _play(
    run: Run,
    plan: Replay,
    started: Pod,
    tail: JournalTail,
    router: Router | Ingress,
    url: str,
    steady_path: str,
    stop_signal: signal.Signals,
    propagation: float,
    port: int,
) -> None:
    """The load through the router, the deletion, the kubelet's termination, the load to the end."""
    pod, container, scenario, journal = plan.pod, plan.container, run.scenario, run.journal
    async with traffic.new_client(run.client_timeout) as client:
        stop_steady = asyncio.Event()
        steady = asyncio.create_task(steady_traffic(client, url, steady_path, journal, stop_steady, plan.options))
        loads = [steady]
        clients: dict[asyncio.Task[traffic.Outcome], str] = {}
        try:
            if plan.options.load_bursts:
                # The bursts end before the requests in flight start: those go out right after the
                # last burst's answers, on the connections it has just freed, far from their close.
                gap = burst_gap(container.argv, plan.options)
                loads.append(asyncio.create_task(burst_load(url, journal, stop_steady, plan.options, gap)))
                await asyncio.wait(loads[-1:], timeout=plan.options.load_bursts * (gap + 1) + BURST_SLACK_SECONDS)
            clients = traffic.start_traffic(client, url, scenario, journal)
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
            # The pod may be gone long before every router has heard of it: the steady load
            # goes on until the last one stops routing to it (bounded by the propagation).
            await router.removed(timeout=propagation + ROUTER_REMOVAL_SLACK)
            stop_steady.set()
            await run.settle([*loads, *clients])
        finally:
            stop_steady.set()
            await run.cancel([*loads, *clients])


def measured_drain(events: Sequence[Event]) -> float | None:
    """
    Seconds from the stop signal to the exit, when the app drained and exited by itself; None
    when the drain was cut short (SIGKILL, or the app killed with the namespace before its
    shutdown completed): a kill time is not a drain time.
    """
    signal_t = next((e.t for e in events if e.kind == Kind.SIGNAL_SENT), None)
    exit_event = next((e for e in events if e.kind == Kind.SERVER_EXITED), None)
    if signal_t is None or exit_event is None or exit_event.get("killed"):
        return None
    if cut_short(build(events)) is not None:
        return None
    return (exit_event.t - signal_t) / 1e9


def cut_short(timeline: Timeline) -> str | None:
    """
    Why the app's drain was cut short, root cause first, or None if it drained (or there is no
    app to judge). Read from the journal's order of events: the stop signal, each worker's
    lifespan shutdown, the exit and whether it was a SIGKILL.
    """
    if timeline.signal is None or timeline.exit is None:
        return None
    started = [w for w in timeline.workers.values() if w.startup_complete is not None]
    if not started:
        return None
    codes = {str(f.get("code")) for f in timeline.findings}
    sent = timeline.signals[0] if timeline.signals else None
    handled = sent.get("handled") if sent is not None else None
    comm = (sent.get("comm") if sent is not None else None) or "PID 1"
    began = [w for w in started if w.teardown is not None and w.teardown >= timeline.signal]
    done = [w for w in began if w.shutdown_complete is not None]
    if len(done) == len(started):
        return None
    if "shell-wrapper" in codes or (handled is False and comm in SHELL_NAMES):
        return (
            f"PID 1 is a shell ({comm}) that does not exec the server: it has no {timeline.signal_name} handler, so "
            "the signal never reached the app and it was SIGKILLed. Use the exec form (command: [uvicorn, ...] in the "
            'manifest or CMD ["uvicorn", ...] in the Dockerfile, or `exec uvicorn ...` in the script), then replay '
            "again to measure the drain"
        )
    if handled is False:
        return (
            f"PID 1 ({comm}) has no {timeline.signal_name} handler, so the kernel dropped the signal and the app was "
            "SIGKILLed: install a handler, or run the server under an init (`tini -- uvicorn ...`), then replay again"
        )
    if not began and not timeline.exit.get("killed"):
        return (
            f"{comm} exited {timeline.seconds(timeline.signal, timeline.exit.t):.3f}s after {timeline.signal_name} "
            "and the app was killed with the namespace before its shutdown began: an init in front of a shell that "
            "does not exec the server. Exec the server from the shell (`exec uvicorn ...`) or drop the shell "
            "([tini, --, uvicorn, ...]), then replay again to measure the drain"
        )
    if timeline.exit.get("killed"):
        return (
            "the app did not finish draining before SIGKILL: its drain is longer than the grace left; bound the "
            "server's own shutdown timeout first, then replay again to measure the drain"
        )
    return "the app's shutdown began but did not complete before the pod exited; replay again once it completes"


BURST_PATH = "/__drainspec/hold?seconds=0"  # the probe answers it for any app, any method
BURST_LEAD_SECONDS = 0.012  # how far before the pod's close a burst may land (`traffic.Bursts`)
BURST_MAX_GAP_SECONDS = 5.0
BURST_SLACK_SECONDS = 10.0


def burst_gap(argv: Sequence[str], options: K8sOptions) -> float:
    """
    The bursts' spacing: the server's idle keep-alive timeout, when the pod closes the pooled
    connections the last burst left idle. A proxy that drops idle connections first (its upstream
    idle timeout is shorter) never writes onto one the pod closed: the bursts then come at that
    timeout instead, to show it; and never more than 5 s apart, so that a server whose keep-alive
    outlasts the proxy's (the fix) is shown to pass in seconds, not minutes.
    """
    found = server_keepalive(argv)
    server = found[1] if found is not None else 5.0
    proxy = upstream_idle_timeout(options.ingress, parse_options(options.ingress, options.ingress_options))
    return min(server, proxy if proxy is not None else server, BURST_MAX_GAP_SECONDS)


def burst_load(
    url: str, journal: JournalWriter, stop: asyncio.Event, options: K8sOptions, gap: float
) -> Coroutine[Any, Any, Any]:
    """
    `--load-bursts N`: N bursts of POSTs, one per `--load-connections`, each aimed at the moment
    the pod closes the connections the last one left idle (`traffic.Bursts`); beside the steady load.
    """
    size = options.load_connections
    return traffic.paced_load(
        url,
        BURST_PATH,
        journal,
        stop,
        rate=0,
        connections=size,
        role="burst",
        method="POST",
        bursts=traffic.Bursts(size, gap, BURST_LEAD_SECONDS, options.seed),
        max_requests=options.load_bursts * size,
    )


def steady_traffic(
    client: httpx.AsyncClient, url: str, path: str, journal: JournalWriter, stop: asyncio.Event, options: K8sOptions
) -> Coroutine[Any, Any, Any]:
    """The load that runs through the router: paced keep-alive load at `--load-rate`, else one request per 50 ms."""
    if options.load_rate > 0:
        return traffic.paced_load(
            url,
            path,
            journal,
            stop,
            rate=options.load_rate,
            connections=options.load_connections,
            role="steady",
            resend_closed=options.ingress != "builtin",
        )
    return traffic.steady_load(client, url, path, journal, stop)
