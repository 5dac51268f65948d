"""
Probe overhead: requests per second of the same uvicorn on the reference app, bare and wrapped in
drainspec's probe with the journal on. Both servers run side by side for the whole measurement
and wrk's bursts alternate between them, many short ones, so that a machine whose speed drifts
(2 cores shared with other jobs) slows both alike. Target: the probe keeps at least 95 % of the
throughput (the median of the bursts' paired ratios).

Two endpoints: /healthz (no work at all: the probe's fixed cost per request, three journal
lines, is all there is to measure) and /slow?seconds=0 (two queries on the pool, a realistic
handler). The server's own CPU per request is printed beside.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import ExitStack

from common import Measure, measure, uvicorn, workdir

PATHS = ("/healthz", "/slow?seconds=0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bursts", type=int, default=30, help="bursts per server and endpoint (default 30)")
    parser.add_argument("--seconds", type=int, default=1, help="seconds per burst (default 1)")
    args = parser.parse_args()
    print(f"{args.bursts} alternating bursts of {args.seconds} s per server, wrk -t2 -c50")
    with ExitStack() as stack:
        bare = stack.enter_context(uvicorn("app.main:app", probe=False, workdir=stack.enter_context(workdir())))
        probed = stack.enter_context(uvicorn("app.main:app", probe=True, workdir=stack.enter_context(workdir())))
        for path in PATHS:
            results: dict[str, list[Measure]] = {"bare": [], "probe": []}
            for burst in range(args.bursts):
                # Alternate which goes first: a machine that is busier at one moment favours neither.
                order = (("bare", bare), ("probe", probed)) if burst % 2 else (("probe", probed), ("bare", bare))
                for name, server in order:
                    url = server.url + path
                    results[name].append(measure(url, server.process.pid, seconds=args.seconds, warm_up=burst == 0))
            a, b = results["bare"], results["probe"]
            paired = statistics.median(y.rate / x.rate for x, y in zip(a, b, strict=True))
            rate_a, rate_b = statistics.median(m.rate for m in a), statistics.median(m.rate for m in b)
            cpu_a, cpu_b = statistics.median(m.cpu_us for m in a), statistics.median(m.cpu_us for m in b)
            verdict = "meets" if paired >= 0.95 else "BELOW"
            print(
                f"GET {path:<18} bare {rate_a:6.0f} req/s  probe {rate_b:6.0f} req/s  "
                f"ratio {paired:.3f} ({verdict} target 0.95)"
            )
            print(f"{'':22} server CPU per request: bare {cpu_a:.0f} us, probe {cpu_b:.0f} us")


if __name__ == "__main__":
    main()
