"""What every benchmark shares: a server started and reaped by hand, and wrk."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos import target, waits  # noqa: E402
from chaos.lifecycle import server_environment  # noqa: E402
from chaos.scenario import Scenario  # noqa: E402


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str


# The server on one core and wrk on another, when the machine has two: left to the scheduler,
# wrk's threads and the server take turns on both cores, and a measurement moved by a tenth.
_CPUS = sorted(os.sched_getaffinity(0))
CLIENT_CPU, SERVER_CPU = (_CPUS[0], _CPUS[1]) if len(_CPUS) >= 2 else (None, None)


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """`argv` run on `cpu` alone (taskset execs it: the pid stays the program's own)."""
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def launch(
    app: str, *, probe: bool, workdir: Path, port: int, env: Mapping[str, str] | None = None
) -> tuple[list[str], Mapping[str, str]]:
    """
    The argv and environment of uvicorn on `app` at `port`: bare, or wrapped in drainspec's
    probe with the journal on in `workdir` (`env`: the probe's scenario environment).
    """
    (workdir / "data").mkdir(exist_ok=True)
    if probe:
        scenario = Scenario(app=app, env=dict(env or {}))
        return target.server_argv("uvicorn", port), server_environment(
            scenario, workdir, workdir / "journal.jsonl", str(ROOT)
        )
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "DRAINSPEC_RUN_DIR": str(workdir)}
    return [sys.executable, "-m", "uvicorn", app, "--host", target.HOST, "--port", str(port)], environ


@contextmanager
def uvicorn(app: str, *, probe: bool, workdir: Path) -> Iterator[Server]:
    """uvicorn on `app`, bare or wrapped in drainspec's probe (journal on), always reaped."""
    port = target.free_port()
    argv, env = launch(app, probe=probe, workdir=workdir, port=port)
    process = target.spawn(pinned(argv, SERVER_CPU), env=env, cwd=ROOT, log=workdir / "server.log")
    try:
        asyncio.run(waits.wait_port(process, port=port, timeout=20, log=workdir / "server.log"))
        yield Server(process, f"http://{target.HOST}:{port}")
    finally:
        target.reap(process)


def wrk_output(url: str, *, connections: int = 50, seconds: int = 5) -> str:
    """What wrk (two threads) printed for `seconds` of load on `url`."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    result = subprocess.run(
        pinned(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], CLIENT_CPU),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    return result.stdout


def wrk(url: str, *, connections: int = 50, seconds: int = 5) -> float:
    """Requests per second measured by wrk (two threads)."""
    output = wrk_output(url, connections=connections, seconds=seconds)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        sys.exit(f"cannot read wrk's output:\n{output}")
    return float(match.group(1))


@dataclass(frozen=True)
class Measure:
    """One server's throughput under wrk, and the CPU its process spent per request served."""

    rate: float  # requests per second
    cpu_us: float  # server CPU (user + system) per request, in microseconds


def measure(url: str, pid: int, *, seconds: int, connections: int = 50, warm_up: bool = True) -> Measure:
    """
    wrk on `url` for `seconds` (after a second of warm-up: connections, caches), every answer a
    200, and the CPU the server `pid` spent meanwhile: a server's own CPU per request moves less
    with what else runs on the machine than its throughput does.
    """
    if warm_up:
        wrk_output(url, seconds=1, connections=connections)
    server = psutil.Process(pid)
    before = server.cpu_times()
    output = wrk_output(url, seconds=seconds, connections=connections)
    after = server.cpu_times()
    if "Non-2xx" in output or "Socket errors" in output:
        sys.exit(f"the server did not answer every request with a 200:\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rate is None or total is None:
        sys.exit(f"cannot read wrk's output:\n{output}")
    spent = (after.user - before.user) + (after.system - before.system)
    return Measure(float(rate.group(1)), spent / max(int(total.group(1)), 1) * 1e6)


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="drainspec-bench-") as path:
        yield Path(path)
