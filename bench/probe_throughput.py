"""
Probe overhead: requests per second of the same uvicorn on the reference app, bare and wrapped in
drainspec's probe with the journal on, both driven by wrk in the same run, rounds alternating
which goes first so that neither gets a quieter machine. Target: the probe keeps at least 95 % of
the throughput (the median of the rounds' own ratios).

Two endpoints: /healthz (no work at all: the probe's fixed cost per request, four journal lines,
is all there is to measure) and /slow?seconds=0 (two queries on the pool, a realistic handler).
The server's own CPU per request is printed beside: it does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import statistics

from common import Measure, measure, uvicorn, workdir

PATHS = ("/healthz", "/slow?seconds=0")


def measure_one(probe: bool, path: str, seconds: int) -> Measure:
    with workdir() as directory, uvicorn("app.main:app", probe=probe, workdir=directory) as server:
        return measure(server.url + path, server.process.pid, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    print(f"rounds: {args.rounds} x {args.seconds} s, wrk -t2 -c50")
    for path in PATHS:
        bare: list[Measure] = []
        probed: list[Measure] = []
        for round_number in range(1, args.rounds + 1):
            for probe in (False, True) if round_number % 2 else (True, False):
                (probed if probe else bare).append(measure_one(probe, path, args.seconds))
            a, b = bare[-1], probed[-1]
            print(
                f"  round {round_number}: bare {a.rate:6.0f} req/s {a.cpu_us:4.0f} us CPU/req   "
                f"probe {b.rate:6.0f} req/s {b.cpu_us:4.0f} us CPU/req   ratio {b.rate / a.rate:.3f}"
            )
        paired = statistics.median(b.rate / a.rate for a, b in zip(bare, probed, strict=True))
        cpu_bare, cpu_probe = statistics.median(m.cpu_us for m in bare), statistics.median(m.cpu_us for m in probed)
        verdict = "meets" if paired >= 0.95 else "BELOW"
        print(
            f"GET {path:<18} ratio {paired:.3f}, median of the rounds ({verdict} target 0.95); "
            f"server CPU per request: bare {cpu_bare:.0f} us, probe {cpu_probe:.0f} us, "
            f"ratio {cpu_bare / cpu_probe:.3f}"
        )


if __name__ == "__main__":
    main()
