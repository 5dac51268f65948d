"""
One run's journal, folded into what the verdicts and reports reason about: each server worker
(its lifespan and pool), each request (server view and client view side by side), each
background task, each resource the app opened (engines, pools, clients) with its uses, and the
harness's clock (signal, SIGKILL, exit).

Times stay in journal nanoseconds; `Timeline.at` renders them relative to the stop signal.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chaos.journal import Event, Kind
from chaos.scenario import Scenario
from chaos.traffic import PREFLIGHT_ID_PREFIX

_MAX_NAME = 64  # a server's name or release, as a journal may claim it


@dataclass
class WorkerView:
    """One server process that loaded the probe (a worker, or the only process)."""

    pid: int
    # Journal times (monotonic ns), None until the journal shows them.
    startup_received: int | None = None
    startup_complete: int | None = None
    shutdown_received: int | None = None
    shutdown_complete: int | None = None
    shutdown_failed: str | None = None
    pool_closed: int | None = None
    # The first close, after the stop signal, of a resource the app opened outside any request
    # or task (its engine, its pool, its client): teardown, even when no lifespan began it.
    resource_closed: int | None = None
    resource_closed_name: str | None = None
    serving: int | None = None  # lifespan startup complete, or the first request: closes before are resets
    last_event: int = 0
    servers: dict[str, str] = field(default_factory=dict)  # the servers it ran in, with their releases

    @property
    def teardown(self) -> int | None:
        """When teardown began: lifespan shutdown, or the pool (or another resource) closing, whichever came first."""
        starts = [t for t in (self.shutdown_received, self.pool_closed, self.resource_closed) if t is not None]
        return min(starts) if starts else None

    @property
    def teardown_cause(self) -> str:
        first = self.teardown
        if first is not None and first == self.pool_closed and first != self.shutdown_received:
            return "the pool closed"
        if first is not None and first == self.resource_closed and first != self.shutdown_received:
            return f"{self.resource_closed_name} closed"
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
    raised: str | None = None  # what the app raised, and where, when its call ended in an error
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
    # Journal times of each step of its life; `failed` holds the exception's text, and where.
    queued: int | None = None
    started: int | None = None
    finished: int | None = None
    failed: str | None = None
    # CancelledError inside the task; a sync task's thread may run on after it.
    cancelled: int | None = None
    # A task started at startup and still pending when its lifespan shutdown completed: whether
    # the teardown had called its cancel() (None: no such line, the task was not pending then).
    cancel_requested: bool | None = None

    @property
    def from_preflight(self) -> bool:
        """Queued by the preflight's request, which checks the app answers before the run's own work goes in."""
        return (self.request or "").startswith(PREFLIGHT_ID_PREFIX)

    @property
    def work_end(self) -> int | None:
        """When the task's work really stopped. A cancelled sync task's thread runs on."""
        if self.finished is not None:
            return self.finished
        if self.cancelled is not None and not self.sync:
            return self.cancelled
        return None


@dataclass
class UseView:
    """One use of a resource (a query, a command, a request): who made it, when, how it ended."""

    resource: str
    id: str
    pid: int
    op: str = "use"
    start: int = 0
    end: int | None = None  # None: it never ended (the process died during it)
    error: str | None = None
    request: str | None = None
    task: str | None = None
    thread: str | None = None


@dataclass
class ResourceView:
    """
    A resource of the app: an engine, pool or client the probe saw opened (`resource.*`
    events), or a pool the app told about itself with `chaos.record` (`pool.*`, `recorded`).
    """

    id: str
    pid: int
    name: str = "?"
    type: str = "resource"  # "asyncpg pool", "SQLAlchemy async engine", "HTTP client", ...
    library: str = "?"
    opened: int | None = None
    closed: int | None = None
    closed_how: str | None = None
    # A close while the worker was still starting (a forked worker disposing its parent's pool),
    # undone by a later use: the resource is open again.
    reset: int | None = None
    closed_while_starting: bool = False
    request: str | None = None  # who opened it: a request, a task, or neither (import, startup)
    task: str | None = None
    recorded: bool = False
    main_rerun: bool = False  # opened while a spawned child re-ran the script's main (`chaos.probe.spawned`)
    forked_from: int | None = None  # a copy, inherited by fork: the pid that opened the original
    forked_into: list[int] = field(default_factory=list)  # the original: the pids that have a copy
    uses: list[UseView] = field(default_factory=list)
    refusals: list[Event] = field(default_factory=list)  # `pool.use_after_close`, as the app recorded it
    hosts: dict[str, None] = field(default_factory=dict)  # an HTTP client's targets, in order seen

    @property
    def long_lived(self) -> bool:
        """Opened outside any request or task (at import or startup): the app closes it at teardown."""
        return self.request is None and self.task is None

    @property
    def label(self) -> str:
        """How reports name it: `postgresql://db:5432/shop`, `httpx AsyncClient to api:8080`, `pool main`."""
        if self.recorded:
            return f"pool {self.name}"
        if self.hosts and " to " not in self.name:
            shown = list(self.hosts)[:3]
            more = f" (+{len(self.hosts) - 3})" if len(self.hosts) > 3 else ""
            return f"{self.name} to {', '.join(shown)}{more}"
        return self.name

    @property
    def described(self) -> str:
        """The label with what it is: `postgresql://db:5432/shop (asyncpg pool)`."""
        if self.recorded:
            return f"pool {self.name} (recorded by the app)"
        return f"{self.label} ({self.type})" if self.type not in self.label else self.label


@dataclass
class Timeline:
    """A run's journal folded: what every verdict and report reasons about."""

    events: Sequence[Event]
    scenario: Scenario | None = None
    # The harness's clock: the first stop signal (and its name), SIGKILL, the exit.
    signal: int | None = None
    signal_name: str | None = None
    signals: list[Event] = field(default_factory=list)
    sigkill: int | None = None
    exit: Event | None = None
    integrity: Event | None = None  # the data-integrity check's result
    # The app's side: each worker, request, task and resource, by id.
    workers: dict[int, WorkerView] = field(default_factory=dict)
    requests: dict[str, RequestView] = field(default_factory=dict)
    tasks: dict[str, TaskView] = field(default_factory=dict)
    # Tasks the app spawned during its lifespan startup (a queue consumer, a refresher): services its
    # teardown must stop, not work a request caused; no drain waits for them.
    service_tasks: dict[str, TaskView] = field(default_factory=dict)
    pool_events: list[Event] = field(default_factory=list)
    resources: dict[str, ResourceView] = field(default_factory=dict)
    # Opened, never used, in a process that never loaded the app (`_set_aside_idle`): not judged.
    idle_resources: list[ResourceView] = field(default_factory=list)
    warnings: list[Event] = field(default_factory=list)  # `probe.warning`: what the probe could not hook
    unawaited: list[Event] = field(default_factory=list)  # `app.unawaited`: coroutines the app dropped
    instrumented: bool | None = None  # False when a worker ran with DRAINSPEC_INSTRUMENT=0
    _uses: dict[tuple[int, str, str], UseView] = field(default_factory=dict, repr=False)
    _label_counts: Counter[str] = field(default_factory=Counter, repr=False)
    _described_counts: Counter[str] = field(default_factory=Counter, repr=False)
    _labels_counted: int = field(default=-1, repr=False)  # how many resources the counts are of
    stalls: list[Event] = field(default_factory=list)
    unhooked: set[str] = field(default_factory=set)  # client libraries the app loaded that no hook sees
    errors: list[Event] = field(default_factory=list)
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

    def death_of(self, pid: int) -> Event | None:
        """How a worker died of a signal, as its parent (or drainspec, its subreaper) saw it."""
        return next(
            (e for e in self.events if e.kind == Kind.WORKER_EXITED and e.get("target") == pid and e.get("signal")),
            None,
        )

    def end_of(self, pid: int) -> int | None:
        """
        When a worker's life was over, as the journal dates it: its lifespan shutdown completed,
        the fault that SIGKILLed it, the deadline's SIGKILL, or the server's exit. What it left
        undone (a resource never closed, a task never ended) became final then.
        """
        worker = self.workers.get(pid)
        if worker is not None and worker.shutdown_complete is not None:
            return worker.shutdown_complete
        fault = next((e.t for e in self.events if e.kind == Kind.FAULT_INJECTED and e.get("target") == pid), None)
        if fault is not None:
            return fault
        if self.sigkill is not None:
            return self.sigkill
        return self.exit.t if self.exit is not None else None

    @property
    def script_server(self) -> Event | None:
        """What an app's own script starts (`script.server`: the server, its workers), if it ran one."""
        return next((e for e in self.events if e.kind == Kind.SCRIPT_SERVER), None)

    def signal_that_ended(self, pid: int) -> str | None:
        """
        The signal a serving process died of, if it did: as its parent saw it (`death_of`), or,
        for the server's own process (or a run's only worker), as drainspec saw the server exit.
        """
        death = self.death_of(pid)
        if death is not None:
            return str(death.get("signal"))
        if self.exit is None or self.exit.get("killed"):
            return None
        spawned = next((e.get("target") for e in self.events if e.kind == Kind.SERVER_SPAWNED), None)
        serving = [view for view in self.workers.values() if view.startup_received is not None]
        if pid != spawned and [view.pid for view in serving] != [pid]:
            return None
        returncode, exit_code = self.exit.get("returncode"), self.exit.get("exit_code")
        number = -returncode if isinstance(returncode, int) and returncode < 0 else None
        if number is None and isinstance(exit_code, int) and 128 < exit_code < 160:
            number = exit_code - 128  # a shell's, or a container runtime's, way of saying it
        try:
            return signal.Signals(number).name if number is not None else None
        except ValueError:
            return None

    @property
    def died_by_signal(self) -> bool:
        """The main process was SIGKILLed by the harness or died of a signal."""
        if self.exit is None:
            return False
        return bool(self.exit.get("killed")) or int(self.exit.get("returncode", 0)) < 0

    @property
    def shutdown_began(self) -> int | None:
        """
        When the shutdown began for the work in flight: the pod's deletion in a replay (preStop
        runs before the signal, and requests in flight then are what it must protect), else the
        stop signal.
        """
        if self.signal is None:
            return None
        return self.deleted if self.deleted is not None and self.deleted < self.signal else self.signal

    def in_flight_at_signal(self) -> list[RequestView]:
        """Requests the app had started and not yet answered (whole body) when the shutdown began."""
        moment = self.shutdown_began
        return [] if moment is None else [view for view in self.requests.values() if _in_flight(view, moment)]

    def tasks_running_at_signal(self) -> list[TaskView]:
        """Background tasks queued before the shutdown began and not yet ended then."""
        moment = self.shutdown_began
        return [] if moment is None else [task for task in self.tasks.values() if _running(task, moment)]

    def worker(self, pid: int) -> WorkerView:
        if pid not in self.workers:
            self.workers[pid] = WorkerView(pid)
        return self.workers[pid]

    def request(self, request_id: str) -> RequestView:
        if request_id not in self.requests:
            self.requests[request_id] = RequestView(request_id)
        return self.requests[request_id]

    def resource(self, resource_id: str, pid: int) -> ResourceView:
        """
        The resource `resource_id` as process `pid` has it. One made before a fork (at import in
        gunicorn's preloading arbiter, or in a script's own) is a copy of its own in each process
        forked after: its own connections, its own close. Each copy is a resource of its own,
        opened when the original was, so that one worker's dispose is never another's close.
        """
        view = self.resources.get(resource_id)
        if view is None:
            view = self.resources[resource_id] = ResourceView(resource_id, pid)
        elif view.pid != pid:
            key = f"{resource_id}@{pid}"
            if key not in self.resources:
                view.forked_into.append(pid)
                self.resources[key] = replace(
                    view,
                    id=key,
                    pid=pid,
                    forked_from=view.pid,
                    closed=None,
                    closed_how=None,
                    reset=None,
                    closed_while_starting=False,
                    uses=[],
                    refusals=[],
                    forked_into=[],
                    hosts=dict(view.hosts),
                )
            view = self.resources[key]
        return view

    def resource_of(self, event: Event) -> ResourceView | None:
        """The resource a `resource.*` event is about, as the process that wrote it has it (`resource`)."""
        resource_id = str(event.get("resource"))
        return self.resources.get(f"{resource_id}@{event.pid}") or self.resources.get(resource_id)

    def task(self, task_id: str | None) -> TaskView | None:
        """A task by id, whether work a request caused (`tasks`) or a service its lifespan started."""
        if not task_id:
            return None
        return self.tasks.get(task_id) or self.service_tasks.get(task_id)

    def task_label(self, task_id: str) -> str:
        """A task as reports name it: `deliver [t3]`, or its id alone when nothing names it."""
        task = self.task(task_id)
        if task is None or task.name == "?":
            return task_id
        return f"{task.name.rsplit('.', 1)[-1]} [{task_id}]"

    def opened_by(self, resource: ResourceView) -> str:
        """
        Who opened a resource, as reports say it: a task (of a request), a request, or the app
        itself, at import (before its worker's lifespan startup began, or with no lifespan) or at
        startup. The one place that tells them apart.
        """
        if resource.task:
            return f"by task {self.task_label(resource.task)}" + (
                f" of request {resource.request}" if resource.request else ""
            )
        if resource.request:
            return f"by request {resource.request}"
        opener = resource.pid if resource.forked_from is None else resource.forked_from
        inherited = "" if resource.forked_from is None else f" in pid {opener}, before the fork"
        worker = self.workers.get(opener)
        began = worker.startup_received if worker else None
        if resource.opened is not None and (began is None or resource.opened < began):
            return f"at import{inherited}"
        return f"at startup{inherited}"

    def label(self, resource: ResourceView) -> str:
        """
        A resource's name in a report; with what it is when another resource has the same name,
        and whose it is when another of the same kind has it too (each worker opens its own
        engine on the same URL: "... (SQLAlchemy engine) of worker 412").
        """
        if self._labels_counted != len(self.resources):
            self._label_counts = Counter(other.label for other in self.resources.values())
            self._described_counts = Counter(other.described for other in self.resources.values())
            self._labels_counted = len(self.resources)
        if self._label_counts[resource.label] <= 1:
            return resource.label
        if self._described_counts[resource.described] <= 1:
            return resource.described
        return f"{resource.described} of worker {resource.pid}"


def _in_flight(view: RequestView, moment: int) -> bool:
    """Started before `moment`, not yet answered then; the harness's own requests excluded."""
    if view.start is None or view.start >= moment:
        return False
    if view.response_end is not None and view.response_end <= moment:
        return False
    return view.client is None or view.client.get("role") not in ("preflight", "kubelet")


def _running(task: TaskView, moment: int) -> bool:
    return task.queued is not None and task.queued < moment and (task.work_end is None or task.work_end > moment)


_COLLECTED: dict[str, str] = {Kind.ROUTER_UPSTREAM_FAILED: "upstream_failures", Kind.STATIC_FINDING: "findings"}
"""Events kept as they are, every one, in a list of the timeline."""
_LATEST: dict[str, str] = {Kind.SERVER_EXITED: "exit", Kind.INTEGRITY_CHECKED: "integrity"}
"""Events the timeline keeps the last of."""


def build(events: Sequence[Event]) -> Timeline:
    """Fold a journal's events (in time order) into a `Timeline`."""
    timeline = Timeline(events=events)
    for event in events:
        _fold(timeline, event)
    _set_aside_idle(timeline)
    return timeline


def _set_aside_idle(timeline: Timeline) -> None:
    """
    A resource opened outside the app and never used is not the app's to close: an app's own
    script imports the app's modules (and creates the engines they create at import) in the
    process that supervises its workers or its reloader, which never serves; and each spawned
    child re-runs the script's main module, making again what it makes (`main_rerun`). Told by
    the processes that load the app (`probe.loaded`); a journal without them is judged whole.
    An arbiter that loads the app before it forks its workers (gunicorn's `--preload`) leaves
    each worker a copy, judged in the worker: the original, never used, holds nothing to close.
    """
    loaded = {event.pid for event in timeline.events if event.kind == Kind.PROBE_LOADED}
    for key, resource in list(timeline.resources.items()):
        outside = (loaded and resource.pid not in loaded) or resource.main_rerun or bool(resource.forked_into)
        if outside and not resource.uses and not resource.recorded and resource.closed is None:
            timeline.idle_resources.append(timeline.resources.pop(key))


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
    elif kind == Kind.PROBE_WARNING:
        timeline.warnings.append(event)
    elif kind == Kind.APP_UNAWAITED:
        timeline.unawaited.append(event)
    elif kind == Kind.PROBE_LOADED and event.get("instrument") is not None:
        timeline.instrumented = bool(event.get("instrument")) and timeline.instrumented is not False
    request_id = event.get("request")
    if request_id is not None:
        view = timeline.request(str(request_id))
        view.last_seen = max(view.last_seen or 0, t)
    if not kind.startswith(("probe.", "app.", "lifespan.", "request.", "task.", "loop.", "pool.", "resource.")):
        return
    worker = timeline.worker(event.pid)
    worker.last_event = t
    if kind == Kind.PROBE_LOADED and isinstance(servers := event.get("servers"), dict):
        worker.servers = {str(name)[:_MAX_NAME]: str(version)[:_MAX_NAME] for name, version in servers.items()}
    elif kind == Kind.STARTUP_RECEIVED:
        worker.startup_received = worker.startup_received or t
    elif kind == Kind.STARTUP_COMPLETE:
        worker.startup_complete = t
        worker.serving = worker.serving or t
        timeline.unhooked.update(str(name) for name in event.get("unhooked") or ())
    elif kind == Kind.LIFESPAN_UNSUPPORTED:
        worker.serving = worker.serving or t
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
        _fold_recorded_pool(timeline, event)
    elif kind.startswith("resource."):
        _fold_resource(timeline, worker, event)
    elif kind in (Kind.LOOP_STALL, Kind.LOOP_LAG):
        timeline.stalls.append(event)
    elif kind.startswith("request."):
        if kind == Kind.REQUEST_START:
            worker.serving = worker.serving or t
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
        if event.get("status") is not None:  # a response sent in one body: its status comes with its end
            view.status = event.get("status")
    elif event.kind == Kind.REQUEST_END:
        view.end = event.t
        view.end_outcome = event.get("outcome")
        if view.end_outcome == "error":
            view.raised = raised_text(event)


def _fold_task(timeline: Timeline, event: Event) -> None:
    task_id = str(event.get("task"))
    view = timeline.tasks.get(task_id) or timeline.service_tasks.get(task_id)
    if view is None:
        where = timeline.service_tasks if event.get("startup") else timeline.tasks
        view = where[task_id] = TaskView(id=task_id, pid=event.pid)
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
        view.failed = raised_text(event)
    elif kind == Kind.TASK_CANCELLED:
        view.cancelled = event.t
    elif kind == Kind.TASK_PENDING:
        view.cancel_requested = event.get("cancel_requested") is True


def raised_text(event: Event) -> str:
    """An exception's text as the probe journaled it, and where it was raised (`raised_at`)."""
    where = event.get("raised_at")
    return str(event.get("error", "error")) + (f" (at {where})" if where else "")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fold_resource(timeline: Timeline, worker: WorkerView, event: Event) -> None:
    """`resource.*`: what the probe saw of each engine, pool and client, and of each use."""
    kind, t = event.kind, event.t
    view = timeline.resource(str(event.get("resource")), event.pid)
    if kind == Kind.RESOURCE_OPEN:
        view.opened = view.opened or t
        view.name = str(event.get("name", view.name))
        view.type = str(event.get("type", view.type))
        view.library = str(event.get("library", view.library))
        view.request, view.task = _text(event.get("request")), _text(event.get("task"))
        view.main_rerun = event.get("main_rerun") is True
    elif kind == Kind.RESOURCE_CLOSED:
        if view.closed is not None:
            return
        view.closed, view.closed_how = t, _text(event.get("how"))
        view.closed_while_starting = worker.serving is None
        after_signal = timeline.signal is not None and t >= timeline.signal
        if view.long_lived and after_signal and not view.closed_while_starting and worker.resource_closed is None:
            worker.resource_closed, worker.resource_closed_name = t, view.described
    elif kind == Kind.RESOURCE_USE:
        if view.closed is not None and view.closed_while_starting:
            view.reset, view.closed, view.closed_how = view.closed, None, None
        # A whole use is one line at its end with its `start`; a use begun on a closed resource
        # is journaled at its start (with a `use` id), and its `resource.use_end` follows.
        start = event.get("start")
        whole = isinstance(start, int) and not isinstance(start, bool) and 0 <= start <= t
        use = UseView(
            resource=view.id,
            id=str(event.get("use")),
            pid=event.pid,
            op=str(event.get("op", "use")),
            start=start if whole else t,
            end=t if whole else None,
            error=_text(event.get("error")) if whole else None,
            request=_text(event.get("request")),
            task=_text(event.get("task")),
            thread=_text(event.get("thread")),
        )
        view.uses.append(use)
        if not whole:
            timeline._uses[(event.pid, view.id, use.id)] = use
        host = event.get("host")
        if host:
            view.hosts[str(host)] = None
    elif kind == Kind.RESOURCE_USE_END:
        found = timeline._uses.get((event.pid, view.id, str(event.get("use"))))
        if found is not None:
            found.end = t
            found.error = _text(event.get("error"))


def _fold_recorded_pool(timeline: Timeline, event: Event) -> None:
    """`pool.*` from `chaos.record`: a pool drainspec cannot see by itself, named by the app."""
    name = str(event.get("pool", "pool"))
    view = timeline.resource(f"pool:{event.pid}:{name}", event.pid)
    view.recorded, view.name, view.type, view.library = True, name, "pool", "chaos.record"
    if event.kind == Kind.POOL_OPEN:
        view.opened = view.opened or event.t
    elif event.kind == Kind.POOL_CLOSED:
        if view.closed is None:
            view.closed, view.closed_how = event.t, "recorded by the app"
    elif event.kind == Kind.POOL_USE_AFTER_CLOSE:
        view.refusals.append(event)
