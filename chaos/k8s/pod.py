"""
A container's main process as Kubernetes runs it: PID 1 of a new PID namespace.

PID 1 is special: the kernel delivers to it only the signals it has a handler for (SIGKILL
from outside excepted), and when it exits the kernel kills everything else in the namespace.
That is why a shell wrapper at PID 1 swallows SIGTERM, and why `tini -- sh -c app` kills the
app at once. Replaying that needs a real namespace: `unshare --pid --fork --mount-proc` as
root, or inside an unprivileged user namespace. Where neither works, the command runs as a plain
process and the report says so.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from chaos.errors import SetupError
from chaos.target import spawn

UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")
UNSHARE_USER = ("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child")
SIGTERM_BIT = 1 << (15 - 1)


@dataclass(frozen=True)
class Pod:
    """The launcher we reap, and the container's PID 1 as seen from here (where signals go)."""

    process: subprocess.Popen[bytes]
    pid1: int
    namespaced: bool


@functools.cache
def namespace_prefix() -> tuple[str, ...] | None:
    """The `unshare` words that give a new PID namespace here, or None if none works."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (UNSHARE, UNSHARE_USER):
        try:
            result = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode == 0:
            return prefix
    return None


async def start_pod(argv: Sequence[str], *, env: Mapping[str, str], cwd: str, log: Path, namespace: bool = True) -> Pod:
    prefix = namespace_prefix() if namespace else None
    process = spawn([*(prefix or ()), *argv], env=env, cwd=cwd, log=log)
    if prefix is None:
        return Pod(process, process.pid, namespaced=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while loop.time() < deadline:
        try:
            children = psutil.Process(process.pid).children()
        except psutil.NoSuchProcess:
            children = []
        if children:
            return Pod(process, children[0].pid, namespaced=True)
        if process.poll() is not None:
            break
        await asyncio.sleep(0.005)
    raise SetupError(f"the container command did not start in a PID namespace; see {log}")


def handles_signal(pid: int, signum: int = 15) -> bool | None:
    """
    Whether the process catches or blocks `signum` (SigCgt | SigBlk in /proc): for PID 1 this
    decides whether the signal is delivered at all. None if the process is gone.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    masks = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("SigCgt", "SigBlk"):
            masks[key] = int(value.strip(), 16)
    bit = 1 << (signum - 1)
    return bool((masks.get("SigCgt", 0) | masks.get("SigBlk", 0)) & bit)
