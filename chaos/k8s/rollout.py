"""
A Deployment's rolling update, replayed: `replicas` pods behind the router, replaced one by one
as maxSurge / maxUnavailable allow, under a steady stream of new requests. The question is the
one a rollout is judged by in production: did any client request fail?

Each pod is the container's command as PID 1 of its own PID namespace (as in `chaos.k8s.replay`). A
new pod gets traffic only once its readiness probe (from the manifest) answers; an old pod is
deleted the kubelet's way (the router keeps routing for the propagation delay; preStop, stop
signal, SIGKILL at the deadline run at the same time), and the rollout goes on without waiting
for it to exit, as the Deployment controller does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from chaos import target, traffic
from chaos.errors import SetupError
from chaos.journal import Event, JournalWriter, Kind, read_journal
from chaos.k8s import kubelet
from chaos.k8s.manifest import ContainerSpec, PodSpec, ProbeSpec, localize
from chaos.k8s.pod import Pod, start_pod
from chaos.k8s.replay import ReplayOptions, prestop_runner, steady_load, steady_path_of
from chaos.k8s.router import Router
from chaos.runner import JOURNAL_FILE, prepare_run_dir, server_environment
from chaos.scenario import Scenario


@dataclass(frozen=True)
class Strategy:
    """maxSurge and maxUnavailable resolved against the replica count, as the controller does."""

    replicas: int
    surge: int
    unavailable: int

    @classmethod
    def of(cls, pod: PodSpec) -> Strategy:
        surge = _resolve(pod.max_surge, pod.replicas, round_up=True)
        unavailable = _resolve(pod.max_unavailable, pod.replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            raise SetupError("maxSurge and maxUnavailable are both 0: Kubernetes rejects such a Deployment")
        if pod.replicas < 1:
            raise SetupError("a rollout needs replicas >= 1")
        return cls(pod.replicas, surge, unavailable)


def _resolve(value: int | str, replicas: int, *, round_up: bool) -> int:
    """A count or a percentage of the replicas (surge rounds up, unavailable down)."""
    if isinstance(value, int):
        return value
    fraction = int(value.rstrip("%")) / 100 * replicas
    return math.ceil(fraction) if round_up else math.floor(fraction)


@dataclass
class Replica:
    name: str
    pod: Pod
    port: int
    log: Path


@dataclass(frozen=True)
class RolloutResult:
    events: list[Event]
    requests: int
    failures: list[Event] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.requests > 0 and not self.failures

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.failures:
            outcome = str(event.get("outcome"))
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def timeline(self) -> list[str]:
        """The pods' lifecycle and every failed request, in seconds from the first pod's start."""
        start = next((e.t for e in self.events if e.kind == Kind.POD_STARTED), None)
        if start is None:
            return []
        lines = []
        for event in self.events:
            text = _describe(event)
            if text is not None:
                lines.append(f"{(event.t - start) / 1e9:+8.3f}s  {text}")
        return lines


def _describe(event: Event) -> str | None:
    kind = event.kind
    if kind == Kind.POD_STARTED:
        return f"pod {event.get('pod')} started"
    if kind == Kind.SERVER_READY:
        return f"pod {event.get('pod')} ready: routed"
    if kind == Kind.POD_DELETED:
        return f"pod {event.get('pod')} deleted"
    if kind == Kind.ROUTER_REMOVED:
        return f"router stopped routing to {event.get('endpoint')}"
    if kind == Kind.SERVER_EXITED:
        return f"a deleted pod exited with code {event.get('exit_code')}"
    if kind == Kind.CLIENT_REQUEST and event.get("role") == "steady" and event.get("outcome") != "ok":
        return f"client {event.get('id')} {event.get('path')}: {event.get('outcome')}"
    return None


def write_junit_rollout(path: Path, result: RolloutResult) -> None:
    """One testcase, `rollout-zero-failed-requests`, for CI systems."""
    root = ET.Element("testsuite", name="drainspec", tests="1", failures=str(int(not result.passed)))
    case = ET.SubElement(root, "testcase", classname="drainspec", name="rollout-zero-failed-requests")
    if not result.passed:
        failure = ET.SubElement(case, "failure", message=f"{len(result.failures)} of {result.requests} requests failed")
        failure.text = "\n".join(f"{e.get('id')} {e.get('path')}: {e.get('outcome')}" for e in result.failures)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def rollout(pod: PodSpec, container: ContainerSpec, options: ReplayOptions, run_dir: Path) -> RolloutResult:
    events = asyncio.run(_rollout(pod, container, options, prepare_run_dir(run_dir)))
    steady = [e for e in events if e.kind == Kind.CLIENT_REQUEST and e.get("role") == "steady"]
    return RolloutResult(events, len(steady), [e for e in steady if e.get("outcome") != "ok"])


async def _rollout(pod: PodSpec, container: ContainerSpec, options: ReplayOptions, run_dir: Path) -> list[Event]:
    strategy = Strategy.of(pod)
    stop_signal = kubelet.parse_signal(container.stop_signal or "TERM")
    propagation = options.pick_propagation()
    journal_path = run_dir / JOURNAL_FILE
    journal = JournalWriter(journal_path)
    _, app = localize(container.argv, port=0, container_ports=container.ports)
    scenario = Scenario(app=app or "", server="k8s", requests=0, background=0, grace=pod.grace, env=container.env)
    journal.write(
        Kind.RUN_START,
        scenario=scenario.to_dict(),
        rollout={
            "pod": pod.name,
            "replicas": strategy.replicas,
            "max_surge": strategy.surge,
            "max_unavailable": strategy.unavailable,
            "propagation": propagation,
        },
    )
    env = server_environment(scenario, run_dir, journal_path)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    if not app:
        env.pop("DRAINSPEC_APP", None)
    router = Router(journal, propagation=propagation, seed=options.seed)
    started: list[Replica] = []
    terminations: list[asyncio.Task[kubelet.Termination]] = []
    helpers: list[asyncio.subprocess.Process] = []
    counter = iter(range(1, 1000))

    async def launch(generation: str) -> Replica:
        port = target.free_port()
        argv, _ = localize(container.argv, port=port, container_ports=container.ports)
        if shutil.which(argv[0], path=env["PATH"]) is None:
            raise SetupError(f"{argv[0]!r}, the container's command, was not found here; install it or put it on PATH")
        name = f"{pod.name}-{generation}{next(counter)}"
        log = run_dir / f"{name}.log"
        replica = Replica(
            name, await start_pod(argv, env=env, cwd=os.getcwd(), log=log, namespace=options.namespace), port, log
        )
        started.append(replica)
        journal.write(Kind.POD_STARTED, target=replica.pod.pid1, namespaced=replica.pod.namespaced, argv=argv, pod=name)
        await _wait_ready(replica, container.readiness, options.ready_timeout)
        journal.write(Kind.SERVER_READY, target=replica.pod.pid1, port=port, pod=name)
        router.add(name, port)
        return replica

    def delete(replica: Replica) -> None:
        journal.write(Kind.POD_DELETED, grace=pod.grace, pod=replica.name)
        router.terminate(replica.name)
        prestop = prestop_runner(container, replica.pod, replica.port, journal, helpers)
        terminations.append(
            asyncio.create_task(
                kubelet.terminate(
                    replica.pod.process,
                    stop_signal=stop_signal,
                    grace=pod.grace,
                    journal=journal,
                    main_pid=replica.pod.pid1,
                    prestop=prestop,
                )
            )
        )

    try:
        old = [await launch("old") for _ in range(strategy.replicas)]
        url = f"http://{target.HOST}:{await router.start()}"
        async with traffic.new_client(pod.grace + 10) as client:
            stop = asyncio.Event()
            steady = asyncio.create_task(
                steady_load(client, url, options.steady_path or steady_path_of(container), journal, stop)
            )
            try:
                new: list[Replica] = []
                while old:
                    # Surge first: new pods up to replicas + maxSurge (terminating pods do not count).
                    while strategy.surge and old and len(old) + len(new) < strategy.replicas + strategy.surge:
                        new.append(await launch("new"))
                    # Then delete old pods while at least replicas - maxUnavailable stay available.
                    while old and len(old) - 1 + len(new) >= strategy.replicas - strategy.unavailable:
                        delete(old.pop(0))
                    if old and not strategy.surge:
                        new.append(await launch("new"))
                while len(new) < strategy.replicas:
                    new.append(await launch("new"))
                await asyncio.wait(terminations, timeout=pod.grace + 10)
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(steady, 15)
                steady.cancel()
    finally:
        for task in terminations:
            task.cancel()
        await asyncio.gather(*terminations, return_exceptions=True)
        await router.close()
        for helper in helpers:
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
        for replica in started:
            target.reap(replica.pod.process)
    journal.close()
    return read_journal(journal_path)


async def _wait_ready(replica: Replica, probe: ProbeSpec | None, timeout: float) -> None:
    """
    The port, then the manifest's readiness probe until it answers 2xx/3xx. (Not the journal:
    every pod's probe runs as PID 1 of its own namespace, so journal pids do not tell pods apart.)
    """
    await target.wait_port(replica.pod.process, port=replica.port, timeout=timeout, log=replica.log)
    if probe is None or probe.path is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=probe.timeout, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"http://{target.HOST}:{replica.port}{probe.path}")
                if 200 <= response.status_code < 400:
                    return
            if loop.time() > deadline:
                raise SetupError(f"{replica.name} never passed its readiness probe {probe.path}; see {replica.log}")
            await asyncio.sleep(min(probe.period, 0.1))  # the probe's period, shortened for a replay
