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
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos import target  # noqa: E402
from chaos.lifecycle import server_environment  # noqa: E402
from chaos.probe.resources import INSTRUMENT_ENV  # noqa: E402
from chaos.scenario import Scenario  # noqa: E402

APP = "bench.one_query:app"
PATH = "/one"


@contextmanager
def probed_server(*, instrument: bool, database_url: str) -> Iterator[str]:
    """uvicorn on the bench app through drainspec's probe; the instrumentation on or off."""
    with tempfile.TemporaryDirectory(prefix="drainspec-bench-") as name:
        directory = Path(name)
        (directory / "data").mkdir()
        port = target.free_port()
        env = {INSTRUMENT_ENV: "1" if instrument else "0", "BENCH_DATABASE_URL": database_url}
        environ = server_environment(Scenario(app=APP, env=env), directory, directory / "journal.jsonl")
        log = directory / "server.log"
        process = target.spawn(target.server_argv("uvicorn", port), env=environ, cwd=ROOT, log=log)
        try:
            asyncio.run(target.wait_port(process, port=port, timeout=20, log=log))
            yield f"http://{target.HOST}:{port}{PATH}"
        finally:
            target.reap(process)


def wrk(url: str, *, seconds: int, connections: int = 50) -> float:
    """Requests per second measured by wrk (two threads); every answer must be a 200."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        sys.exit(f"the server did not answer every request with a 200:\n{result.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if match is None:
        sys.exit(f"cannot read wrk's output:\n{result.stdout}")
    return float(match.group(1))


def measure(*, instrument: bool, seconds: int, database_url: str) -> float:
    with probed_server(instrument=instrument, database_url=database_url) as url:
        wrk(url, seconds=1)  # warm up: connections, caches, the first queries
        return wrk(url, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--database-url", default="", help="postgresql://... for an asyncpg pool (default: SQLite)")
    args = parser.parse_args()
    database = "asyncpg pool on PostgreSQL" if args.database_url else "SQLAlchemy async engine on SQLite"
    print(f"GET {PATH}: one query ({database}); {args.rounds} rounds x {args.seconds} s, wrk -t2 -c50 (median)")
    off, on = [], []
    for round_number in range(1, args.rounds + 1):
        off.append(measure(instrument=False, seconds=args.seconds, database_url=args.database_url))
        on.append(measure(instrument=True, seconds=args.seconds, database_url=args.database_url))
        print(f"  round {round_number}: off {off[-1]:8.0f} req/s  on {on[-1]:8.0f} req/s  ratio {on[-1] / off[-1]:.3f}")
    base, instrumented = statistics.median(off), statistics.median(on)
    ratio = instrumented / base
    verdict = "meets" if ratio >= 0.95 else "BELOW"
    print(f"median: off {base:8.0f} req/s  on {instrumented:8.0f} req/s  ratio {ratio:.3f} ({verdict} target 0.95)")


if __name__ == "__main__":
    main()
