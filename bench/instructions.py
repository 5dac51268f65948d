"""
The probe's cost counted in instructions: the same uvicorn on the reference app, bare and
through the probe (journal on), each run under valgrind's callgrind with its cache simulation,
requests sent one after another on one keep-alive connection, and counted only while they run.

Throughput on a shared 2-core machine moves by a few hundredths from one round to the next;
an instruction count does not move with the machine's load, so a change to the probe's request
path can be judged to a few hundred instructions in one run. It is a proxy, not the target:
what a miss in the instruction cache costs, and how the server shares the machine with its
load, is still the throughput benchmark's (`probe_throughput.py`) to measure.

The probe's heartbeat runs by the clock (every 20 ms), and under valgrind a request takes some
fifty times longer, so the heartbeat's share would be fifty times what it is in a real server:
it is counted over an idle second first and subtracted at the requests' own pace.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, launch, workdir

from chaos import target, waits
from chaos.environment import STALL_ENV

PATHS = ("/healthz", "/slow?seconds=0")
EVENTS = ("Ir", "I1mr", "D1mr")  # instructions, and first-level cache misses for code and data
STARTUP_SECONDS = 300  # a server's imports under valgrind


@dataclass(frozen=True)
class Counts:
    """Events per request."""

    instructions: float
    code_misses: float
    data_misses: float


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    dumps: Path  # callgrind's output file; each dump adds `.N` to its name


@contextmanager
def under_callgrind(*, probe: bool, directory: Path) -> Iterator[Server]:
    """uvicorn on the reference app under callgrind, counting nothing until told; always reaped."""
    port = target.free_port()
    # valgrind's pace is no stall: the watchdog would record stacks, work a real server never does
    argv, env = launch("app.main:app", probe=probe, workdir=directory, port=port, env={STALL_ENV: "1000000"})
    dumps = directory / "callgrind.out"
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--cache-sim=yes",
        f"--callgrind-out-file={dumps}",
    ]
    log = directory / "server.log"
    process = target.spawn([*valgrind, *argv], env=env, cwd=ROOT, log=log)
    try:
        asyncio.run(waits.wait_port(process, port=port, timeout=STARTUP_SECONDS, log=log))
        yield Server(process.pid, port, dumps)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=STARTUP_SECONDS)
    finally:
        target.reap(process)


def callgrind_control(server: Server, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(server.pid)], check=True, capture_output=True, timeout=60)


def totals(path: Path) -> dict[str, int]:
    """The events a callgrind dump counted, by name."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            names = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and names:
            return dict(zip(names, (int(value) for value in line.split()[1:]), strict=False))
    sys.exit(f"no totals in {path}; is it a callgrind dump?")


def dumped(server: Server, number: int) -> Path:
    """The `number`th dump (counting from 1), once callgrind has written it whole."""
    path = server.dumps.with_name(f"{server.dumps.name}.{number}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and any(word in path.read_text(errors="replace") for word in ("totals:", "summary:")):
            return path
        time.sleep(0.1)
    sys.exit(f"callgrind wrote no dump {path}")


def requests(port: int, path: str, count: int) -> float:
    """`count` GETs of `path`, one after another on one connection; the seconds they took."""
    connection = http.client.HTTPConnection(target.HOST, port, timeout=120)
    started = time.monotonic()
    try:
        for _ in range(count):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"GET {path} answered {response.status}")
    finally:
        connection.close()
    return time.monotonic() - started


def measure(*, probe: bool, count: int, idle: float) -> dict[str, Counts]:
    with workdir() as directory, under_callgrind(probe=probe, directory=directory) as server:
        for path in PATHS:
            requests(server.port, path, 50)  # warm-up: connections, caches, the first request's setup
        callgrind_control(server, "--instr=on")
        time.sleep(idle)  # the measured idle period itself, not a wait for readiness
        callgrind_control(server, "--dump=idle")
        measured = {}
        for number, path in enumerate(PATHS, start=2):
            seconds = requests(server.port, path, count)
            callgrind_control(server, f"--dump=requests{number}")
            measured[path] = seconds
        callgrind_control(server, "--instr=off")
        at_rest = totals(dumped(server, 1))
        result = {}
        for number, path in enumerate(PATHS, start=2):
            counted = totals(dumped(server, number))
            scale = measured[path] / idle
            per = {name: (counted.get(name, 0) - at_rest.get(name, 0) * scale) / count for name in EVENTS}
            result[path] = Counts(per["Ir"], per["I1mr"], per["D1mr"])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="requests per endpoint (default 1000)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of the idle count (default 2)")
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install valgrind")
    print(f"{args.requests} requests per endpoint on one connection, counted by callgrind (events per request)")
    bare = measure(probe=False, count=args.requests, idle=args.idle)
    probed = measure(probe=True, count=args.requests, idle=args.idle)
    for path in PATHS:
        a, b = bare[path], probed[path]
        print(f"GET {path}")
        for name, counts in (("bare", a), ("probe", b)):
            print(
                f"  {name:<6} {counts.instructions:9,.0f} instructions  {counts.code_misses:7,.0f} code misses  "
                f"{counts.data_misses:7,.0f} data misses"
            )
        added, missed = b.instructions - a.instructions, b.code_misses - a.code_misses
        print(
            f"  the probe adds {added:,.0f} instructions ({added / a.instructions:.1%}), "
            f"{missed:+,.0f} code misses ({missed / a.code_misses:+.1%})"
        )


if __name__ == "__main__":
    main()
