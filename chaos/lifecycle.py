"""
One run's lifetime, whatever the mode (`run`, a Kubernetes replay, a rolling update):

    open:   a private run directory, the journal writer, the server's environment, and the
            one client timeout (`Scenario.client_timeout`)
    during: every server, pod, router and helper process the play starts is registered here
    close:  routers closed, helpers killed, every process tree reaped, the journal closed, and
            the events read back in time order (`Run.events`)

A play (`chaos.runner`, `chaos.k8s.replay`, `chaos.k8s.rollout`) only says what happens in
between. Whatever it raises, nothing it started outlives the `async with`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos import target
from chaos.errors import SetupError
from chaos.journal import Event, JournalTail, JournalWriter, read_journal
from chaos.k8s.pod import Pod, start_pod
from chaos.k8s.router import Router
from chaos.probe import APP_ENV, JOURNAL_ENV, STALL_ENV
from chaos.scenario import K8sOptions, Scenario

JOURNAL_FILE = "journal.jsonl"
SERVER_LOG = "server.log"
DATA_DIR = "data"  # the app's private, empty directory: DRAINSPEC_RUN_DIR
RUN_DIR_ENV = "DRAINSPEC_RUN_DIR"
HELPER_WAIT_SECONDS = 5.0


def prepare_run_dir(path: str | os.PathLike[str]) -> Path:
    """A private directory for one run's files (0700), emptied of a previous run's journal."""
    run_dir = Path(path).resolve()
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_dir.chmod(0o700)
    except OSError as exc:
        raise SetupError(f"cannot use {run_dir} for the run's files: {exc.strerror}") from None
    for name in (JOURNAL_FILE, SERVER_LOG):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    data = run_dir / DATA_DIR
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(mode=0o700)
    return run_dir


def server_environment(scenario: Scenario, run_dir: Path, journal: Path) -> dict[str, str]:
    """
    The environment every server of the run gets: the probe's settings, the app to wrap (when
    known), the user's `--env`, and the tools installed beside drainspec first on PATH (they are
    what the container image would hold).
    """
    env = dict(os.environ)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    env[JOURNAL_ENV] = str(journal)
    env[STALL_ENV] = str(scenario.stall_ms)
    if scenario.app:
        env[APP_ENV] = scenario.app
    env[RUN_DIR_ENV] = str(run_dir / DATA_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(scenario.env)
    return env


@dataclass
class Run:
    """The handle a play works with; everything it starts goes through it."""

    scenario: Scenario
    run_dir: Path
    journal: JournalWriter
    env: dict[str, str]
    events: list[Event] = field(default_factory=list)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _routers: list[Router] = field(default_factory=list)
    _helpers: list[asyncio.subprocess.Process] = field(default_factory=list)
    _finished: bool = False

    @property
    def journal_path(self) -> Path:
        return self.run_dir / JOURNAL_FILE

    @property
    def log(self) -> Path:
        return self.run_dir / SERVER_LOG

    @property
    def client_timeout(self) -> float:
        return self.scenario.client_timeout

    def tail(self) -> JournalTail:
        """A reader of the journal from its start, for waiting on evidence."""
        return JournalTail(self.journal_path)

    def require_command(self, program: str, what: str = "the container's command") -> None:
        if shutil.which(program, path=self.env.get("PATH")) is None:
            raise SetupError(f"{program!r}, {what}, was not found here; install it or put it on PATH")

    def spawn(self, argv: Sequence[str], *, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a server (`chaos.target.spawn`); it is reaped when the run closes."""
        process = target.spawn(argv, env=self.env, cwd=os.getcwd(), log=log or self.log)
        self._processes.append(process)
        return process

    async def start_pod(self, argv: Sequence[str], *, log: Path | None = None, namespace: bool = True) -> Pod:
        """Start a container's command as PID 1 of a new PID namespace; reaped when the run closes."""
        pod = await start_pod(argv, env=self.env, cwd=os.getcwd(), log=log or self.log, namespace=namespace)
        self._processes.append(pod.process)
        return pod

    async def router(self, options: K8sOptions, propagation: float) -> Router:
        """The Service in front of the pods, listening on 127.0.0.1; closed when the run closes."""
        router = Router(
            self.journal,
            propagation=propagation,
            latency=options.latency,
            reset_rate=options.reset_rate,
            seed=options.seed,
        )
        self._routers.append(router)
        await router.start()
        return router

    def helper_started(self, process: asyncio.subprocess.Process) -> None:
        """A helper (an exec hook's `nsenter`) to kill if it still runs when the run closes."""
        self._helpers.append(process)

    async def settle(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Let the clients finish, bounded by the client timeout; cancel whatever has not."""
        if tasks:
            await asyncio.wait(tasks, timeout=self.client_timeout)
        await self.cancel(tasks)

    async def cancel(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Cancel the clients at once (the play failed or is done with them)."""
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def finish(self) -> None:
        """Close routers, kill helpers, reap every process tree. Safe to call more than once."""
        if self._finished:
            return
        self._finished = True
        for router in self._routers:
            await router.close()
        for helper in self._helpers:
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(helper.wait(), HELPER_WAIT_SECONDS)
        for process in self._processes:
            target.reap(process)


@contextlib.asynccontextmanager
async def open_run(scenario: Scenario, run_dir: str | os.PathLike[str]) -> AsyncIterator[Run]:
    """
    Open a run in `run_dir`; on leaving, reap everything it started and read its journal back
    into `Run.events` (also when the play raised, so a caller can still show what happened).
    """
    directory = prepare_run_dir(run_dir)
    journal_path = directory / JOURNAL_FILE
    journal = JournalWriter(journal_path)
    run = Run(scenario, directory, journal, server_environment(scenario, directory, journal_path))
    try:
        yield run
    finally:
        try:
            await run.finish()
        finally:
            journal.close()
            with contextlib.suppress(Exception):
                run.events = read_journal(journal_path)
