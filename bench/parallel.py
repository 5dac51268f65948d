"""
`drainspec chaos --jobs 2` against `--jobs 1`: the wall time of the same seeded experiment (the
reference app, `--runs N`), one after the other in the same session, and their ratio.
Target: at most 0.6 on 2 cores. The two experiments must also agree run for run (same seed).

    .venv/bin/python bench/parallel.py [--runs 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import ROOT, workdir  # also puts the repository on sys.path


def experiment(jobs: int, runs: int, out: str) -> tuple[float, str]:
    """Wall seconds of one `drainspec chaos`, and its summary lines (without timings)."""
    argv = [sys.executable, "-m", "chaos", "chaos", "--app", "app.main:app", "--runs", str(runs)]
    argv += ["--seed", "7", "--jobs", str(jobs), "--requests", "2", "--request-seconds", "0.3", "--out", out]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    took = time.monotonic() - started
    if done.returncode not in (0, 1):
        sys.exit(f"drainspec chaos --jobs {jobs} exited {done.returncode}:\n{done.stderr}")
    return took, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with workdir() as work:
        serial, serial_out = experiment(1, args.runs, str(work / "serial"))
        parallel, parallel_out = experiment(2, args.runs, str(work / "parallel"))
    verdict = "meets" if parallel / serial <= 0.6 else "ABOVE"
    print(f"drainspec chaos --runs {args.runs} --jobs 1: {serial:6.1f} s")
    print(f"drainspec chaos --runs {args.runs} --jobs 2: {parallel:6.1f} s")
    print(f"ratio {parallel / serial:.2f} ({verdict} target: at most 0.6)")
    same = [line for line in serial_out.splitlines() if "run " in line] == [
        line for line in parallel_out.splitlines() if "run " in line
    ]
    print("results run for run: " + ("identical" if same else "DIFFERENT (see the two outputs)"))


if __name__ == "__main__":
    main()
