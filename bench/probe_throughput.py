"""
Probe overhead: requests per second of the same uvicorn on the reference app's /healthz, bare and
wrapped in drainspec's probe with the journal on, both driven by wrk in the same run, alternating
so that neither gets a quieter machine. Target: the probe keeps at least 95 % of the throughput.

Two endpoints: /healthz (no work at all: the probe's fixed cost per request, four journal writes,
is all there is to measure) and /slow?seconds=0 (two queries on the pool, a realistic handler).
"""

from __future__ import annotations

import argparse
import statistics

from common import uvicorn, workdir, wrk

PATHS = ("/healthz", "/slow?seconds=0")


def measure(probe: bool, path: str, seconds: int) -> float:
    with workdir() as directory, uvicorn("app.main:app", probe=probe, workdir=directory) as server:
        wrk(server.url + path, seconds=1)  # warm up
        return wrk(server.url + path, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    print(f"rounds: {args.rounds} x {args.seconds} s, wrk -t2 -c50 (median)")
    for path in PATHS:
        bare, probed = [], []
        for _ in range(args.rounds):
            bare.append(measure(False, path, args.seconds))
            probed.append(measure(True, path, args.seconds))
        b, p = statistics.median(bare), statistics.median(probed)
        verdict = "meets" if p / b >= 0.95 else "BELOW"
        print(f"GET {path:<18} bare {b:8.0f} req/s  probe {p:8.0f} req/s  ratio {p / b:.3f} ({verdict} target 0.95)")


if __name__ == "__main__":
    main()
