"""
One run's journal, folded into what the verdicts and reports reason about: each server worker
(its lifespan and pool), each request (server view and client view side by side), each
background task, and the harness's clock (signal, SIGKILL, exit).

Times stay in journal nanoseconds; `Timeline.at` renders them relative to the stop signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.journal import Event, Kind
from chaos.scenario import Scenario


@dataclass
class WorkerView:
    """One server process that loaded the probe (a worker, or the only process)."""

    pid: int
    # Journal times (monotonic ns), None until the journal shows them.
    startup_complete: int | None = None
    shutdown_received: int | None = None
    shutdown_complete: int | None = None
    shutdown_failed: str | None = None
    pool_closed: int | None = None
    last_event: int = 0

    @property
    def teardown(self) -> int | None:
        """When teardown began: lifespan shutdown, or the pool closing, whichever came first."""
        starts = [t for t in (self.shutdown_received, self.pool_closed) if t is not None]
        return min(starts) if starts else None

    @property
    def teardown_cause(self) -> str:
        if self.pool_closed is not None and (
            self.shutdown_received is None or self.pool_closed < self.shutdown_received
        ):
            return "the pool closed"
        return "lifespan shutdown began"


@dataclass
class RequestView:
    """A request as the server saw it (probe events) and as the client saw it."""

    id: str
    pid: int | None = None
    path: str = ""
    # The server's view, in journal times: start, response status and last byte, end of the call.
    start: int | None = None
    status: int | None = None
    response_end: int | None = None
    end: int | None = None
    end_outcome: str | None = None
    last_seen: int | None = None  # the app's last event naming this request (threads included)
    # The client's view: its `client.request` event (outcome, status, send time).
    client: Event | None = None

    @property
    def work_end(self) -> int | None:
        """
        When the request's work really stopped: the end of its ASGI call, or later, when the
        app still journaled work for it (a `def` endpoint's thread outlives a cancelled call).
        """
        if self.end is None:
            return None
        return max(self.end, self.last_seen or self.end)

    @property
    def client_outcome(self) -> str | None:
        return None if self.client is None else str(self.client.get("outcome"))


@dataclass
class TaskView:
    """A background task: Starlette's, or an asyncio task an endpoint spawned."""

    id: str
    pid: int
    name: str = "?"
    request: str | None = None
    sync: bool = False
    spawned: bool = False
    # Journal times of each step of its life; `failed` holds the exception's text.
    queued: int | None = None
    started: int | None = None
    finished: int | None = None
    failed: str | None = None
    # CancelledError inside the task; a sync task's thread may run on after it.
    cancelled: int | None = None

    @property
    def work_end(self) -> int | None:
        """When the task's work really stopped. A cancelled sync task's thread runs on."""
        if self.finished is not None:
            return self.finished
        if self.cancelled is not None and not self.sync:
            return self.cancelled
        return None


@dataclass
class Timeline:
    events: Sequence[Event]
    scenario: Scenario | None = None
    signal: int | None = None
    signal_name: str | None = None
    sigkill: int | None = None
    exit: Event | None = None
    integrity: Event | None = None
    workers: dict[int, WorkerView] = field(default_factory=dict)
    requests: dict[str, RequestView] = field(default_factory=dict)
    tasks: dict[str, TaskView] = field(default_factory=dict)
    pool_events: list[Event] = field(default_factory=list)
    stalls: list[Event] = field(default_factory=list)
    errors: list[Event] = field(default_factory=list)
    signals: list[Event] = field(default_factory=list)
    deleted: int | None = None  # the (first) pod deletion
    routed_until: int | None = None  # the (last) router removal
    upstream_failures: list[Event] = field(default_factory=list)
    findings: list[Event] = field(default_factory=list)
    replay: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> int:
        """
        Time zero of the report: the pod's deletion in a replay (the first pod's in a rolling
        update), else the stop signal, else the first event.
        """
        if self.deleted is not None:
            return self.deleted
        if self.signal is not None:
            return self.signal
        return self.events[0].t if self.events else 0

    def at(self, t: int | None) -> str:
        """A journal time as seconds relative to `origin`, e.g. `+1.203s`."""
        if t is None:
            return "never"
        return f"{(t - self.origin) / 1e9:+.3f}s"

    def seconds(self, start: int, end: int) -> float:
        return (end - start) / 1e9

    def stopped_windows(self) -> list[tuple[int, int]]:
        """When the harness had the server frozen (SIGSTOP to SIGCONT): its loop could not run."""
        windows, stopped_at = [], None
        for event in self.signals:
            if event.get("signal") == "SIGSTOP":
                stopped_at = event.t
            elif event.get("signal") == "SIGCONT" and stopped_at is not None:
                windows.append((stopped_at, event.t))
                stopped_at = None
        return windows

    @property
    def died_by_signal(self) -> bool:
        """The main process was SIGKILLed by the harness or died of a signal."""
        if self.exit is None:
            return False
        return bool(self.exit.get("killed")) or int(self.exit.get("returncode", 0)) < 0

    def in_flight_at_signal(self) -> list[RequestView]:
        """Requests the app had started and not yet answered (whole body) at the stop signal."""
        if self.signal is None:
            return []
        signal = self.signal
        return [
            view
            for view in self.requests.values()
            if view.start is not None
            and view.start < signal
            and (view.response_end is None or view.response_end > signal)
            and (view.client is None or view.client.get("role") != "preflight")
        ]

    def tasks_running_at_signal(self) -> list[TaskView]:
        """Background tasks queued before the stop signal and not yet ended at it."""
        if self.signal is None:
            return []
        signal = self.signal
        return [
            task
            for task in self.tasks.values()
            if task.queued is not None and task.queued < signal and (task.work_end is None or task.work_end > signal)
        ]

    def worker(self, pid: int) -> WorkerView:
        if pid not in self.workers:
            self.workers[pid] = WorkerView(pid)
        return self.workers[pid]

    def request(self, request_id: str) -> RequestView:
        if request_id not in self.requests:
            self.requests[request_id] = RequestView(request_id)
        return self.requests[request_id]


_COLLECTED: dict[str, str] = {Kind.ROUTER_UPSTREAM_FAILED: "upstream_failures", Kind.STATIC_FINDING: "findings"}
"""Events kept as they are, every one, in a list of the timeline."""
_LATEST: dict[str, str] = {Kind.SERVER_EXITED: "exit", Kind.INTEGRITY_CHECKED: "integrity"}
"""Events the timeline keeps the last of."""


def build(events: Sequence[Event]) -> Timeline:
    """Fold a journal's events (in time order) into a `Timeline`."""
    timeline = Timeline(events=events)
    for event in events:
        _fold(timeline, event)
    return timeline


def _fold(timeline: Timeline, event: Event) -> None:
    kind, t = event.kind, event.t
    if kind == Kind.RUN_START:
        scenario = event.get("scenario")
        if isinstance(scenario, dict):
            timeline.scenario = Scenario.from_dict(scenario)
        replay = event.get("replay")
        if isinstance(replay, dict):
            timeline.replay = replay
        rollout = event.get("rollout")
        if isinstance(rollout, dict):
            timeline.rollout = rollout
        return
    if kind in _COLLECTED:
        getattr(timeline, _COLLECTED[kind]).append(event)
        return
    if kind in _LATEST:
        setattr(timeline, _LATEST[kind], event)
        return
    if kind == Kind.POD_DELETED:
        if timeline.deleted is None:
            timeline.deleted = t
        return
    if kind == Kind.ROUTER_REMOVED:
        timeline.routed_until = t
        return
    if kind == Kind.SIGNAL_SENT:
        timeline.signals.append(event)
        if timeline.signal is None:
            timeline.signal = t
            timeline.signal_name = event.get("signal")
        return
    if kind == Kind.SIGKILL_SENT:
        timeline.sigkill = timeline.sigkill or t
        return
    if kind == Kind.CLIENT_REQUEST:
        timeline.request(str(event.get("id"))).client = event
        return
    if kind == Kind.PROBE_ERROR:
        timeline.errors.append(event)
    request_id = event.get("request")
    if request_id is not None:
        view = timeline.request(str(request_id))
        view.last_seen = max(view.last_seen or 0, t)
    if not kind.startswith(("probe.", "lifespan.", "request.", "task.", "loop.", "pool.")):
        return
    worker = timeline.worker(event.pid)
    worker.last_event = t
    if kind == Kind.STARTUP_COMPLETE:
        worker.startup_complete = t
    elif kind == Kind.SHUTDOWN_RECEIVED:
        worker.shutdown_received = worker.shutdown_received or t
    elif kind == Kind.SHUTDOWN_COMPLETE:
        worker.shutdown_complete = t
    elif kind == Kind.SHUTDOWN_FAILED:
        worker.shutdown_failed = str(event.get("message") or "failed")
    elif kind.startswith("pool."):
        timeline.pool_events.append(event)
        if kind == Kind.POOL_CLOSED and worker.pool_closed is None:
            worker.pool_closed = t
    elif kind in (Kind.LOOP_STALL, Kind.LOOP_LAG):
        timeline.stalls.append(event)
    elif kind.startswith("request."):
        _fold_request(timeline, event)
    elif kind.startswith("task."):
        _fold_task(timeline, event)


def _fold_request(timeline: Timeline, event: Event) -> None:
    request_id = event.get("request")
    if request_id is None:
        return
    view = timeline.request(str(request_id))
    view.pid = event.pid
    if event.kind == Kind.REQUEST_START:
        view.start = event.t
        view.path = str(event.get("path", ""))
    elif event.kind == Kind.RESPONSE_START:
        view.status = event.get("status")
    elif event.kind == Kind.RESPONSE_END:
        view.response_end = event.t
    elif event.kind == Kind.REQUEST_END:
        view.end = event.t
        view.end_outcome = event.get("outcome")


def _fold_task(timeline: Timeline, event: Event) -> None:
    task_id = str(event.get("task"))
    view = timeline.tasks.get(task_id)
    if view is None:
        view = timeline.tasks[task_id] = TaskView(id=task_id, pid=event.pid)
    kind: Any = event.kind
    if kind == Kind.TASK_QUEUED:
        view.queued = event.t
        view.name = str(event.get("name", "?"))
        view.request = event.get("request")
        view.sync = bool(event.get("sync", False))
        view.spawned = bool(event.get("spawned", False))
    elif kind == Kind.TASK_STARTED:
        view.started = view.started or event.t
    elif kind == Kind.TASK_FINISHED:
        view.finished = event.t
    elif kind == Kind.TASK_FAILED:
        view.finished = event.t
        view.failed = str(event.get("error", "error"))
    elif kind == Kind.TASK_CANCELLED:
        view.cancelled = event.t
