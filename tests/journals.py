"""
Small hand-written journals, for judging timelines with no server started.

A test writes the timeline it describes, in milliseconds from the stop signal (negative before
it), and the builder turns it into journal events:

    journal = (
        Journal()
        .startup(-500)
        .request("r1", start=-100, end=200)
        .signal(0)
        .shutdown(250, complete=260)
        .exit(300)
    )
    verdict = journal.verdict(VerdictName.INFLIGHT_COMPLETED)
"""

from __future__ import annotations

from typing import Any

from chaos.journal import Event, Kind
from chaos.judge.timeline import Timeline, build
from chaos.judge.verdict import Verdict, VerdictName, judge
from chaos.scenario import Scenario

T0 = 1_000_000_000_000  # the stop signal's time in journal nanoseconds, when sent at 0 ms
WORKER = 4242  # the server's pid when a test names no other
HARNESS = 1000  # the harness's pid: signals, exit, the traffic driver


def ns(ms: float) -> int:
    """A time in milliseconds from the signal, as a journal time."""
    return T0 + round(ms * 1_000_000)


class Journal:
    """A journal under construction; every method appends events and returns the journal."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    # --- any event ------------------------------------------------------------------------------

    def add(self, ms: float, kind: str, pid: int = WORKER, **fields: Any) -> Journal:
        self.events.append(Event(t=ns(ms), pid=pid, kind=kind, fields=fields))
        return self

    # --- the harness ----------------------------------------------------------------------------

    def run_start(self, ms: float = -1000, scenario: Scenario | None = None, **extra: Any) -> Journal:
        """`run.start`, with a scenario and whatever else the run journals (`replay=`, `rollout=`)."""
        fields: dict[str, Any] = dict(extra)
        if scenario is not None:
            fields["scenario"] = scenario.to_dict()
        return self.add(ms, Kind.RUN_START, HARNESS, **fields)

    def signal(
        self, ms: float = 0, name: str = "SIGTERM", target: int = WORKER, handled: bool = True, comm: str = "python"
    ) -> Journal:
        return self.add(ms, Kind.SIGNAL_SENT, HARNESS, signal=name, target=target, handled=handled, comm=comm)

    def sigkill(self, ms: float, target: int = WORKER, after: float = 1.0) -> Journal:
        return self.add(ms, Kind.SIGKILL_SENT, HARNESS, target=target, after=after)

    def exit(self, ms: float, returncode: int = 0, killed: bool = False) -> Journal:
        exit_code = 128 - returncode if returncode < 0 else returncode
        return self.add(ms, Kind.SERVER_EXITED, HARNESS, returncode=returncode, exit_code=exit_code, killed=killed)

    def swept(self, ms: float, *escaped: str) -> Journal:
        """The end-of-run sweep: each of `escaped` (a command) outlived the servers and was killed."""
        for number, command in enumerate(escaped):
            self.add(ms, Kind.PROCESS_ESCAPED, HARNESS, target=9000 + number, command=command, found="descendant")
        return self.add(ms, Kind.PROCESSES_SWEPT, HARNESS, escaped=len(escaped))

    def killed(self, ms: float, target: int = WORKER) -> Journal:
        """SIGKILL at the deadline, and the exit it causes."""
        return self.sigkill(ms, target).exit(ms + 1, returncode=-9, killed=True)

    def integrity(self, ms: float, problems: list[str], check: str = "app.integrity:check") -> Journal:
        return self.add(ms, Kind.INTEGRITY_CHECKED, HARNESS, check=check, problems=problems)

    # --- Kubernetes -----------------------------------------------------------------------------

    def pod_deleted(self, ms: float, grace: float = 30, **fields: Any) -> Journal:
        return self.add(ms, Kind.POD_DELETED, HARNESS, grace=grace, **fields)

    def router_removed(self, ms: float, endpoint: str = "pod") -> Journal:
        return self.add(ms, Kind.ROUTER_REMOVED, HARNESS, endpoint=endpoint)

    # --- the app's process ----------------------------------------------------------------------

    def startup(self, ms: float = -900, pid: int = WORKER) -> Journal:
        self.add(ms - 1, Kind.STARTUP_RECEIVED, pid)
        return self.add(ms, Kind.STARTUP_COMPLETE, pid)

    def shutdown(
        self, ms: float, complete: float | None = None, failed: str | None = None, pid: int = WORKER
    ) -> Journal:
        """Lifespan shutdown received at `ms`, then completed (or failed) if given."""
        self.add(ms, Kind.SHUTDOWN_RECEIVED, pid)
        if complete is not None:
            self.add(complete, Kind.SHUTDOWN_COMPLETE, pid)
        if failed is not None:
            self.add(ms + 1, Kind.SHUTDOWN_FAILED, pid, message=failed)
        return self

    def pool(self, opened: float, closed: float | None = None, pid: int = WORKER) -> Journal:
        self.add(opened, Kind.POOL_OPEN, pid, pool="main")
        if closed is not None:
            self.add(closed, Kind.POOL_CLOSED, pid, pool="main")
        return self

    def resource(
        self,
        resource_id: str,
        opened: float,
        closed: float | None = None,
        *,
        name: str = "postgresql://db:5432/shop",
        type: str = "asyncpg pool",
        library: str = "asyncpg",
        how: str = "close",
        request: str | None = None,
        task: str | None = None,
        pid: int = WORKER,
    ) -> Journal:
        """A resource the probe saw opened at `opened` (by a request or task, if named), and closed."""
        owner = {key: value for key, value in (("request", request), ("task", task)) if value is not None}
        self.add(opened, Kind.RESOURCE_OPEN, pid, resource=resource_id, name=name, type=type, library=library, **owner)
        if closed is not None:
            self.add(closed, Kind.RESOURCE_CLOSED, pid, resource=resource_id, how=how)
        return self

    def use(
        self,
        resource_id: str,
        start: float,
        end: float | None = None,
        *,
        op: str = "fetch SELECT 1",
        use: str | None = None,
        error: str | None = None,
        request: str | None = None,
        task: str | None = None,
        thread: str | None = None,
        host: str | None = None,
        pid: int = WORKER,
    ) -> Journal:
        """
        One use of a resource from `start` to `end`, by whom it names, written as the probe does:
        one line at its end with its start in it; or, when it never ended (`end=None`), or began
        on a closed resource (`use=` an id), a line at its start and (if it ended) `use_end`.
        """
        who = {k: v for k, v in (("request", request), ("task", task), ("thread", thread)) if v is not None}
        extra = {"host": host} if host else {}
        failed = {"error": error} if error else {}
        if end is not None and use is None:
            fields = {**who, **extra, **failed}
            self.add(end, Kind.RESOURCE_USE, pid, resource=resource_id, op=op, start=ns(start), **fields)
            return self
        use = use or f"u{len(self.events)}"
        self.add(start, Kind.RESOURCE_USE, pid, resource=resource_id, use=use, op=op, **who, **extra)
        if end is not None:
            self.add(end, Kind.RESOURCE_USE_END, pid, resource=resource_id, use=use, **who, **failed)
        return self

    def request(
        self,
        request_id: str,
        start: float,
        end: float | None,
        *,
        client: str | None = "ok",
        status: int | None = 200,
        path: str = "/slow",
        method: str = "GET",
        role: str = "slow",
        outcome: str = "returned",
        pid: int = WORKER,
    ) -> Journal:
        """
        A request inside the app from `start` to `end` (None: its call never ended), and what the
        client saw just after (`client=None`: no client record).
        """
        self.add(start, Kind.REQUEST_START, pid, request=request_id, path=path, method=method)
        if end is not None:
            if status is not None:
                self.add(end - 0.2, Kind.RESPONSE_START, pid, request=request_id, status=status)
                self.add(end - 0.1, Kind.RESPONSE_END, pid, request=request_id)
            self.add(end, Kind.REQUEST_END, pid, request=request_id, outcome=outcome)
        if client is not None:
            seen = (end if end is not None else start) + 1
            self.client(request_id, seen, client, sent=start - 1, status=status, path=path, method=method, role=role)
        return self

    def client(
        self,
        request_id: str,
        ms: float,
        outcome: str = "ok",
        *,
        sent: float | None = None,
        status: int | None = 200,
        path: str = "/",
        method: str = "GET",
        role: str = "steady",
    ) -> Journal:
        """What the traffic driver saw of one request (sent at `sent`, answered at `ms`)."""
        fields: dict[str, Any] = {"id": request_id, "role": role, "method": method, "path": path}
        fields["sent"] = ns(sent if sent is not None else ms - 1)
        if status is not None and outcome in ("ok", "server-error", "truncated"):
            fields["status"] = status
        return self.add(ms, Kind.CLIENT_REQUEST, HARNESS, outcome=outcome, **fields)

    def task(
        self,
        task_id: str,
        queued: float,
        started: float | None = None,
        *,
        finished: float | None = None,
        cancelled: float | None = None,
        failed: str | None = None,
        request: str = "b1",
        name: str = "app.deliver",
        sync: bool = False,
        spawned: bool = False,
        pid: int = WORKER,
    ) -> Journal:
        """
        A background task (or, `spawned`, a task an endpoint created with `asyncio.create_task`):
        queued, then started, then finished, failed (at `finished`) or cancelled.
        """
        how = {"spawned": True} if spawned else {}
        self.add(queued, Kind.TASK_QUEUED, pid, task=task_id, name=name, request=request, sync=sync, **how)
        if started is not None:
            self.add(started, Kind.TASK_STARTED, pid, task=task_id)
        if cancelled is not None:
            self.add(cancelled, Kind.TASK_CANCELLED, pid, task=task_id)
        if finished is not None and failed is None:
            self.add(finished, Kind.TASK_FINISHED, pid, task=task_id)
        if finished is not None and failed is not None:
            self.add(finished, Kind.TASK_FAILED, pid, task=task_id, error=failed)
        return self

    def service(
        self,
        task_id: str,
        started: float,
        *,
        finished: float | None = None,
        cancelled: float | None = None,
        pending: float | None = None,
        cancel_requested: bool = False,
        name: str = "app.consume_jobs",
        pid: int = WORKER,
    ) -> Journal:
        """
        A task the app spawned during its lifespan startup (a queue consumer): no request's;
        `pending` when its lifespan shutdown completed with it still pending (and cancel asked).
        """
        self.add(started, Kind.TASK_QUEUED, pid, task=task_id, name=name, spawned=True, startup=True)
        self.add(started, Kind.TASK_STARTED, pid, task=task_id)
        if pending is not None:
            self.add(pending, Kind.TASK_PENDING, pid, task=task_id, cancel_requested=cancel_requested)
        if cancelled is not None:
            self.add(cancelled, Kind.TASK_CANCELLED, pid, task=task_id)
        if finished is not None:
            self.add(finished, Kind.TASK_FINISHED, pid, task=task_id)
        return self

    # --- reading it -----------------------------------------------------------------------------

    def timeline(self) -> Timeline:
        return build(sorted(self.events, key=lambda event: event.t))

    def verdicts(self) -> list[Verdict]:
        return judge(self.timeline())

    def verdict(self, name: VerdictName) -> Verdict:
        return next(verdict for verdict in self.verdicts() if verdict.name == name.value)


def graceful(pid: int = WORKER) -> Journal:
    """A server that drained: one slow request answered, lifespan shutdown after it, a clean exit."""
    return (
        Journal()
        .run_start()
        .startup(pid=pid)
        .request("r1", start=-100, end=200, pid=pid)
        .signal(0, target=pid)
        .shutdown(250, complete=260, pid=pid)
        .exit(300)
    )
