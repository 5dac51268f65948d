"""
Replay a Deployment's termination locally, as the kubelet and the Service would run it:

    container command as PID 1 of a new PID namespace, behind a router (the Service)
    slow requests in flight, plus a steady stream of new requests through the router
    deletion at t0:  the router keeps routing to the pod for `propagation` seconds   (track 1)
                     preStop -> stop signal to PID 1 -> SIGKILL at the deadline      (track 2)

Everything is journaled like a plain run, plus the manifest's static findings, so the same
verdicts judge it and `drainspec report` can rebuild it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from chaos import target, traffic
from chaos.errors import SetupError
from chaos.journal import Event, JournalTail, JournalWriter, Kind, read_journal
from chaos.k8s import kubelet
from chaos.k8s.manifest import (
    ContainerSpec,
    ExecHook,
    HttpGetHook,
    PodSpec,
    SleepHook,
    localize,
    static_findings,
)
from chaos.k8s.pod import Pod, handles_signal, start_pod
from chaos.k8s.router import Router
from chaos.runner import (
    JOURNAL_FILE,
    SERVER_LOG,
    _start_traffic,
    _wait_in_flight,
    prepare_run_dir,
    server_environment,
)
from chaos.scenario import Scenario

STEADY_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True)
class ReplayOptions:
    """What the manifest does not say: how slow the routers are, and what traffic to send."""

    propagation: tuple[float, float] = (1.0, 1.0)
    seed: int | None = None
    requests: int = 2
    request_seconds: float = 1.0
    request_path: str = "GET /__drainspec/hold?seconds={seconds}"
    background: int = 0
    background_seconds: float = 1.0
    background_path: str = "GET /__drainspec/background?seconds={seconds}"
    steady_path: str | None = None
    ready_timeout: float = 20.0
    namespace: bool = True
    latency: float = 0.0
    reset_rate: float = 0.0

    def pick_propagation(self) -> float:
        low, high = self.propagation
        if low == high:
            return low
        return round(random.Random(self.seed).uniform(low, high), 3)


def parse_range(text: str) -> tuple[float, float]:
    """`1.5` or `0.5..3` (seconds; an optional trailing `s`) to a (low, high) pair."""
    cleaned = text.strip().rstrip("s")
    low_text, sep, high_text = cleaned.partition("..")
    try:
        low = float(low_text)
        high = float(high_text.rstrip("s")) if sep else low
    except ValueError:
        raise SetupError(f"--propagation {text!r} must be seconds, like 1.5 or 0.5..3") from None
    if low < 0 or high < low:
        raise SetupError(f"--propagation {text!r} must be a non-negative range, low..high")
    return low, high


def replay(pod: PodSpec, container: ContainerSpec, options: ReplayOptions, run_dir: Path) -> list[Event]:
    return asyncio.run(_replay(pod, container, options, prepare_run_dir(run_dir)))


async def _replay(pod: PodSpec, container: ContainerSpec, options: ReplayOptions, run_dir: Path) -> list[Event]:
    port = target.free_port()
    argv, app = localize(container.argv, port=port, container_ports=container.ports)
    try:
        stop_signal = kubelet.parse_signal(container.stop_signal or "TERM")
    except ValueError as exc:
        raise SetupError(f"lifecycle.stopSignal: {exc}") from None
    propagation = options.pick_propagation()
    scenario = Scenario(
        app=app or "",
        server="k8s",
        command=shlex.join(argv),
        requests=options.requests if app else 0,
        request_seconds=options.request_seconds,
        request_path=options.request_path,
        background=options.background if app else 0,
        background_seconds=options.background_seconds,
        background_path=options.background_path,
        signal=stop_signal.name.removeprefix("SIG"),
        grace=pod.grace,
        ready_timeout=options.ready_timeout,
        env=container.env,
    )
    journal_path = run_dir / JOURNAL_FILE
    log = run_dir / SERVER_LOG
    journal = JournalWriter(journal_path)
    journal.write(
        Kind.RUN_START,
        scenario=scenario.to_dict(),
        port=port,
        replay={
            "pod": pod.name,
            "container": container.name,
            "propagation": propagation,
            "seed": options.seed,
            "prestop": _describe_hook(container),
        },
    )
    for finding in static_findings(pod, container):
        journal.write(Kind.STATIC_FINDING, **dataclasses.asdict(finding))
    env = server_environment(scenario, run_dir, journal_path)
    if not app:
        env.pop("DRAINSPEC_APP", None)
    # Tools installed beside drainspec (uvicorn, dumb-init, ...) are what the image would hold.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    if shutil.which(argv[0], path=env["PATH"]) is None:
        raise SetupError(f"{argv[0]!r}, the container's command, was not found here; install it or put it on PATH")
    started = await start_pod(argv, env=env, cwd=os.getcwd(), log=log, namespace=options.namespace)
    helpers: list[asyncio.subprocess.Process] = []
    router = Router(
        journal, propagation=propagation, latency=options.latency, reset_rate=options.reset_rate, seed=options.seed
    )
    try:
        journal.write(Kind.POD_STARTED, target=started.pid1, namespaced=started.namespaced, argv=argv)
        tail = JournalTail(journal_path)
        if app:
            await target.wait_ready(started.process, tail, port=port, workers=1, timeout=options.ready_timeout, log=log)
        else:
            await target.wait_port(started.process, port=port, timeout=options.ready_timeout, log=log)
        journal.write(
            Kind.SERVER_READY,
            target=started.pid1,
            port=port,
            handles_stop_signal=handles_signal(started.pid1, stop_signal),
        )
        router.add(pod.name, port)
        url = f"http://{target.HOST}:{await router.start()}"
        timeout = pod.grace + max(options.request_seconds, 1.0) + 5
        async with traffic.new_client(timeout) as client:
            clients = _start_traffic(client, url, scenario, journal)
            stop_steady = asyncio.Event()
            steady_path = options.steady_path or steady_path_of(container)
            steady = asyncio.create_task(steady_load(client, url, steady_path, journal, stop_steady))
            try:
                if clients:
                    await _wait_in_flight(tail, clients, scenario, started.process)
                journal.write(Kind.POD_DELETED, grace=pod.grace)
                router.terminate(pod.name)
                prestop = prestop_runner(container, started, port, journal, helpers)
                await kubelet.terminate(
                    started.process,
                    stop_signal=stop_signal,
                    grace=pod.grace,
                    journal=journal,
                    main_pid=started.pid1,
                    prestop=prestop,
                )
                stop_steady.set()
                await asyncio.wait([steady, *clients], timeout=timeout)
            finally:
                stop_steady.set()
                for task in (steady, *clients):
                    task.cancel()
                await asyncio.gather(steady, *clients, return_exceptions=True)
    finally:
        await router.close()
        for helper in helpers:
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(helper.wait(), 5)
        target.reap(started.process)
    journal.close()
    return read_journal(journal_path)


def steady_path_of(container: ContainerSpec) -> str:
    if container.readiness is not None and container.readiness.path:
        return container.readiness.path
    return "/"


async def steady_load(
    client: httpx.AsyncClient, url: str, path: str, journal: JournalWriter, stop: asyncio.Event
) -> None:
    """New requests through the router every 50 ms until the pod is gone; bounded in count."""
    spec = traffic.RequestSpec("GET", path)
    tasks: list[asyncio.Task[traffic.Outcome]] = []
    try:
        for n in range(1, 2001):
            tasks.append(asyncio.create_task(traffic.perform(client, url, spec, f"s{n}", journal, role="steady")))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STEADY_INTERVAL_SECONDS)
            if stop.is_set():
                break
        await asyncio.wait(tasks, timeout=10) if tasks else None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _describe_hook(container: ContainerSpec) -> str | None:
    hook = container.prestop
    if isinstance(hook, SleepHook):
        return f"sleep {hook.seconds:g}s"
    if isinstance(hook, HttpGetHook):
        return f"httpGet {hook.path}"
    if isinstance(hook, ExecHook):
        return "exec " + shlex.join(hook.command)
    return None


def prestop_runner(
    container: ContainerSpec, pod: Pod, port: int, journal: JournalWriter, helpers: list[asyncio.subprocess.Process]
) -> kubelet.PreStop | None:
    hook = container.prestop
    if hook is None:
        return None

    async def run(limit: float) -> str:
        if isinstance(hook, SleepHook):
            await asyncio.sleep(hook.seconds)
            return f"slept {hook.seconds:g}s"
        if isinstance(hook, HttpGetHook):
            # The kubelet's own request, straight to the pod (not through the Service): journaled
            # as a client of its own role, so the verdicts know who sent it.
            async with traffic.new_client(limit) as client:
                spec = traffic.RequestSpec("GET", hook.path)
                url = f"http://{target.HOST}:{port}"
                outcome = await traffic.perform(client, url, spec, "prestop", journal, role="kubelet")
            if outcome != traffic.Outcome.OK:
                raise RuntimeError(f"GET {hook.path}: {outcome.value}")
            return f"GET {hook.path}: {outcome.value}"
        return await _exec_in_pod(hook.command, pod, helpers)

    return run


async def _exec_in_pod(command: Sequence[str], pod: Pod, helpers: list[asyncio.subprocess.Process]) -> str:
    """
    Run an exec hook inside the pod's namespaces, as the runtime does. Outside a namespace it
    is refused: `kill 1` must never reach this machine's own init.
    """
    if not pod.namespaced:
        raise RuntimeError("exec hooks run only inside a PID namespace, and none is available here")
    argv = ["nsenter", "--target", str(pod.pid1), "--pid", "--mount", "--", *command]
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    helpers.append(process)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        reason = stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"`{shlex.join(command)}` exited with code {process.returncode}" + (f": {reason[-1]}" if reason else "")
        )
    return f"`{shlex.join(command)}` exited 0"


def measured_drain(events: Sequence[Event]) -> float | None:
    """Seconds from the stop signal to the exit, when the process exited by itself."""
    signal_t = next((e.t for e in events if e.kind == Kind.SIGNAL_SENT), None)
    exit_event = next((e for e in events if e.kind == Kind.SERVER_EXITED), None)
    if signal_t is None or exit_event is None or exit_event.get("killed"):
        return None
    return (exit_event.t - signal_t) / 1e9


def replay_info(events: Sequence[Event]) -> dict[str, Any]:
    start = next((e for e in events if e.kind == Kind.RUN_START), None)
    info = start.get("replay") if start else None
    return dict(info) if isinstance(info, dict) else {}
