"""What every benchmark shares: a server started and reaped by hand, and wrk."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos import target  # noqa: E402
from chaos.lifecycle import server_environment  # noqa: E402
from chaos.scenario import Scenario  # noqa: E402


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    url: str


@contextmanager
def uvicorn(app: str, *, probe: bool, workdir: Path) -> Iterator[Server]:
    """uvicorn on `app`, bare or wrapped in drainspec's probe (journal on), always reaped."""
    port = target.free_port()
    env: Mapping[str, str]
    if probe:
        env = server_environment(Scenario(app=app), workdir, workdir / "journal.jsonl")
        argv = target.server_argv("uvicorn", port)
    else:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DRAINSPEC_RUN_DIR": str(workdir)}
        argv = [sys.executable, "-m", "uvicorn", app, "--host", target.HOST, "--port", str(port)]
    (workdir / "data").mkdir(exist_ok=True)
    process = target.spawn(argv, env=env, cwd=ROOT, log=workdir / "server.log")
    try:
        asyncio.run(target.wait_port(process, port=port, timeout=20, log=workdir / "server.log"))
        yield Server(process, f"http://{target.HOST}:{port}")
    finally:
        target.reap(process)


def wrk_output(url: str, *, connections: int = 50, seconds: int = 5) -> str:
    """What wrk (two threads) printed for `seconds` of load on `url`."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    return result.stdout


def wrk(url: str, *, connections: int = 50, seconds: int = 5) -> float:
    """Requests per second measured by wrk (two threads)."""
    output = wrk_output(url, connections=connections, seconds=seconds)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        sys.exit(f"cannot read wrk's output:\n{output}")
    return float(match.group(1))


@contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="drainspec-bench-") as path:
        yield Path(path)
