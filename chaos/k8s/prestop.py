"""
The preStop hook, run the kubelet's way: `sleep` waits, `httpGet` goes straight to the pod (not
through the Service), `exec` runs inside the pod's namespaces. `chaos.k8s.kubelet.run_prestop`
puts it on the grace clock; this module only knows how to run each kind of hook.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Sequence

from chaos import target, traffic, workload
from chaos.journal import JournalWriter
from chaos.k8s.kubelet import PreStop
from chaos.k8s.loopback import pod_path
from chaos.k8s.manifest import ContainerSpec, ExecHook, Hook, HttpGetHook, SleepHook
from chaos.k8s.pod import Pod

Started = Callable[[asyncio.subprocess.Process], None]
"""Told of every helper process a hook starts, so the run can reap it whatever happens."""


def describe(hook: Hook | None) -> str | None:
    """The hook in a few words, for the journal and the reports."""
    if isinstance(hook, SleepHook):
        return f"sleep {hook.seconds:g}s"
    if isinstance(hook, HttpGetHook):
        return f"httpGet {hook.path}"
    if isinstance(hook, ExecHook):
        return "exec " + shlex.join(hook.command)
    return None


def prestop_runner(
    container: ContainerSpec, pod: Pod, port: int, journal: JournalWriter, started: Started
) -> PreStop | None:
    """The container's preStop hook as a `PreStop` for `kubelet.terminate`, or None without one."""
    hook = container.prestop
    if hook is None:
        return None

    async def run(limit: float) -> str:
        if isinstance(hook, SleepHook):
            await asyncio.sleep(hook.seconds)  # the hook itself is a sleep
            return f"slept {hook.seconds:g}s"
        if isinstance(hook, HttpGetHook):
            return await _http_get(hook, port, journal, limit)
        return await _exec_in_pod(hook.command, pod, started)

    return run


async def _http_get(hook: HttpGetHook, port: int, journal: JournalWriter, limit: float) -> str:
    # The kubelet's own request, straight to the pod: journaled as a client of its own role,
    # so the verdicts know who sent it.
    async with traffic.new_client(limit) as client:
        spec = workload.RequestSpec("GET", pod_path(hook.path, where="lifecycle.preStop.httpGet.path"))
        url = f"http://{target.HOST}:{port}"
        outcome = await traffic.perform(client, url, spec, "prestop", journal, role="kubelet")
    if outcome != traffic.Outcome.OK:
        raise RuntimeError(f"GET {hook.path}: {outcome.value}")
    return f"GET {hook.path}: {outcome.value}"


async def _exec_in_pod(command: Sequence[str], pod: Pod, started: Started) -> str:
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
    started(process)
    _, stderr = await process.communicate()
    if process.returncode != 0:
        reason = stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(
            f"`{shlex.join(command)}` exited with code {process.returncode}" + (f": {reason[-1]}" if reason else "")
        )
    return f"`{shlex.join(command)}` exited 0"
