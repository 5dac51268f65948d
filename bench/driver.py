"""
The load driver is not the bottleneck: drainspec's own client (chaos.traffic, a new connection
per request, every request journaled) against wrk on the same bare uvicorn /healthz, with the
same number of connections, in the same run. drainspec needs hundreds of requests per run; the
ratio shows how far from wrk's ceiling it sits.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import uvicorn, workdir, wrk

from chaos import traffic, workload
from chaos.journal import JournalWriter

CONNECTIONS = 50


async def drive(url: str, seconds: float, journal: JournalWriter) -> int:
    spec = workload.RequestSpec("GET", "/healthz")
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int, client: traffic.httpx.AsyncClient) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < deadline:
            i += 1
            await traffic.perform(client, url, spec, f"w{n}.{i}", journal, role="bench")
            done += 1

    async with traffic.new_client(10) as client:
        await asyncio.gather(*(worker(n, client) for n in range(CONNECTIONS)))
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    seconds = parser.parse_args().seconds
    with workdir() as path, uvicorn("app.main:app", probe=False, workdir=path) as server:
        journal = JournalWriter(path / "client.jsonl")
        ours = asyncio.run(drive(server.url, seconds, journal)) / seconds
        journal.close()
        theirs = wrk(server.url + "/healthz", connections=CONNECTIONS, seconds=seconds)
    print(f"{CONNECTIONS} connections, {seconds} s, GET /healthz on bare uvicorn")
    print(f"wrk:              {theirs:9.0f} req/s")
    print(f"drainspec driver: {ours:9.0f} req/s (new connection per request, journaled)")
    print(f"ratio {ours / theirs:.3f}; a run needs at most a few hundred requests, i.e. under 0.1 s of driver time")


if __name__ == "__main__":
    main()
