"""
The misconfigurations a manifest shows before anything runs, as a table of small checks.

Each check reads the `Facts` of one container (worked out once) and returns a `Hit` or nothing;
`RULES` registers each check with its code and its row in the research table of
misconfigurations, in one place, so that a number is never repeated or mistyped inside a check
and a new misconfiguration is one function plus one row. `static_findings` runs the table.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from chaos.k8s.manifest import (
    JITTER,
    MARGIN,
    SHELLS,
    Command,
    ContainerSpec,
    DrainBound,
    ExecHook,
    Hook,
    HttpGetHook,
    PodSpec,
    analyse,
    command_words,
    number_or_none,
    option_value,
    own_script_in,
    prestop_seconds,
    resolve_fenceposts,
    server_timeout,
    shlex_words,
)
from chaos.scenario import parse_signal
from chaos.servers import SERVERS, runs_fastapi_cli

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[Severity, int] = {"error": 0, "warning": 1, "info": 2}

# Seconds the kubelet always leaves between a preStop hook that used up the grace period and
# SIGKILL (its minimum grace).
KUBELET_MINIMUM_GRACE = 2
# A drain allowance for suggesting a grace period when the manifest says nothing of the drain.
SUGGESTED_DRAIN = 10


@dataclass(frozen=True)
class Finding:
    """One misconfiguration; `number` is its row in the research table of misconfigurations."""

    code: str
    number: int
    severity: Severity
    message: str
    recommendation: str


@dataclass(frozen=True)
class Facts:
    """What the checks read about one container, worked out once."""

    pod: PodSpec
    container: ContainerSpec
    command: Command
    delay: float | None  # how long preStop delays the stop signal, when that can be read
    propagation: float | None  # how long routers may keep sending new connections, when known
    drain: DrainBound | None  # the server and its own bound on the drain
    script: str | None  # the app's own script, when it starts its server itself
    fastapi_cli: bool  # that script is the FastAPI CLI's (`fastapi run`)

    @classmethod
    def of(cls, pod: PodSpec, container: ContainerSpec, propagation: float | None) -> Facts:
        command = analyse(container.argv)
        words = shlex_words(command.script) if command.script is not None else container.argv
        return cls(
            pod=pod,
            container=container,
            command=command,
            delay=prestop_seconds(container.prestop),
            propagation=propagation,
            drain=server_timeout(container.argv, container.env),
            script=own_script_in(container.argv),
            fastapi_cli=runs_fastapi_cli(words),
        )

    @property
    def grace(self) -> float:
        return self.pod.grace

    @property
    def hook(self) -> Hook | None:
        return self.container.prestop

    @property
    def whole_delay(self) -> int:
        """The preStop delay in whole seconds, 0 without one: what the budget arithmetic adds."""
        return math.ceil(self.delay or 0)


@dataclass(frozen=True)
class Hit:
    """What a check found: the rule it belongs to supplies the code and the number."""

    severity: Severity
    message: str
    recommendation: str


Check = Callable[[Facts], Hit | None]


@dataclass(frozen=True)
class Rule:
    """One row of the research table, checked by `check`."""

    code: str
    number: int
    check: Check

    def apply(self, facts: Facts) -> Finding | None:
        hit = self.check(facts)
        if hit is None:
            return None
        return Finding(self.code, self.number, hit.severity, hit.message, hit.recommendation)


# -- the checks ----------------------------------------------------------------------------------


def _shell_without_exec(facts: Facts) -> bool:
    return facts.command.shell is not None and not facts.command.app_execs


def init_before_shell(facts: Facts) -> Hit | None:
    command = facts.command
    if not _shell_without_exec(facts) or command.init is None:
        return None
    return Hit(
        "error",
        f"{command.init} runs `{command.shell} -c` without exec: at the stop signal the shell dies, "
        f"{command.init} exits and the kernel SIGKILLs the app with its requests in flight",
        f"make the script end in `exec {command.server or 'your-server'} ...`, or drop the shell",
    )


def shell_wrapper(facts: Facts) -> Hit | None:
    if not _shell_without_exec(facts) or facts.command.init is not None:
        return None  # with an init in front, init-before-shell says it
    command = facts.command
    if command.script is None and command.script_file is not None:
        return Hit(
            "warning",
            f"PID 1 is `{command.shell}` running {command.script_file}, which is not here to read: unless it "
            "ends by exec-ing the app, the stop signal never reaches the app and every termination waits the full "
            "grace period",
            f"end {command.script_file} with `exec` (exec uvicorn ...), or run drainspec where the image's files "
            "are, so that the replay reads and runs it",
        )
    return Hit(
        "error",
        f"PID 1 is `{facts.command.shell}`, which has no SIGTERM handler and does not exec the app: "
        "the stop signal never reaches it and every termination waits the full grace period",
        _exec_form_advice(facts),
    )


def _exec_form_advice(facts: Facts) -> str:
    """Where the exec form goes: the Dockerfile's CMD, when the command came from it, or `command:`."""
    words = _server_words(facts)
    listed = ", ".join(words)
    if facts.container.command_from is not None:
        quoted = ", ".join(f'"{word}"' for word in words)
        return (
            f"use the exec form in {facts.container.command_from} (CMD [{quoted}, ...]), or set "
            f"command: [{listed}, ...] in the manifest, or end the script with `exec`"
        )
    return f"use the exec form (command: [{listed}, ...]) or end the script with `exec`"


def _server_words(facts: Facts) -> tuple[str, ...]:
    """The server's command as the exec form would start it: `fastapi run` for the FastAPI CLI."""
    return ("fastapi", "run") if facts.fastapi_cli else (facts.command.server or "uvicorn",)


def no_prestop(facts: Facts) -> Hit | None:
    if facts.hook is not None:
        return None
    server = facts.command.server
    return Hit(
        # A known server stops accepting at once; an unknown app may keep accepting for a while.
        "error" if server is not None else "warning",
        "no preStop delay: the stop signal arrives while routers still send new connections, "
        f"{server or 'the server'} stops accepting at once and those connections are refused",
        "add lifecycle.preStop.sleep.seconds at least as long as the slowest router's propagation (5-15 s in-cluster)",
    )


def prestop_exceeds_grace(facts: Facts) -> Hit | None:
    delay, grace = facts.delay, facts.grace
    if delay is None or delay < grace:
        return None
    return Hit(
        "error",
        f"preStop waits {delay:g}s but terminationGracePeriodSeconds is {grace:g}s: the app gets only "
        f"the {KUBELET_MINIMUM_GRACE} s minimum between the stop signal and SIGKILL",
        "set terminationGracePeriodSeconds to at least preStop + drain + margin, "
        f"e.g. {facts.whole_delay + SUGGESTED_DRAIN + MARGIN}",
    )


def prestop_triggers_shutdown(facts: Facts) -> Hit | None:
    """A hook that stops the app: certain for a kill in an exec hook, a guess from an HTTP path."""
    hook = facts.hook
    advice = "make preStop only wait (sleep action); let the kubelet's stop signal start the drain"
    if isinstance(hook, ExecHook) and _triggers_shutdown(hook.command):
        return Hit(
            "error",
            f"the preStop hook `{shlex.join(hook.command)}` stops the app instead of waiting: "
            "it stops accepting while routers still send new connections",
            advice,
        )
    if isinstance(hook, HttpGetHook) and re.search(r"shutdown|stop|quit|kill", hook.path):
        return Hit(
            "warning", f"the preStop hook GET {hook.path} looks like it starts shutdown instead of waiting", advice
        )
    return None


def _triggers_shutdown(command: Sequence[str]) -> bool:
    words = list(command)
    if words and Path(words[0]).name in SHELLS and len(words) >= 3:
        words = shlex_words(words[-1])
    names = {Path(w).name for w in words}
    return bool(names & {"kill", "pkill", "killall"}) or ("-s" in words and "quit" in words)


def exec_sleep_prestop(facts: Facts) -> Hit | None:
    """An exec `sleep` needs the binary in the image; the sleep action does not."""
    hook = facts.hook
    if not isinstance(hook, ExecHook) or facts.delay is None:
        return None
    command = shlex.join(hook.command)
    problem = f"preStop runs `{command}`, which fails at once in an image without that binary (distroless)"
    fix = f"use the sleep action: lifecycle.preStop.sleep.seconds: {facts.delay:g} (Kubernetes 1.30+)"
    return Hit("info", f"{problem}, and then there is no delay at all", fix)


def prestop_shorter_than_propagation(facts: Facts) -> Hit | None:
    """New connections still arrive after preStop: the listener closes under them (refused)."""
    delay, propagation = facts.delay, facts.propagation
    if propagation is None or delay is None or delay >= propagation:
        return None
    return Hit(
        "error",
        f"preStop waits {delay:g}s but routers may keep sending new connections for {propagation:g}s",
        f"set the preStop delay to at least {math.ceil(propagation) + JITTER}s",
    )


def drain_bound_unread(facts: Facts) -> Hit | None:
    """The bound is set where drainspec cannot read it: say so, rather than judge a guess."""
    if facts.drain is None or facts.drain.unread is None:
        return None
    server, spec = facts.drain.server, SERVERS[facts.drain.server]
    return Hit(
        "info",
        f"{server}'s drain bound is set in {facts.drain.source} ({facts.drain.unread}): whether preStop and the "
        "drain fit in the grace was not checked",
        f"pass {spec.drain_flag} on the command line, or write the number out in the file",
    )


def drain_bound_in_script(facts: Facts) -> Hit | None:
    """The app's own script starts its server: the bound is in its code, so only a replay can tell."""
    if facts.script is None:
        return None
    if facts.fastapi_cli:  # no bound to set: `fastapi run` hands uvicorn none, and takes no option for one
        room = facts.grace - facts.whole_delay - MARGIN
        return Hit(
            "warning",
            f"the container runs the FastAPI CLI ({facts.script}), which starts uvicorn with no bound on its drain "
            "and takes no option for one: open connections (streams, websockets, keep-alive) hold the drain "
            "until SIGKILL",
            f"run uvicorn itself on the app's import string, with {SERVERS['uvicorn'].drain_flag} "
            f"{max(1, math.floor(room))} (grace - preStop - {MARGIN} s margin)",
        )
    return Hit(
        "info",
        f"the container runs the app's own script ({facts.script}), which sets its server's drain bound in "
        "code: whether preStop and the drain fit in the grace was not checked",
        "a replay (drainspec k8s without --static) measures the drain the script sets: within-grace judges it, "
        "and the recommended budget is worked out from it",
    )


def unbounded_drain(facts: Facts) -> Hit | None:
    """A server that waits for every connection with no bound drains until SIGKILL."""
    if facts.drain is None or facts.drain.unread is not None:
        return None
    server, timeout = facts.drain.server, facts.drain.seconds
    if timeout is not None:
        return None
    room = facts.grace - facts.whole_delay - MARGIN
    return Hit(
        "warning",
        f"{server} waits for open connections without a time limit (streams, websockets, keep-alive): "
        "such a drain ends only at SIGKILL",
        f"{SERVERS[server].timeout_advice(room)} (grace - preStop - {MARGIN} s margin)",
    )


def drain_exceeds_grace(facts: Facts) -> Hit | None:
    """preStop plus the server's own drain bound must fit in the grace, with a margin."""
    if facts.drain is None or facts.drain.unread is not None:
        return None
    server, timeout = facts.drain.server, facts.drain.seconds
    if timeout is None or facts.whole_delay + timeout + MARGIN <= facts.grace:
        return None  # an unbounded drain is unbounded-drain's
    where = f"{server}'s default" if facts.drain.source == "the default" else facts.drain.source
    return Hit(
        "error",
        f"preStop {facts.delay or 0:g}s + {server}'s shutdown timeout {timeout:g}s ({where}) + {MARGIN} s margin "
        f"exceeds terminationGracePeriodSeconds {facts.grace:g}s: a slow drain is SIGKILLed",
        f"raise terminationGracePeriodSeconds to {facts.whole_delay + math.ceil(timeout) + MARGIN}, "
        "or lower the server timeout",
    )


def wrong_stop_signal(facts: Facts) -> Hit | None:
    """A stop signal (lifecycle.stopSignal, or the image's STOPSIGNAL) the server does not drain on."""
    server = facts.command.server
    try:
        name = parse_signal(facts.container.signal).name.removeprefix("SIG")
    except ValueError:
        return None  # the replay refuses it with the reason
    if server is None or name in SERVERS[server].drains_on:
        return None
    if facts.container.stop_signal:
        said, fix = f"stopSignal SIG{name}", "remove lifecycle.stopSignal"
    else:
        said, fix = f"the image's STOPSIGNAL SIG{name}", "remove STOPSIGNAL from the Dockerfile"
    drains = " and ".join(f"SIG{signal}" for signal in SERVERS[server].drains_on)
    if name in SERVERS[server].quick_on:
        effect = f"is {server}'s quick shutdown: in-flight requests are answered 500"
    else:
        effect = (
            f"is not a signal {server} drains on: as PID 1 it ignores it and the pod waits for SIGKILL at the grace "
            "deadline; anywhere else it dies with its requests in flight"
        )
    return Hit("error", f"{said} {effect}", f"{fix}; {server} drains on {drains}")


def stop_signal_without_os(facts: Facts) -> Hit | None:
    if not facts.container.stop_signal or facts.pod.os_name is not None:
        return None
    return Hit(
        "warning",
        "lifecycle.stopSignal needs spec.os.name (and the ContainerStopSignals feature gate); "
        "without them the API rejects the pod or drops the field",
        "set spec.os.name: linux, or bake the signal into the image with STOPSIGNAL",
    )


def slow_readiness(facts: Facts) -> Hit | None:
    readiness, delay = facts.container.readiness, facts.delay
    # A readiness probe cannot fail faster than about a second, however short the preStop.
    if readiness is None or delay is None or readiness.seconds_to_fail <= max(delay, 1.0):
        return None
    return Hit(
        "warning",
        f"the readiness probe needs {readiness.seconds_to_fail:g}s "
        f"({readiness.period:g}s x {readiness.failure_threshold}) to report a terminating pod, "
        f"longer than the {delay:g}s preStop: load balancers that health-check pods keep routing",
        "lower periodSeconds x failureThreshold below the preStop delay",
    )


def liveness_grace_shorter(facts: Facts) -> Hit | None:
    liveness = facts.container.liveness
    if liveness is None or liveness.termination_grace is None or liveness.termination_grace >= facts.grace:
        return None
    return Hit(
        "warning",
        f"livenessProbe.terminationGracePeriodSeconds {liveness.termination_grace:g}s is shorter than the "
        f"pod's {facts.grace:g}s: a liveness restart cuts the drain",
        "remove it, or make it cover preStop + drain",
    )


def capacity_hole(facts: Facts) -> Hit | None:
    """
    A rolling update that may take every replica out of service at once. The strategy is
    resolved as the controller resolves it: 25% of 1 replica is 0 unavailable (and 1 surge),
    so the default strategy keeps a single replica serving until its replacement is ready.
    """
    pod = facts.pod
    if pod.kind != "Deployment" or pod.replicas < 1:
        return None
    _, unavailable = resolve_fenceposts(pod.max_surge, pod.max_unavailable, pod.replicas)
    if unavailable < pod.replicas:
        return None
    return Hit(
        "warning",
        f"replicas {pod.replicas} with maxSurge {pod.max_surge} and maxUnavailable {pod.max_unavailable} "
        f"(resolved: {unavailable} of {pod.replicas} may be unavailable): a rollout can leave no ready pod",
        "set maxUnavailable: 0 with maxSurge: 1, so that a new pod is ready before an old one is deleted, "
        "or run more replicas than maxUnavailable takes away",
    )


# -- the table -----------------------------------------------------------------------------------

# code, row in the research table of misconfigurations, check. Findings of one severity keep
# this order.
RULES: tuple[Rule, ...] = (
    Rule("init-before-shell", 7, init_before_shell),
    Rule("shell-wrapper", 5, shell_wrapper),
    Rule("no-prestop", 1, no_prestop),
    Rule("prestop-exceeds-grace", 4, prestop_exceeds_grace),
    Rule("prestop-triggers-shutdown", 14, prestop_triggers_shutdown),
    Rule("exec-sleep-prestop", 13, exec_sleep_prestop),
    Rule("prestop-shorter-than-propagation", 2, prestop_shorter_than_propagation),
    Rule("drain-bound-unread", 3, drain_bound_unread),
    Rule("drain-bound-in-script", 3, drain_bound_in_script),
    Rule("unbounded-drain", 9, unbounded_drain),
    Rule("drain-exceeds-grace", 3, drain_exceeds_grace),
    Rule("wrong-stop-signal", 8, wrong_stop_signal),
    Rule("stop-signal-without-os", 8, stop_signal_without_os),
    Rule("slow-readiness", 11, slow_readiness),
    Rule("liveness-grace-shorter", 16, liveness_grace_shorter),
    Rule("capacity-hole", 19, capacity_hole),
)


def static_findings(pod: PodSpec, container: ContainerSpec, *, propagation: float | None = None) -> list[Finding]:
    """Every misconfiguration visible without running anything, worst first."""
    facts = Facts.of(pod, container, propagation)
    findings = [finding for rule in RULES if (finding := rule.apply(facts)) is not None]
    return sorted(findings, key=lambda finding: SEVERITY_ORDER[finding.severity])


# -- behind a real ingress proxy (`drainspec k8s --ingress`) ------------------------------------

# Each server's idle keep-alive option and its default, in seconds.
KEEPALIVE_FLAGS: dict[str, tuple[str, float]] = {
    "uvicorn": ("--timeout-keep-alive", 5.0),
    "gunicorn": ("--keep-alive", 2.0),
    "hypercorn": ("--keep-alive", 5.0),
}


def server_keepalive(argv: Sequence[str]) -> tuple[str, float] | None:
    """The server's idle keep-alive timeout from its command line (its default if not given)."""
    command = analyse(argv)
    if command.server not in KEEPALIVE_FLAGS:
        return None
    flag, default = KEEPALIVE_FLAGS[command.server]
    text = option_value(command_words(argv, command), flag)
    if text is None:
        return command.server, default
    seconds = number_or_none(text)
    return None if seconds is None else (command.server, seconds)


def keepalive_below_proxy(container: ContainerSpec, proxy: str, proxy_timeout: float) -> Finding | None:
    """
    The keep-alive race, read from the manifest: a server that closes idle connections before the
    proxy stops reusing them lets the proxy write a request onto a connection the server is
    closing, and the proxy answers 502 (it retries only idempotent requests).
    """
    found = server_keepalive(container.argv)
    if found is None:
        return None
    server, seconds = found
    if seconds > proxy_timeout:
        return None
    flag = KEEPALIVE_FLAGS[server][0]
    return Finding(
        "keepalive-below-proxy",
        10,
        "warning",
        f"{server} closes idle keep-alive connections after {seconds:g}s, {proxy}'s upstream pool keeps them "
        f"{proxy_timeout:g}s: the proxy can reuse a connection the pod is closing and answer 502",
        f"set {flag} above {proxy_timeout:g} (e.g. {math.ceil(proxy_timeout) + 15}), or lower the proxy's upstream "
        "keep-alive timeout below the server's",
    )
