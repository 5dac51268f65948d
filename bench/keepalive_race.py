"""
How often a replay reproduces the keep-alive race, with and without the emulated network
between nginx and the pod (`drainspec k8s --link-delay`, `chaos.k8s.link`): seeded replays of
`k8s/ingress/keepalive-below-proxy.yaml` (uvicorn --timeout-keep-alive 1, nginx pooling for
60 s) with bursts of POSTs aimed at the pod's close (`--load-bursts`), each counted as
reproduced when `no-proxy-errors` fails with 502s named as the keep-alive race.

    .venv/bin/python bench/keepalive_race.py [--runs 10] [--bursts 6] [--delay 0.001]

The runs of both kinds alternate, so a busy moment of the machine falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, workdir  # also puts the repository on sys.path

MANIFEST = ROOT / "k8s" / "ingress" / "keepalive-below-proxy.yaml"


def reproduced(out: str, *, seed: int, bursts: int, delay: float) -> tuple[bool, int, int]:
    """One seeded replay: whether the race showed, its 502s, and the requests the link saw land late."""
    argv = [
        sys.executable,
        "-m",
        "chaos",
        "k8s",
        str(MANIFEST),
        "--ingress",
        "nginx",
        "--load-bursts",
        str(bursts),
        "--load-connections",
        "32",
        "--seed",
        str(seed),
        "--out",
        out,
    ]
    if delay:
        argv += ["--link-delay", str(delay)]
    subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=300, check=False)
    report = json.loads((Path(out) / "report.json").read_text())
    verdict = next(v for v in report["verdicts"] if v["name"] == "no-proxy-errors")
    errors = int(verdict["summary"].split(" of ")[0]) if verdict["status"] == "fail" else 0
    late = sum(1 for line in (Path(out) / "journal.jsonl").open() if '"link.late_request"' in line)
    return verdict["status"] == "fail" and "keep-alive" in verdict["summary"], errors, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.001)
    args = parser.parse_args()
    counts = {0.0: 0, args.delay: 0}
    with workdir() as work:
        for seed in range(1, args.runs + 1):
            for delay in counts:
                hit, errors, late = reproduced(
                    str(work / f"seed{seed}-{delay}"), seed=seed, bursts=args.bursts, delay=delay
                )
                counts[delay] += hit
                print(
                    f"seed {seed:>2} link {delay * 1000:g} ms: {'race' if hit else 'none':<4} {errors:>3} x 502, "
                    f"{late:>3} late on the link",
                    flush=True,
                )
    for delay, hits in counts.items():
        print(f"link {delay * 1000:g} ms: reproduced in {hits} of {args.runs} seeded runs")


if __name__ == "__main__":
    main()
