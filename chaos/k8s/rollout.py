"""
A Deployment's rolling update, replayed: `replicas` pods behind the router, replaced one by one
as maxSurge / maxUnavailable allow, under a steady stream of new requests. The question is the
one a rollout is judged by in production: did any client request fail? (The verdict
`rollout-zero-failed-requests` answers it from the journal.)

Each pod is the container's command as PID 1 of its own PID namespace (as in a single-pod
replay). A new pod gets traffic only once its readiness probe (from the manifest) answers; an
old pod is deleted the kubelet's way (the router keeps routing for the propagation delay;
preStop, stop signal, SIGKILL at the deadline run at the same time), and the rollout goes on
without waiting for it to exit, as the Deployment controller does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import httpx

from chaos import target, traffic, waits
from chaos.errors import SetupError
from chaos.journal import Event, Kind
from chaos.k8s import kubelet
from chaos.k8s.ingress import Ingress, open_ingress, parse_options
from chaos.k8s.loopback import checked_paths, keep_loopback, pod_path, pod_url
from chaos.k8s.manifest import PodSpec, ProbeSpec, journaled_argv, resolve_fenceposts
from chaos.k8s.plan import Replay
from chaos.k8s.pod import Pod
from chaos.k8s.prestop import prestop_runner
from chaos.k8s.replay import steady_traffic
from chaos.k8s.router import Router
from chaos.lifecycle import Run, open_run
from chaos.runner import stop_signal_of

MAX_REPLICAS = 8
ROUTER_REMOVAL_SLACK = 2.0  # seconds past the propagation delay the rollout waits for the router
"""A local rolling update runs every replica as a real server on this machine: a bound on them."""


@dataclass(frozen=True)
class Strategy:
    """maxSurge and maxUnavailable resolved against the replica count, as the controller does."""

    replicas: int
    surge: int
    unavailable: int

    @classmethod
    def of(cls, pod: PodSpec) -> Strategy:
        """The counts the controller works with (`manifest.resolve_fenceposts`)."""
        if pod.replicas < 1:
            raise SetupError("a rollout needs replicas >= 1")
        if pod.replicas > MAX_REPLICAS:
            raise SetupError(
                f"spec.replicas is {pod.replicas}: a local rollout runs every pod on this machine, at most "
                f"{MAX_REPLICAS}; replay a copy of the manifest with fewer replicas (the verdict does not depend on it)"
            )
        if _is_zero(pod.max_surge) and _is_zero(pod.max_unavailable):
            raise SetupError("maxSurge and maxUnavailable are both 0: Kubernetes rejects such a Deployment")
        surge, unavailable = resolve_fenceposts(pod.max_surge, pod.max_unavailable, pod.replicas)
        return cls(pod.replicas, surge, unavailable)


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


@dataclass
class Replica:
    name: str
    pod: Pod
    port: int


class _Rollout:
    """The controller's side of one rolling update: launching new pods, deleting old ones."""

    def __init__(self, run: Run, plan: Replay, stop_signal: signal.Signals) -> None:
        self.run, self.plan = run, plan
        self.pod, self.container, self.options = plan.pod, plan.container, plan.options
        self.stop_signal = stop_signal
        self.router: Router | Ingress | None = None
        self.terminations: list[asyncio.Task[kubelet.Termination]] = []
        self._numbers = count(1)

    async def launch(self, generation: str) -> Replica:
        port = target.free_port()
        argv, _ = self.plan.localized(port)
        argv = keep_loopback(argv)
        self.run.require_command(argv[0])
        name = f"{self.pod.name}-{generation}{next(self._numbers)}"
        log = self.run.run_dir / f"{name}.log"
        started = await self.run.start_pod(argv, log=log, namespace=self.options.namespace)
        replica = Replica(name, started, port)
        self.run.journal.write(
            Kind.POD_STARTED,
            target=started.pid1,
            namespaced=started.namespaced,
            argv=journaled_argv(argv, self.container.argv),
            pod=name,
        )
        await _wait_ready(replica, self.container.readiness, self.run.scenario.ready_timeout, log)
        self.run.journal.write(Kind.SERVER_READY, target=started.pid1, port=port, pod=name)
        assert self.router is not None
        self.router.add(name, port)
        if isinstance(self.router, Ingress):
            await self.router.reloaded()  # the controller put the ready pod in the upstream set
        return replica

    def delete(self, replica: Replica) -> None:
        """The kubelet's termination of one pod, left running while the rollout goes on."""
        journal = self.run.journal
        journal.write(Kind.POD_DELETED, grace=self.pod.grace, pod=replica.name)
        assert self.router is not None
        self.router.terminate(replica.name)
        prestop = prestop_runner(self.container, replica.pod, replica.port, journal, self.run.helper_started)
        termination = kubelet.terminate(
            replica.pod.process,
            stop_signal=self.stop_signal,
            grace=self.pod.grace,
            journal=journal,
            main_pid=replica.pod.pid1,
            prestop=prestop,
        )
        self.terminations.append(asyncio.create_task(termination))

    async def replace_all(self, strategy: Strategy, old: list[Replica]) -> None:
        new: list[Replica] = []
        while old:
            # Surge first: new pods up to replicas + maxSurge (terminating pods do not count).
            while strategy.surge and old and len(old) + len(new) < strategy.replicas + strategy.surge:
                new.append(await self.launch("new"))
            # Then delete old pods while at least replicas - maxUnavailable stay available.
            while old and len(old) - 1 + len(new) >= strategy.replicas - strategy.unavailable:
                self.delete(old.pop(0))
            if old and not strategy.surge:
                new.append(await self.launch("new"))
        while len(new) < strategy.replicas:
            new.append(await self.launch("new"))


def rollout(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    """Replay a rolling update of every replica under steady load; returns the journal's events."""
    return asyncio.run(_rollout(plan, run_dir))


async def _rollout(plan: Replay, run_dir: str | os.PathLike[str]) -> list[Event]:
    pod, options = plan.pod, plan.options
    strategy = Strategy.of(pod)
    steady_path = checked_paths(plan)
    _, app = plan.localized(0)
    # The steady load is the rollout's traffic: no slow requests held inside one pod.
    scenario = plan.scenario(app)
    scenario = dataclasses.replace(scenario, requests=0, background=0)
    stop_signal = stop_signal_of(scenario.signal, where="lifecycle.stopSignal")
    propagation = options.pick_propagation()
    async with open_run(scenario, run_dir, cwd=plan.workdir) as run:
        rollout_info = {
            "pod": pod.name,
            "replicas": strategy.replicas,
            "max_surge": strategy.surge,
            "max_unavailable": strategy.unavailable,
            "propagation": propagation,
        }
        ingress_options = parse_options(options.ingress, options.ingress_options)
        if options.ingress != "builtin":
            rollout_info["ingress"] = options.ingress
            rollout_info["ingress_options"] = ", ".join(f"{key}={value}" for key, value in ingress_options.items())
        run.journal.write(Kind.RUN_START, scenario=scenario.to_dict(), rollout=rollout_info)
        controller = _Rollout(run, plan, stop_signal)
        if options.ingress == "builtin":
            controller.router = await run.router(options, propagation)
        else:
            controller.router = await open_ingress(
                run, options.ingress, ingress_options, propagation, link_delay=options.link_delay
            )
        old = [await controller.launch("old") for _ in range(strategy.replicas)]
        url = f"http://{target.HOST}:{controller.router.port}"
        async with traffic.new_client(run.client_timeout) as client:
            stop = asyncio.Event()
            steady = asyncio.create_task(steady_traffic(client, url, steady_path, run.journal, stop, options))
            try:
                await controller.replace_all(strategy, old)
                await run.settle(controller.terminations)
                # Until the last router stops routing to the last deleted pod, whether or not it exited.
                await controller.router.removed(timeout=propagation + ROUTER_REMOVAL_SLACK)
                stop.set()
                await run.settle([steady])
            finally:
                stop.set()
                await run.cancel([steady, *controller.terminations])
                if isinstance(controller.router, Ingress):
                    await controller.router.close()  # its logs into the journal, before the run closes it
    return run.events


async def _wait_ready(replica: Replica, probe: ProbeSpec | None, timeout: float, log: Path) -> None:
    """
    The port, then the manifest's readiness probe until it answers 2xx/3xx. (Not the journal:
    every pod's probe runs as PID 1 of its own namespace, so journal pids do not tell pods apart.)
    """
    await waits.wait_port(replica.pod.process, port=replica.port, timeout=timeout, log=log)
    if probe is None or probe.path is None:
        return
    url = pod_url(replica.port, pod_path(probe.path, where="readinessProbe.httpGet.path"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=probe.timeout, trust_env=False) as client:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(url)
                if 200 <= response.status_code < 400:
                    return
            if loop.time() > deadline:
                raise SetupError(f"{replica.name} never passed its readiness probe {probe.path}; see {log}")
            await asyncio.sleep(min(probe.period, 0.1))  # the probe's period, shortened for a replay
