"""
Probe overhead: requests per second of the same uvicorn on the reference app, bare and wrapped in
drainspec's probe with the journal on. Both servers run side by side for the whole measurement
and wrk's bursts alternate between them, many short ones, so that a machine whose speed drifts
(2 cores shared with other jobs) slows both alike. Target: the probe keeps at least 95 % of the
throughput (the median of the bursts' paired ratios).

Two endpoints: /healthz (no work at all: the probe's fixed cost per request, three journal
lines, is all there is to measure) and /slow?seconds=0 (two queries on the pool, a realistic
handler). The server's own CPU per request is printed beside.

Several servers on each side (`--servers`, 3 by default): two processes of the very same server
differ by a few hundredths in CPU per request (measured: four identical probed servers side by
side, 120 to 128 us per request on `/healthz`, the order the same in every burst), by where
their memory landed, so one pair of processes carries its own bias into every burst it runs.
Each burst round measures every server once, in alternating order; a round's ratio is the
median probed server's throughput over the median bare server's, and the result the median of
the rounds.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack

from common import Measure, Server, measure, uvicorn, workdir

PATHS = ("/healthz", "/slow?seconds=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", type=int, default=12, help="burst rounds per endpoint (default 12)")
    parser.add_argument("--seconds", type=int, default=1, help="seconds per burst (default 1)")
    parser.add_argument("--servers", type=int, default=3, help="server processes on each side (default 3)")
    args = parser.parse_args()
    print(
        f"{args.bursts} rounds of 1 burst of {args.seconds} s per server, {args.servers} bare and "
        f"{args.servers} probed servers, wrk -t2 -c50"
    )
    with ExitStack() as stack:
        servers = [
            (probe, stack.enter_context(uvicorn("app.main:app", probe=probe, workdir=stack.enter_context(workdir()))))
            for _ in range(args.servers)
            for probe in (False, True)
        ]
        for path in PATHS:
            measured: list[list[Measure]] = [[] for _ in servers]
            for burst in range(args.bursts):
                # Alternate the order: a machine that is busier at one moment favours no server.
                order = list(enumerate(servers)) if burst % 2 else list(enumerate(servers))[::-1]
                for index, (_, server) in order:
                    url = server.url + path
                    measured[index].append(measure(url, server.process.pid, seconds=args.seconds, warm_up=burst == 0))
            report(path, servers, measured)


def report(path: str, servers: list[tuple[bool, Server]], measured: list[list[Measure]]) -> None:
    bare = [runs for (probe, _), runs in zip(servers, measured, strict=True) if not probe]
    probed = [runs for (probe, _), runs in zip(servers, measured, strict=True) if probe]
    rounds = len(measured[0])

    def in_round(side: list[list[Measure]], n: int) -> float:
        return statistics.median(runs[n].rate for runs in side)

    ratio = statistics.median(in_round(probed, n) / in_round(bare, n) for n in range(rounds))
    rate_a = statistics.median(m.rate for runs in bare for m in runs)
    rate_b = statistics.median(m.rate for runs in probed for m in runs)
    cpu_a = [statistics.median(m.cpu_us for m in runs) for runs in bare]
    cpu_b = [statistics.median(m.cpu_us for m in runs) for runs in probed]
    verdict = "meets" if ratio >= 0.95 else "BELOW"
    print(
        f"GET {path:<18} bare {rate_a:6.0f} req/s  probe {rate_b:6.0f} req/s  ratio {ratio:.3f} ({verdict} target 0.95)"
    )
    print(
        f"{'':22} server CPU per request, each server: bare {', '.join(f'{c:.0f}' for c in cpu_a)} us; "
        f"probe {', '.join(f'{c:.0f}' for c in cpu_b)} us"
    )


if __name__ == "__main__":
    main()
