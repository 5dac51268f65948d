"""
Resource instrumentation overhead: requests per second through the probe (journal on) on an
endpoint that runs one query, with the instrumentation on and with it off
(`DRAINSPEC_INSTRUMENT=0`), both driven by wrk in the same run, alternating so that neither gets
a quieter machine. Target: instrumented throughput at least 0.95 of uninstrumented.

The only difference between the two servers is the switch: same app, same probe, same journal.
The instrumented one writes two more journal lines per request (the query's start and end).

    .venv/bin/python bench/instrumentation.py                       # SQLAlchemy + SQLite
    .venv/bin/python bench/instrumentation.py --database-url postgresql://u:p@127.0.0.1:5432/db  # asyncpg
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import Measure, launch, measure  # noqa: E402

from chaos import target, waits  # noqa: E402
from chaos.environment import INSTRUMENT_ENV  # noqa: E402

APP = "bench.one_query:app"
PATH = "/one"


@contextmanager
def probed_server(*, instrument: bool, database_url: str) -> Iterator[tuple[str, psutil.Process]]:
    """uvicorn on the bench app through drainspec's probe; the instrumentation on or off."""
    with tempfile.TemporaryDirectory(prefix="drainspec-bench-") as name:
        directory = Path(name)
        port = target.free_port()
        env = {INSTRUMENT_ENV: "1" if instrument else "0", "BENCH_DATABASE_URL": database_url}
        argv, environ = launch(APP, probe=True, workdir=directory, port=port, env=env)
        log = directory / "server.log"
        process = target.spawn(argv, env=environ, cwd=ROOT, log=log)
        try:
            asyncio.run(waits.wait_port(process, port=port, timeout=20, log=log))
            yield f"http://{target.HOST}:{port}{PATH}", psutil.Process(process.pid)
        finally:
            target.reap(process)


def measure_one(*, instrument: bool, seconds: int, database_url: str) -> Measure:
    with probed_server(instrument=instrument, database_url=database_url) as (url, server):
        return measure(url, server.pid, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--database-url", default="", help="postgresql://... for an asyncpg pool (default: SQLite)")
    args = parser.parse_args()
    database = "asyncpg pool on PostgreSQL" if args.database_url else "SQLAlchemy async engine on SQLite"
    print(f"GET {PATH}: one query ({database}); {args.rounds} rounds x {args.seconds} s, wrk -t2 -c50 (median)")
    off: list[Measure] = []
    on: list[Measure] = []
    for round_number in range(1, args.rounds + 1):
        # Alternate which goes first: a machine that is busier at one moment favours neither.
        for instrument in (False, True) if round_number % 2 else (True, False):
            measured = measure_one(instrument=instrument, seconds=args.seconds, database_url=args.database_url)
            (on if instrument else off).append(measured)
        a, b = off[-1], on[-1]
        print(
            f"  round {round_number}: off {a.rate:6.0f} req/s {a.cpu_us:5.0f} us CPU/req   "
            f"on {b.rate:6.0f} req/s {b.cpu_us:5.0f} us CPU/req   ratio {b.rate / a.rate:.3f}"
        )
    base, instrumented = statistics.median(m.rate for m in off), statistics.median(m.rate for m in on)
    # Each round's two servers ran back to back: the median of the rounds' own ratios is what a
    # machine whose load drifts from round to round (other jobs on 2 cores) disturbs least. The
    # server's own CPU time per request does not depend on what else runs on the machine at all.
    paired = statistics.median(b.rate / a.rate for a, b in zip(off, on, strict=True))
    cpu_off, cpu_on = statistics.median(m.cpu_us for m in off), statistics.median(m.cpu_us for m in on)
    verdict = "meets" if paired >= 0.95 else "BELOW"
    print(f"median: off {base:6.0f} req/s  on {instrumented:6.0f} req/s  ratio of medians {instrumented / base:.3f}")
    print(f"server CPU per request: off {cpu_off:.0f} us  on {cpu_on:.0f} us  ratio {cpu_off / cpu_on:.3f}")
    print(f"throughput ratio, median of the rounds: {paired:.3f} ({verdict} target 0.95)")


if __name__ == "__main__":
    main()
