"""
What drainspec adds to a run, in seconds: the wall time of a whole `drainspec run` (the CLI's
start-up, the run, writing every report) minus the server's own life from spawn to exit, both
from the same run (the journal's `server.spawned` and `server.exited`). The rest is drainspec:
starting the CLI, waiting on evidence, the preflight, reaping, judging and writing the reports.
Targets: under 0.15 s per run; the preflight under 5 % of the wall time.

drainspec is byte-compiled first, as pip does when it installs the wheel: a checkout run with
PYTHONDONTWRITEBYTECODE set (as on these machines) would otherwise compile every module on
every run, a cost no installed drainspec pays. It runs as a user runs it: the `drainspec` command
installed beside this Python (`python -m chaos.cli` where there is none, which adds runpy).
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, workdir

ARGS = [
    "--app", "app.main:app", "--requests", "3", "--request-seconds", "1",
    "--request-path", "GET /slow?seconds={seconds}", "--background", "1", "--background-seconds", "1",
    "--background-path", "POST /register/{id}?deliver_seconds={seconds}", "--grace", "10", "--quiet",
]  # fmt: skip
ADDED_TARGET_SECONDS = 0.15
INSTALLED = Path(sys.executable).with_name("drainspec")
DRAINSPEC = [str(INSTALLED)] if INSTALLED.exists() else [sys.executable, "-m", "chaos.cli"]
PREFLIGHT_TARGET = 0.05


def once() -> tuple[float, float, float]:
    """(wall seconds, server spawn-to-exit seconds, preflight seconds) of one `drainspec run`."""
    with workdir() as path:
        out = path / "run"
        started = time.perf_counter()
        subprocess.run([*DRAINSPEC, "run", *ARGS, "--out", str(out)], cwd=ROOT, check=True)
        wall = time.perf_counter() - started
        events = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines() if line.strip()]
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["kind"], event)
    server = (first["server.exited"]["t"] - first["server.spawned"]["t"]) / 1e9
    preflight = [e for e in events if e["kind"] == "client.request" and e.get("role") == "preflight"]
    preflight_seconds = sum((e["t"] - e["sent"]) / 1e9 for e in preflight)
    return wall, server, preflight_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    compileall.compile_dir(ROOT / "chaos", quiet=1)
    measured = [once() for _ in range(runs)]
    wall = statistics.median(m[0] for m in measured)
    added = statistics.median(m[0] - m[1] for m in measured)
    preflight = statistics.median(m[2] / m[0] for m in measured)
    print(f"runs: {runs} (median)")
    print(f"drainspec run, wall time:                  {wall:.3f} s")
    print(f"server, spawn to exit (from the journal):  {wall - added:.3f} s")
    verdict = "meets" if added <= ADDED_TARGET_SECONDS else "ABOVE"
    print(
        f"drainspec adds:                            {added:.3f} s ({verdict} target: at most {ADDED_TARGET_SECONDS} s)"
    )
    verdict = "meets" if preflight < PREFLIGHT_TARGET else "ABOVE"
    print(f"preflight share of the wall time:          {preflight * 100:.1f} % ({verdict} target: under 5 %)")


if __name__ == "__main__":
    main()
