"""
The paced keep-alive load (`chaos.traffic.paced_load`, `drainspec k8s --load-rate`) against wrk,
through the same nginx (ingress-nginx's defaults, `chaos.k8s.ingress`) in front of the same
uvicorn, on the same endpoint and number of connections: requests/s of each and their ratio,
then the paced load held at a set rate (the rate it reached, every request journaled).

    .venv/bin/python bench/ingress_load.py [--seconds 3] [--connections 8] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from common import ROOT, uvicorn, workdir, wrk  # also puts the repository on sys.path

from chaos import target, traffic, waits
from chaos.journal import JournalWriter, read_journal
from chaos.k8s.ingress import NGINX_DEFAULTS, nginx_config


def paced(url: str, journal: Path, *, seconds: float, rate: float, connections: int) -> tuple[float, int, int]:
    """Requests/s the paced load reached, requests sent, and how many the journal holds."""

    async def measure() -> traffic.PacedStats:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        writer = JournalWriter(journal)
        try:
            return await traffic.paced_load(url, "/healthz", writer, stop, rate=rate, connections=connections)
        finally:
            writer.close()

    stats = asyncio.run(measure())
    journaled = len(read_journal(journal))
    journal.unlink()
    return stats.rate, stats.sent, journaled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=2000.0, help="the set rate of the second measurement")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    with workdir() as work, uvicorn("app.main:app", probe=False, workdir=work) as server:
        proxy = work / "nginx"
        (proxy / "tmp").mkdir(parents=True)
        port = target.free_port()
        upstream = int(server.url.rsplit(":", 1)[1])
        config = proxy / "nginx.conf"
        config.write_text(nginx_config(proxy, port, [upstream], NGINX_DEFAULTS))
        process = target.spawn(
            [nginx, "-p", str(proxy), "-e", str(proxy / "error.log"), "-c", str(config)],
            env={},
            cwd=ROOT,
            log=proxy / "nginx.out",
        )
        try:
            asyncio.run(waits.wait_port(process, port=port, timeout=10, log=proxy / "nginx.out"))
            url = f"http://{target.HOST}:{port}"
            seconds = max(1, round(args.seconds))
            ours, sent, journaled = paced(url, work / "j1.jsonl", seconds=seconds, rate=0, connections=args.connections)
            theirs = wrk(url + "/healthz", connections=args.connections, seconds=seconds)
            held, held_sent, held_journaled = paced(
                url, work / "j2.jsonl", seconds=seconds, rate=args.rate, connections=args.connections
            )
        finally:
            target.reap(process)
    print(f"ingress_load.py ({seconds} s per measurement, {args.connections} keep-alive connections, nginx -> uvicorn)")
    print(f"GET /healthz  paced load (max)  {ours:8.0f} req/s  ({sent} sent, {journaled} journaled)")
    print(f"GET /healthz  wrk -t2           {theirs:8.0f} req/s")
    print(f"ratio {ours / theirs:.3f}")
    reached = f"{held:.0f} req/s reached ({held_sent} sent, {held_journaled} journaled)"
    print(f"paced load set to {args.rate:g} req/s: {reached}")


if __name__ == "__main__":
    main()
