"""
One run's lifetime, whatever the mode (`run`, a Kubernetes replay, a rolling update):

    open:   a private run directory, the journal writer, the server's environment, and the
            one client timeout (`Scenario.client_timeout`)
    during: every server, pod, router and helper process the play starts is registered here
    close:  routers closed, helpers killed, every process tree reaped, the journal closed, and
            the events read back in time order (`Run.events`)

A play (`chaos.runner`, `chaos.k8s.replay`, `chaos.k8s.rollout`) only says what happens in
between. Whatever it raises, nothing it started outlives the `async with`.

A run opens without an event loop (`Run.open`), and this module loads no asyncio: `drainspec run`
spawns its server before the rest of drainspec loads (`chaos.runner`). The coroutines below run
inside a loop, so asyncio is there by then; they import it where they use it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaos import arbiter, outdir, target
from chaos.environment import APP_ENV, INSTRUMENT_ENV, JOURNAL_ENV, STALL_ENV
from chaos.errors import JournalError, SetupError
from chaos.journal import Event, JournalTail, JournalWriter, Kind, fold_segments, read_journal, segments_of
from chaos.scenario import K8sOptions, Scenario

if TYPE_CHECKING:  # loaded by the replays that use them, not by every run before its spawn
    import asyncio

    from chaos.descendants import Descendants
    from chaos.k8s.pod import Pod
    from chaos.k8s.router import Router

JOURNAL_FILE = "journal.jsonl"
SERVER_LOG = "server.log"
DATA_DIR = "data"  # the app's private, empty directory: DRAINSPEC_RUN_DIR
RUN_DIR_ENV = "DRAINSPEC_RUN_DIR"
HELPER_WAIT_SECONDS = 5.0


PREVIOUS_RUN_FILES = (
    JOURNAL_FILE,
    segments_of(JOURNAL_FILE).name,
    SERVER_LOG,
    DATA_DIR,
    "report.json",
    "timeline.html",
    "junit.xml",
    "drainspec-crash.txt",
)
"""What a previous run left in a directory of ours, deleted before the next (with every `*.log`)."""


def _empty(directory: outdir.OutputDir) -> None:
    """Delete the previous run's files from a claimed directory, and give the app an empty `data/`."""
    try:
        outdir.clear(directory, PREVIOUS_RUN_FILES, suffixes=(".log",))
        directory.mkdir(DATA_DIR)
    except OSError as exc:
        raise SetupError(f"cannot prepare {directory.path} for the run's files: {exc.strerror}") from None


def prepare_run_dir(path: str | os.PathLike[str]) -> Path:
    """
    A private directory for one run's files (0700), emptied of a previous run's files. Only a
    new, empty or drainspec-marked directory is used (`chaos.outdir`): anything else is a
    `SetupError`, never a directory drainspec empties.
    """
    with outdir.claimed(path) as directory:
        _empty(directory)
        return directory.path


def server_environment(scenario: Scenario, run_dir: Path, journal: Path, cwd: str) -> dict[str, str]:
    """
    The environment every server of the run gets: the probe's settings, the app to wrap (when
    known), the user's `--env`, and the tools installed beside drainspec first on PATH (they are
    what the container image would hold).
    """
    env = dict(os.environ)
    env[JOURNAL_ENV] = str(journal)
    env[STALL_ENV] = str(scenario.stall_ms)
    if scenario.app:
        env[APP_ENV] = scenario.app
    env[RUN_DIR_ENV] = str(run_dir / DATA_DIR)
    if not scenario.instrument:
        env[INSTRUMENT_ENV] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(scenario.env)
    # After the user's and the image's own (`ENV PATH="/opt/venv/bin:$PATH"`, `ENV PYTHONPATH=/app`):
    # paths of an image that do not exist here must not hide the tools and the app that do.
    env["PYTHONPATH"] = _first_on(cwd, env.get("PYTHONPATH"))
    env["PATH"] = _first_on(str(Path(sys.executable).parent), env.get("PATH", os.defpath))
    return env


def _first_on(directory: str, search_path: str | None) -> str:
    """`search_path` with `directory` first (once), and no empty entry (which would mean the cwd)."""
    rest = [entry for entry in (search_path or "").split(os.pathsep) if entry and entry != directory]
    return os.pathsep.join([directory, *rest] if directory else rest)


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
    # What ran before the run began: none of its own (`Descendants`).
    _before: frozenset[int] = field(default_factory=target.running_pids)
    # Every process below a server, ever: what left the tree is still found and killed at the end.
    _tracked: Descendants | None = None
    _subreaper: bool = False
    _logs: list[Path] = field(default_factory=list)  # each server's log, read for its arbiter's account
    _started: float = field(default_factory=time.time)
    _directory: outdir.OutputDir | None = None  # claimed by `open`, released by `close`
    cwd: str = field(default_factory=os.getcwd)  # where servers run, and import the app from

    @classmethod
    def open(cls, scenario: Scenario, run_dir: str | os.PathLike[str], *, cwd: Path | None = None) -> Run:
        """
        Open a run in `run_dir`: the directory claimed and emptied, the journal created. No event
        loop is needed, so a run can spawn its server before asyncio loads; whoever opens a run
        closes it (`close`), as `open_run` does.
        """
        directory = outdir.claim(run_dir)
        try:
            _empty(directory)
            journal_path = directory.path / JOURNAL_FILE
            try:
                journal = JournalWriter(journal_path, fd=directory.create(JOURNAL_FILE))
            except OSError as exc:
                raise SetupError(f"cannot create the journal {journal_path}: {exc.strerror}") from None
        except BaseException:
            outdir.release(directory)
            raise
        where = str(cwd) if cwd is not None else os.getcwd()
        env = server_environment(scenario, directory.path, journal_path, where)
        return cls(scenario, directory.path, journal, env, _directory=directory, cwd=where)

    async def close(self, *, strict: bool) -> None:
        """
        Reap everything, close the journal and read it back, release the directory. A journal
        that cannot be read (the app wrote a malformed event into it) is an error of its own when
        the play went well (`strict`); after a failed play, what can be read is kept and the
        play's error is the one reported.
        """
        try:
            await self.finish()
        finally:
            try:
                try:
                    fold_segments(self.journal)  # the servers are gone: the journal becomes one file
                except JournalError:
                    if strict:
                        raise
                self.journal.close()
                try:
                    self.events = read_journal(self.journal_path)
                except JournalError:
                    if strict:
                        raise
            finally:
                if self._directory is not None:
                    outdir.release(self._directory)
                    self._directory = None

    @property
    def _descendants(self) -> Descendants:
        """The tracker of every process below the run's servers, made (and psutil loaded) at the first spawn."""
        if self._tracked is None:
            from chaos.descendants import Descendants

            self._tracked = Descendants(self._before)
        return self._tracked

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
        if shutil.which(program, path=self.env.get("PATH")) is not None:
            return
        if "/" in program and Path(program).is_file():  # a script checked out without its mode bits
            raise SetupError(
                f"{program!r}, {what}, is here but not executable (the image's COPY --chmod or RUN chmod "
                f"makes it so); chmod +x {shlex.quote(program)}"
            )
        raise SetupError(f"{program!r}, {what}, was not found here; install it or put it on PATH")

    def spawn(
        self, argv: Sequence[str], *, log: Path | None = None, journal_as: Kind | None = None
    ) -> subprocess.Popen[bytes]:
        """
        Start a server (`chaos.target.spawn`); it is reaped when the run closes. `journal_as` is
        the event that says so (its pid and argv), written the moment the process exists: the
        tracking of its descendants that follows loads psutil while the server boots.
        """
        if not self._subreaper:
            target.become_subreaper()
            self._subreaper = True
        process = target.spawn(argv, env=self.env, cwd=self.cwd, log=log or self.log)
        if journal_as is not None:
            self.journal.write(journal_as, target=process.pid, argv=list(argv))
        self._processes.append(process)
        self._logs.append(log or self.log)
        self._descendants.add_root(process.pid)
        return process

    async def start_pod(self, argv: Sequence[str], *, log: Path | None = None, namespace: bool = True) -> Pod:
        """Start a container's command as PID 1 of a new PID namespace; reaped when the run closes."""
        from chaos.k8s.pod import start_pod

        pod = await start_pod(argv, env=self.env, cwd=self.cwd, log=log or self.log, namespace=namespace)
        self._processes.append(pod.process)
        self._logs.append(log or self.log)
        self._descendants.add_root(pod.process.pid)
        return pod

    async def router(self, options: K8sOptions, propagation: float) -> Router:
        """The Service in front of the pods, listening on 127.0.0.1; closed when the run closes."""
        from chaos.k8s.router import Router

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
        import asyncio

        if tasks:
            await asyncio.wait(tasks, timeout=self.client_timeout)
        await self.cancel(tasks)

    async def cancel(self, tasks: Sequence[asyncio.Task[Any]]) -> None:
        """Cancel the clients at once (the play failed or is done with them)."""
        import asyncio

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
            import asyncio

            with contextlib.suppress(ProcessLookupError):
                helper.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(helper.wait(), HELPER_WAIT_SECONDS)
        self._journal_orphans()
        for process in self._processes:
            target.reap(process)
        if self._subreaper:
            # Whatever the reaping killed, unjournaled: its SIGKILL was drainspec's cleanup (as the
            # container runtime's when PID 1 exits), not how the server treated its worker.
            target.collect_orphans(self._orphan_candidates(), timeout=0)
            target.release_subreaper()
            self._subreaper = False
        if self._processes:
            self._sweep_escaped()

    def _journal_orphans(self) -> None:
        """
        How each worker died, as `worker.exited`, once every server has exited on its own (while
        one still runs, its workers are its own to reap). A worker its server left behind was
        handed to drainspec (the subreaper), which reads its exit status; one its server reaped
        after killing it is in the server's log (`chaos.arbiter`). gunicorn SIGKILLs the workers
        left at its graceful timeout, and which of the two reaps each is a race.
        """
        if not self._processes or any(process.poll() is None for process in self._processes):
            return
        candidates = self._orphan_candidates()
        reaper = "its exit status read by drainspec, its subreaper: its server exited without reaping it"
        accounts = [(orphan, reaper) for orphan in target.collect_orphans(candidates)]
        reaped = {orphan.pid for orphan, _ in accounts}
        unaccounted = [pid for pid in candidates if pid not in reaped]
        for log in dict.fromkeys(self._logs):
            for death in arbiter.deaths_in_log(log, unaccounted):
                accounts.append((death, f"its server's log: 'Worker (pid:{death.pid}) was sent {death.signal}!'"))
                unaccounted.remove(death.pid)
        for orphan, account in accounts:
            how = {"signal": orphan.signal} if orphan.signal else {"exit_code": orphan.exit_code}
            self.journal.write(Kind.WORKER_EXITED, target=orphan.pid, account=account, **how)

    def _orphan_candidates(self) -> list[int]:
        """Every pid ever below the servers, but never a child we hold a handle to (a server, a guardian)."""
        ours = {process.pid for process in self._processes} | target.guardian_pids()
        return [pid for pid in self._descendants.members() if pid not in ours]

    def _sweep_escaped(self) -> None:
        """
        Kill what the servers started that outlived them, and journal each as `process.escaped`:
        a process seen below a server that left its tree (`setsid`, a double fork, an orphan),
        or any process carrying this run's journal in its environment (it came from a server).
        Nothing the app started may outlive the run, and a verifier must say when it tried to.
        """
        from chaos import descendants  # loaded since the first spawn (`_descendants`)

        self._descendants.stop()
        escaped = descendants.kill_escaped(self._descendants.survivors(), "descendant")
        known = {item.pid for item in escaped}
        carrying = descendants.carrying_environment(
            JOURNAL_ENV, str(self.journal_path), since=self._started, among=self._descendants.newcomers()
        )
        escaped += descendants.kill_escaped([p for p in carrying if p.pid not in known], "environment")
        for item in escaped:
            self.journal.write(Kind.PROCESS_ESCAPED, target=item.pid, command=item.command, found=item.found)
        self.journal.write(Kind.PROCESSES_SWEPT, escaped=len(escaped))


@contextlib.asynccontextmanager
async def open_run(
    scenario: Scenario, run_dir: str | os.PathLike[str], *, cwd: Path | None = None
) -> AsyncIterator[Run]:
    """
    Open a run in `run_dir`; on leaving, reap everything it started and read its journal back
    into `Run.events` (also when the play raised, so a caller can still show what happened).
    """
    async with closing(Run.open(scenario, run_dir, cwd=cwd)) as run:
        yield run


@contextlib.asynccontextmanager
async def closing(run: Run) -> AsyncIterator[Run]:
    """Close an open run on leaving: strictly when the play went well, keeping its error when not."""
    try:
        yield run
    except BaseException:
        await run.close(strict=False)
        raise
    await run.close(strict=True)
