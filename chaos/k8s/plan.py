"""
What a replay runs (`Replay`): the manifest's pod and container, the user's traffic, and the
options only a replay has. Shared by the single-pod replay and the rolling update, which are
siblings, not a chain.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from chaos.k8s.manifest import ContainerSpec, PodSpec, localize, pod_env
from chaos.scenario import K8sOptions, Scenario

REPLAY_TRAFFIC = Scenario(app="", requests=2, background=0)
"""The traffic of a replay unless the user says otherwise: two slow requests, no background."""


@dataclass(frozen=True)
class Replay:
    """
    One replay of a manifest, whole: the pod, the container, the user's traffic and the options
    only a replay has. It flows unchanged through a single-pod replay or a rolling update.
    """

    pod: PodSpec
    container: ContainerSpec
    traffic: Scenario = REPLAY_TRAFFIC
    options: K8sOptions = field(default_factory=K8sOptions)
    # Where the container's command runs: the image's WORKDIR laid out from its Dockerfile
    # (`chaos.k8s.image.assemble_workdir`) when it rearranges the checkout; else where drainspec runs.
    workdir: Path | None = None

    def localized(self, port: int) -> tuple[list[str], str | None]:
        """The container's command made to run here on `port`, and its app (`chaos.k8s.manifest.localize`)."""
        container = self.container
        return localize(container.argv, port=port, container_ports=container.ports, env=pod_env(container))

    def scenario(self, app: str | None) -> Scenario:
        """
        The scenario of one pod: the user's traffic, and what the manifest says about the rest
        (its command as written, stop signal, grace, environment; the replay runs the command made
        local, `chaos.k8s.manifest.localize`). Without an app import string in the command,
        nothing can be put in flight inside the app.
        """
        return dataclasses.replace(
            self.traffic,
            app=app or "",
            server="k8s",
            command=shlex.join(self.container.argv),  # what the manifest says; the replay runs `argv`
            server_args=(),
            workers=1,
            requests=self.traffic.requests if app else 0,
            background=self.traffic.background if app else 0,
            signal=self.container.signal,
            grace=self.pod.grace,
            env=self.container.env,
        )

    @property
    def steady_path(self) -> str:
        """Where the steady new requests go: the user's path, else the readiness probe's, else `/`."""
        if self.options.steady_path:
            return self.options.steady_path
        readiness = self.container.readiness
        if readiness is not None and readiness.path:
            return readiness.path
        return "/"
