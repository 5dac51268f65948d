"""
Harness overhead: a standard scenario (startup, 10 requests of 1 s in flight, SIGTERM, drain)
run by drainspec, against the floor measured in the same run: the same server's time to listen,
plus the request time, plus its exit after SIGTERM with nothing in flight. The difference is what
drainspec adds (probe, journal, waiting on evidence, reaping). Target: under 10 % over the floor.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import time

from common import uvicorn, workdir

from chaos.runner import execute
from chaos.scenario import Scenario

REQUEST_SECONDS = 1.0
SCENARIO = Scenario(app="app.main:app", requests=10, request_seconds=REQUEST_SECONDS, background=0, grace=30)


def harness_once() -> float:
    with workdir() as path:
        started = time.perf_counter()
        execute(SCENARIO, path / "run")
        return time.perf_counter() - started


def floor_once() -> float:
    with workdir() as path:
        started = time.perf_counter()
        with uvicorn("app.main:app", probe=False, workdir=path) as server:
            ready = time.perf_counter() - started
            stopping = time.perf_counter()
            os.kill(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=30)
            stop = time.perf_counter() - stopping
    return ready + REQUEST_SECONDS + stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    harness, floor = [], []
    for _ in range(runs):  # interleaved, so both see the same machine
        floor.append(floor_once())
        harness.append(harness_once())
    h, f = statistics.median(harness), statistics.median(floor)
    print(f"runs: {runs} (median)")
    print(f"floor   (ready + {REQUEST_SECONDS:g} s request + SIGTERM exit): {f:.3f} s")
    print(f"harness (drainspec run, 10 requests of {REQUEST_SECONDS:g} s):     {h:.3f} s")
    overhead = (h / f - 1) * 100
    verdict = "meets" if overhead < 10 else "BELOW"
    print(f"ratio {h / f:.3f}: {overhead:+.1f} % over the floor ({verdict} target: under 10 %)")


if __name__ == "__main__":
    main()
