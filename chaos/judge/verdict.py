"""
The named checks: where every verdict is decided, each from the journal alone.

A verdict is pass, fail or not-applicable (with the reason), never silently skipped, and it
carries its evidence: which request, which task, which worker, at what time relative to the
stop signal. Each item of evidence is a sentence for people and the ids it names for reports
(`Evidence`). `judge` runs them all in the order of `VerdictName`.

A rolling update (`drainspec k8s --rollout`) stops several pods, each with its app as PID 1 of
its own PID namespace: their events share pids and their stop signals follow one another, so
the verdicts about one server's shutdown do not apply to it. A rollout is judged by
`rollout-zero-failed-requests`, plus the verdicts about things that are wrong wherever they
happen (a stalled loop, a pool used after it closed, broken data).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chaos.errors import exception_line, failure_line
from chaos.journal import Event, Kind
from chaos.judge.timeline import ResourceView, TaskView, Timeline, UseView, WorkerView, build
from chaos.servers import STARTUP_FLAWS


class VerdictName(StrEnum):
    INFLIGHT_COMPLETED = "inflight-completed"
    TEARDOWN_AFTER_DRAIN = "teardown-after-drain"
    NO_USE_AFTER_CLOSE = "no-use-after-close"
    BACKGROUND_FATE = "background-fate"
    TEARDOWN_RAN = "teardown-ran"
    LOOP_NOT_BLOCKED = "loop-not-blocked"
    NO_REFUSED_WHILE_ROUTED = "no-refused-while-routed"
    WITHIN_GRACE = "within-grace"
    SIGNAL_REACHES_APP = "signal-reaches-app"
    DATA_INTEGRITY = "data-integrity"
    RESOURCES_CLOSED = "resources-closed"
    ROLLOUT_ZERO_FAILED = "rollout-zero-failed-requests"
    NO_PROXY_ERRORS = "no-proxy-errors"
    NOTHING_LEFT_RUNNING = "nothing-left-running"


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"


class Fate(StrEnum):
    """What became of one background task."""

    COMPLETED = "completed"  # finished before teardown
    CANCELLED = "cancelled"  # CancelledError inside the task
    DROPPED = "dropped"  # queued, never started
    KILLED = "killed"  # running when its worker was killed: SIGKILL, a fault, or a signal death mid-shutdown
    ABANDONED = "abandoned"  # pending when the loop closed after the worker's clean lifespan shutdown
    LOST = "lost"  # started, then vanished: no end, no cancel, no clean shutdown and no known kill
    FAILED = "failed"  # raised an exception
    RAN_AFTER_TEARDOWN = "ran-after-teardown"  # its work ended after teardown had begun
    STOPPED = "stopped"  # a task spawned at startup (a service), ended before its worker's lifespan shutdown completed


ALLOWED_FATES = {
    "complete": frozenset({Fate.COMPLETED}),
    "allow-cancel": frozenset({Fate.COMPLETED, Fate.CANCELLED, Fate.DROPPED}),
}
# A task the app spawned at startup, whatever the policy: ended before its teardown completed.
SERVICE_FATES = frozenset({Fate.STOPPED})


MAX_LISTED = 20  # failed requests listed one by one; the rest are counted

ROLLOUT_REASON = "judged per rollout by rollout-zero-failed-requests"
PER_POD_REASON = (
    "a rolling update stops several pods one after another: this one-server verdict is not judged "
    "(see rollout-zero-failed-requests)"
)


@dataclass(frozen=True)
class Evidence:
    """One fact a verdict rests on: its sentence, and what it names (for reports to point at)."""

    text: str
    request: str | None = None  # request id, e.g. "r1", "b2", "s14"
    task: str | None = None  # background task id
    worker: int | None = None  # worker pid
    t: int | None = None  # journal time (monotonic ns) of the fact

    def __str__(self) -> str:
        return self.text

    def to_dict(self) -> dict[str, Any]:
        """The sentence, then only the fields this fact names."""
        named = {"request": self.request, "task": self.task, "worker": self.worker, "t": self.t}
        return {"text": self.text, **{key: value for key, value in named.items() if value is not None}}


@dataclass(frozen=True)
class Verdict:
    name: str
    status: Status
    summary: str
    evidence: tuple[Evidence, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status == Status.FAIL


def _pass(name: VerdictName, summary: str, evidence: Iterable[Evidence] = ()) -> Verdict:
    return Verdict(name.value, Status.PASS, summary, tuple(evidence))


def _fail(name: VerdictName, summary: str, evidence: Iterable[Evidence] = ()) -> Verdict:
    return Verdict(name.value, Status.FAIL, summary, tuple(evidence))


def _not_applicable(name: VerdictName, reason: str, evidence: Iterable[Evidence] = ()) -> Verdict:
    return Verdict(name.value, Status.NOT_APPLICABLE, reason, tuple(evidence))


# --- the checks ---------------------------------------------------------------------------------


def inflight_completed(timeline: Timeline) -> Verdict:
    """
    Every request the app had started and not yet answered at the stop signal got a full
    response with an expected status. One that was answered before the signal was never in
    flight and proves nothing about the shutdown.
    """
    name = VerdictName.INFLIGHT_COMPLETED
    if timeline.signal is None:
        return _not_applicable(name, "no stop signal was sent")
    accepted = timeline.in_flight_at_signal()
    if not accepted:
        began = "the pod's deletion" if timeline.deleted is not None else "the stop signal"
        return _not_applicable(name, f"no request was in flight inside the app at {began}{_answered_before(timeline)}")
    problems = []
    for view in sorted(accepted, key=lambda v: v.start or 0):
        outcome = view.client_outcome
        if outcome == "ok":
            continue
        seen = outcome or "no client record"
        client = view.client
        if client is not None and client.get("status") is not None:
            expected = f", expected {client.get('expected')}" if client.get("expected") else ""
            seen = f"{outcome} (HTTP {client.get('status')}{expected})"
        seen_at = client.t if client is not None else None
        ended = f"{view.end_outcome} at {timeline.at(view.end)}" if view.end is not None else "never ended"
        problems.append(
            Evidence(
                f"{view.id} {view.path}: client saw {seen} at {timeline.at(seen_at)}; the app's call {ended}",
                request=view.id,
                t=seen_at if seen_at is not None else view.end,
            )
        )
    if problems:
        return _fail(name, f"{len(problems)} of {len(accepted)} in-flight requests failed", problems)
    last = max((v.client.t for v in accepted if v.client is not None), default=None)
    return _pass(name, f"all {len(accepted)} in-flight requests completed, the last at {timeline.at(last)}")


def drained_by_teardown(timeline: Timeline) -> frozenset[str]:
    """The ids of the tasks the app's own teardown drained (`_drained_by_teardown`), found once per verdict."""
    return frozenset(task.id for task in timeline.tasks.values() if _drained_by_teardown(timeline, task))


def _drained_by_teardown(timeline: Timeline, task: TaskView) -> bool:
    """
    A fire-and-forget task that the app's own teardown cancelled and waited for, under the
    `allow-cancel` policy: it ended cancelled after its worker's lifespan shutdown began, before
    that shutdown completed and before any long-lived resource of the worker closed. That is the
    shutdown such an app means (cancel the untracked work, await it while its cleanup still uses
    the pool, then close the pool), so neither `teardown-after-drain` nor `no-use-after-close`
    counts it. A task cancelled with no one waiting for it, still running when the pool closed or
    never ending, is not drained: it fails as before.
    """
    policy = timeline.scenario.background_policy if timeline.scenario else "complete"
    worker = timeline.workers.get(task.pid)
    ended = task.cancelled
    if policy != "allow-cancel" or not task.spawned or task.sync or ended is None or worker is None:
        return False
    begun = worker.shutdown_received
    if begun is None or worker.teardown != begun or ended < begun:
        return False
    closes = [r.closed for r in timeline.resources.values() if r.pid == task.pid and r.long_lived]
    closes += [worker.pool_closed, worker.shutdown_complete]
    return all(ended <= t for t in closes if t is not None and t >= begun)


def _live_at(timeline: Timeline, worker: WorkerView, moment: int, drained: frozenset[str]) -> list[Evidence]:
    """
    Work of this worker that had begun before `moment` and had not ended by then, one item each.
    Tasks the teardown drained itself (`drained`, from `drained_by_teardown`) are not in flight;
    nor is a request whose call had ended and whose only work left was such tasks.
    """
    live = []
    for view in timeline.requests.values():
        if view.pid != worker.pid or view.start is None or view.start >= moment:
            continue
        end = view.work_end
        if view.end is not None and view.end <= moment and _left_only(timeline, view.id, drained, moment):
            continue
        if end is None or end > moment:
            detail = f"ended {timeline.at(view.end)}"
            if view.end_outcome == "cancelled" and view.end is not None:
                detail = f"cancelled, its call ended {timeline.at(view.end)}"
            if end is not None and end != view.end:
                detail = f"its call ended {timeline.at(view.end)}, its work went on until {timeline.at(end)}"
            text = f"request {view.id} {view.path} ({detail})"
            live.append(Evidence(text, request=view.id, worker=worker.pid, t=end))
    for task in timeline.tasks.values():
        if task.pid != worker.pid or task.queued is None or task.queued >= moment:
            continue
        end = task.work_end
        if task.started is None:
            owner = timeline.requests.get(task.request or "")
            if owner is None or owner.end is None or owner.end > moment:
                text = f"task {task.name} [{task.id}] still queued"
                live.append(Evidence(text, request=task.request, task=task.id, worker=worker.pid, t=task.queued))
        elif (end is None or end > moment) and task.id not in drained:
            text = f"task {task.name} [{task.id}] (work ended {timeline.at(end)})"
            live.append(Evidence(text, request=task.request, task=task.id, worker=worker.pid, t=end))
    return live


CANCELLED_NOT_AWAITED = (
    "the server cancelled the requests still running and began the teardown without waiting for them to end "
    "(uvicorn's --timeout-graceful-shutdown and hypercorn's --graceful-timeout do so when they run out): what a "
    "cancellation runs (a stream's `finally`, a `def` endpoint's thread) races the teardown; end long-lived work "
    "when shutdown begins, before the bound runs out"
)


def _cancelled_after(timeline: Timeline, request: str, moment: int) -> bool:
    """A request whose call the server cancelled, still ending when its worker's teardown began at `moment`."""
    view = timeline.requests.get(request)
    return view is not None and view.end_outcome == "cancelled" and view.end is not None and view.end > moment


def _left_only(timeline: Timeline, request: str, drained: frozenset[str], moment: int) -> bool:
    """Whether the work of `request` still running at `moment` was only tasks the teardown drained."""
    running = [
        task.id
        for task in timeline.tasks.values()
        if task.request == request and (task.work_end is None or task.work_end > moment)
    ]
    return bool(running) and all(task in drained for task in running)


def _answered_before(timeline: Timeline) -> str:
    """
    Why nothing was in flight when the run did send its slow requests (`--requests`): the app
    had answered each one before the shutdown began, so the endpoint is too fast to be caught
    by a signal, and the user needs to be told what would be.
    """
    moment = timeline.shutdown_began
    sent = [
        view
        for view in timeline.requests.values()
        if view.client is not None and view.client.get("role") == "slow" and view.start is not None
    ]
    answered = [view.response_end for view in sent if view.response_end is not None]
    if moment is None or not sent or len(answered) < len(sent) or max(answered) > moment:
        return ""
    return (
        f": the app had answered all {len(sent)} request(s) the run sent before it, the last at "
        f"{timeline.at(max(answered))}; to catch one in flight, send it to an endpoint that takes "
        "{seconds} (--request-path), or to the probe's GET /__drainspec/hold?seconds={seconds}"
    )


def teardown_after_drain(timeline: Timeline) -> Verdict:
    """Per worker: teardown began only after the last response and every task had ended."""
    name = VerdictName.TEARDOWN_AFTER_DRAIN
    tore_down = [w for w in timeline.workers.values() if w.teardown is not None]
    if not tore_down:
        return _not_applicable(name, "no worker began teardown (see teardown-ran)")
    problems: list[Evidence] = []
    notes: list[Evidence] = []
    drained = drained_by_teardown(timeline)
    for worker in tore_down:
        moment = worker.teardown
        assert moment is not None
        live = _live_at(timeline, worker, moment, drained)
        head = f"worker {worker.pid}: {worker.teardown_cause} at {timeline.at(moment)}"
        if live:
            problems.append(Evidence(f"{head} while still running:", worker=worker.pid, t=moment))
            problems.extend(live)
            if any(item.request and _cancelled_after(timeline, item.request, moment) for item in live):
                problems.append(Evidence(CANCELLED_NOT_AWAITED, worker=worker.pid, t=moment))
        else:
            awaited = sum(1 for task in drained if timeline.tasks[task].pid == worker.pid)
            rest = f" but {awaited} job(s) it cancelled and awaited before closing the pool" if awaited else ""
            notes.append(Evidence(f"{head}, after all its work had ended{rest}", worker=worker.pid, t=moment))
    if problems:
        return _fail(name, "teardown began while work was still in flight", problems)
    return _pass(name, f"teardown followed the drain on {len(tore_down)} worker(s)", notes)


def no_use_after_close(timeline: Timeline) -> Verdict:
    """
    Nothing used a resource after it closed, threads included, and no request or background
    task used one after its worker's teardown began: the engines, pools and clients the probe
    saw, and the pools the app records itself (`chaos.record`). A use still running when its
    resource closed counts too: the resource was closed under it. Each failure names the
    resource, the use, who made it and when. Not applicable only when no resource was seen at all.
    """
    name = VerdictName.NO_USE_AFTER_CLOSE
    resources = list(timeline.resources.values())
    if not resources:
        off = " (resource instrumentation was off: DRAINSPEC_INSTRUMENT=0)" if timeline.instrumented is False else ""
        return _not_applicable(
            name,
            f"no resource was seen and the app journals no pool events{off}{_unhooked(timeline)}: drainspec sees "
            f"{SEEN_BY_ITSELF} by itself; record others with chaos.record('pool.closed') and friends",
        )
    drained = drained_by_teardown(timeline)
    found = [misuse for resource in resources for misuse in _misuses(timeline, resource, drained)]
    if found:
        found.sort(key=lambda misuse: misuse.evidence.t or 0)
        counts: dict[str, dict[str, int]] = {}
        for misuse in found:
            per = counts.setdefault(timeline.label(misuse.resource), {})
            per[misuse.category] = per.get(misuse.category, 0) + 1
        summary = "; ".join(
            f"{label} was used " + " and ".join(f"{count} time(s) {category}" for category, count in per.items())
            for label, per in counts.items()
        )
        evidence = [misuse.evidence for misuse in found[:MAX_LISTED]]
        if len(found) > MAX_LISTED:
            evidence.append(Evidence(f"... and {len(found) - MAX_LISTED} more"))
        return _fail(name, summary, evidence)
    closed = [r for r in resources if r.closed is not None]
    never = [r for r in resources if r.closed is None and r.opened is not None]
    notes = _resource_notes(timeline, resources)
    unclosed = ""
    if never:
        unclosed = f"{_labels(timeline, never)} never closed{_killed_with_it_open(timeline, never)}"
    if not closed:
        what = unclosed or f"{_labels(timeline, resources)}: neither an opening nor a close was seen"
        return _pass(name, f"{what}; nothing used it after teardown began (see resources-closed)", notes)
    if len(resources) == 1 and closed[0].recorded:
        summary = f"no use of the pool after it closed (pool {closed[0].name}, as the app recorded it)"
    else:
        summary = f"no use of {_labels(timeline, closed)} after {'it' if len(closed) == 1 else 'they'} closed"
    return _pass(name, summary + (f"; {unclosed}" if unclosed else ""), notes)


@dataclass(frozen=True)
class _Misuse:
    resource: ResourceView
    category: str  # "after it closed", "while it closed", "after teardown began"
    evidence: Evidence


def _misuses(timeline: Timeline, resource: ResourceView, drained: frozenset[str]) -> list[_Misuse]:
    """
    Each use of `resource` after its close, across its close, or by work after teardown began
    (but the cleanup of a task the teardown drained itself, `drained`, before the close).
    """
    at, closed, found = timeline.at, resource.closed, []
    for use in resource.uses:
        worker = timeline.workers.get(use.pid)
        teardown = worker.shutdown_received if worker is not None and not timeline.rollout else None
        if closed is not None and use.start >= closed:
            category, why = "after it closed", f"after it closed at {at(closed)}"
        elif closed is not None and (use.end is None or use.end > closed):
            ended = f"ended {at(use.end)}" if use.end is not None else "never ended"
            category, why = "while it closed", f"still running when it closed at {at(closed)} ({ended})"
        elif teardown is not None and (use.request or use.task) and use.start >= teardown and use.task not in drained:
            category, why = "after teardown began", f"after lifespan shutdown began at {at(teardown)}"
        else:
            continue
        raised = f"; it raised {use.error}" if use.error else ""
        on = timeline.label(resource)
        text = f"{at(use.start)} pid {use.pid}: {use.op} on {on} by {_who(timeline, use)}, {why}{raised}"
        evidence = Evidence(text, request=use.request, task=use.task, worker=use.pid, t=use.start)
        found.append(_Misuse(resource, category, evidence))
    for event in resource.refusals:  # the app's own `pool.use_after_close`, worded as it always was
        who = " ".join(f"{key} {event.get(key)}" for key in ("request", "thread") if event.get(key))
        text = f"{at(event.t)} pid {event.pid}: {event.get('use', 'use')}" + (f" by {who}" if who else "")
        request, task = event.get("request"), event.get("task")
        evidence = Evidence(
            text,
            request=str(request) if request else None,
            task=str(task) if task else None,
            worker=event.pid,
            t=event.t,
        )
        found.append(_Misuse(resource, "after it closed", evidence))
    return found


def _who(timeline: Timeline, use: UseView) -> str:
    """`request r1`, `task deliver [t3] of request b1`, `thread worker-2`, or the app's own code."""
    parts = []
    if use.task:
        parts.append(f"task {timeline.task_label(use.task)}" + (f" of request {use.request}" if use.request else ""))
    elif use.request:
        parts.append(f"request {use.request}")
    else:
        parts.append("the app's own code (no request or task: lifespan, import or a thread it started)")
    if use.thread:
        parts.append(f"in thread {use.thread}")
    return " ".join(parts)


def _labels(timeline: Timeline, resources: Sequence[ResourceView], limit: int = 4) -> str:
    """The resources' labels, each once with how many share it (a connection per request: `... (x12)`)."""
    counts = Counter(timeline.label(r) for r in resources)
    labels = [label if count == 1 else f"{label} (x{count})" for label, count in counts.items()]
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def _killed_with_it_open(timeline: Timeline, resources: Sequence[ResourceView]) -> str:
    killed = sorted(
        {r.pid for r in resources if (w := timeline.workers.get(r.pid)) is None or w.shutdown_complete is None}
    )
    if killed and (timeline.sigkill is not None or timeline.died_by_signal):
        return f" (worker {', '.join(map(str, killed))} was killed with it open)"
    return ""


def _resource_note(timeline: Timeline, resource: ResourceView) -> Evidence:
    at = timeline.at
    opened = f"opened {at(resource.opened)} {timeline.opened_by(resource)}" if resource.opened else "open"
    closed = f"closed {at(resource.closed)} ({resource.closed_how})" if resource.closed else "never closed"
    uses = f"{len(resource.uses)} use(s)" if not resource.recorded else "uses not seen (recorded by the app)"
    text = f"{resource.described}: {opened}, {closed}; {uses}"
    return Evidence(text, request=resource.request, task=resource.task, worker=resource.pid, t=resource.closed)


def _resource_notes(timeline: Timeline, resources: Sequence[ResourceView]) -> list[Evidence]:
    """One note per resource up to `MAX_LISTED` (a connection per request makes hundreds), then how many more."""
    notes = [_resource_note(timeline, r) for r in resources[:MAX_LISTED]]
    if len(resources) > MAX_LISTED:
        notes.append(Evidence(f"... and {len(resources) - MAX_LISTED} more"))
    return notes


def resources_closed(timeline: Timeline) -> Verdict:
    """
    Every resource opened at startup, by a request or by a task (an engine, a pool, a client)
    was closed by the end of the run: one left open, or a worker killed with it open, fails,
    named with who opened it and why it never closed.
    """
    name = VerdictName.RESOURCES_CLOSED
    opened = [r for r in timeline.resources.values() if r.opened is not None]
    idle = [Evidence(f"{r.described}, opened {timeline.at(r.opened)} {_outside_the_app(r)}, and never used: not judged",
                     worker=r.pid) for r in timeline.idle_resources]  # fmt: skip
    if not opened:
        off = " (resource instrumentation was off: DRAINSPEC_INSTRUMENT=0)" if timeline.instrumented is False else ""
        return _not_applicable(
            name,
            f"no resource was seen opening{off}{_unhooked(timeline)}; record others with chaos.record('pool.open') "
            "and 'pool.closed'",
            idle,
        )
    left_open = [r for r in opened if r.closed is None]
    if not left_open:
        return _pass(
            name,
            f"all {len(opened)} resource(s) closed: {_labels(timeline, opened)}",
            [*_resource_notes(timeline, opened), *idle],
        )
    evidence = []
    for resource in left_open[:MAX_LISTED]:
        text = (
            f"{resource.described}, opened {timeline.at(resource.opened)} {timeline.opened_by(resource)}, "
            f"never closed: {_why_still_open(timeline, resource)}{_dropped_in_shutdown(timeline, resource)}"
        )
        left = timeline.end_of(resource.pid) or resource.opened  # "never closed" is a fact of the end
        evidence.append(Evidence(text, request=resource.request, task=resource.task, worker=resource.pid, t=left))
    if len(left_open) > MAX_LISTED:
        evidence.append(Evidence(f"... and {len(left_open) - MAX_LISTED} more"))
    summary = f"{len(left_open)} of {len(opened)} resource(s) never closed: {_labels(timeline, left_open)}"
    return _fail(name, summary, evidence)


def _dropped_in_shutdown(timeline: Timeline, resource: ResourceView) -> str:
    """The coroutines its worker's shutdown made and never awaited: the close that was meant."""
    worker = timeline.workers.get(resource.pid)
    if worker is None or worker.shutdown_received is None:
        return ""
    dropped = [
        f"{e.get('coroutine')}() at {e.get('where')}"
        for e in timeline.unawaited
        if e.pid == resource.pid and e.t >= worker.shutdown_received
    ]
    if not dropped:
        return ""
    return f"; the shutdown dropped {', '.join(dropped[:3])} without awaiting it (a missing `await`?)"


def _outside_the_app(resource: ResourceView) -> str:
    if resource.main_rerun:
        return f"in worker {resource.pid} while it re-ran the script's main module, as Python does in a spawned process"
    if resource.forked_into:
        workers = ", ".join(map(str, resource.forked_into))
        return f"in pid {resource.pid}, before it forked the workers that each have a copy of their own ({workers})"
    return f"in pid {resource.pid}, which never loaded the app (the script's own process, supervising its workers)"


def _why_still_open(timeline: Timeline, resource: ResourceView) -> str:
    at, worker = timeline.at, timeline.workers.get(resource.pid)
    if worker is not None and worker.shutdown_complete is not None:
        completed = f"lifespan shutdown completed at {at(worker.shutdown_complete)} without closing it"
        if per_thread := _per_thread_remedy(resource):
            return f"{completed}; {per_thread}"  # no close at exit would reach another thread's either
        ended = timeline.signal_that_ended(resource.pid)
        if ended is None or ended != timeline.signal_name:
            return completed
        after = "an `atexit` handler"
        if timeline.script_server is not None:
            after = "a `finally` around `server.serve()`, code after it or an `atexit` handler"
        return (
            f"{completed}, and the process then died of {ended} (uvicorn re-raises the stop signal once "
            f"it has shut down), so nothing after its server returned ran: {after} never closes it; "
            "close it in the lifespan"
        )
    flaw = _server_flaw(timeline, worker)
    if timeline.sigkill is not None:
        return f"worker {resource.pid} was SIGKILLed with it open at {at(timeline.sigkill)}{flaw}"
    death = timeline.death_of(resource.pid)
    if death is not None:
        return f"worker {resource.pid} died of {death.get('signal')} with it open ({_account(death)}){flaw}"
    if timeline.died_by_signal:
        return f"worker {resource.pid} died of a signal with it open{flaw}"
    if worker is not None and worker.shutdown_received is not None:
        return f"lifespan shutdown began at {at(worker.shutdown_received)} and never completed"
    if worker is not None and worker.startup_received is not None and worker.startup_complete is None:
        return f"worker {resource.pid} stopped during its lifespan startup, so no shutdown closed it"
    last = at(worker.last_event) if worker is not None else "never"
    return f"worker {resource.pid} ended without a lifespan shutdown (last sign of life at {last})"


def _server_flaw(timeline: Timeline, worker: WorkerView | None) -> str:
    """
    The server's own bug that kept a worker from its lifespan shutdown, when the journal shows
    it (`; ...`, else nothing): a completed startup, no request served before the stop signal, no
    shutdown after it, a flawed release in the process (`STARTUP_FLAWS`), and the end that release
    comes to: the process dead of the signal (uvicorn before 0.41 returns; its startup is over only
    once its sockets are bound, after the app's lifespan startup) or the deadline's SIGKILL
    (granian before 2.2.2 never stops the worker).
    """
    if worker is None or worker.startup_complete is None or worker.shutdown_received is not None:
        return ""
    signalled = timeline.signal
    if signalled is None:
        return ""
    for flaw in STARTUP_FLAWS:
        version = flaw.found_in(worker.servers)
        if version is None:
            continue
        if flaw.hangs != (timeline.sigkill is not None):
            continue
        if not flaw.hangs and timeline.signal_that_ended(worker.pid) is None:
            continue
        if any(view.pid == worker.pid and view.start is not None and view.start < signalled
               for view in timeline.requests.values()):  # fmt: skip
            return ""  # it was serving: its startup was over
        return (
            f"; the stop signal came at {timeline.at(signalled)}, before the server had served anything (its "
            f"lifespan startup completed at {timeline.at(worker.startup_complete)}), and {flaw.told(version)}"
        )
    return ""


def _per_thread_remedy(resource: ResourceView) -> str:
    """
    What closes a peewee connection a request opened: peewee keeps one per thread, so the
    lifespan's `close()` closes its own thread's and never this one.
    """
    if resource.library != "peewee" or resource.long_lived:
        return ""
    return (
        "peewee keeps a connection per thread and the lifespan's close() closes only its own: open and "
        "close one around each request (a dependency or middleware that calls connect() and close(), "
        "as peewee's guide does)"
    )


def fate_of(timeline: Timeline, task: TaskView) -> Fate:
    worker = timeline.workers.get(task.pid)
    teardown = worker.teardown if worker else None
    if task.started is None:
        return Fate.DROPPED
    if task.finished is not None:
        if teardown is not None and task.finished > teardown:
            return Fate.RAN_AFTER_TEARDOWN
        return Fate.FAILED if task.failed else Fate.COMPLETED
    if task.cancelled is not None and not task.sync:
        return Fate.CANCELLED
    # Killed or abandoned, told apart by the journal's order of events, not by the exit code: a
    # worker whose lifespan shutdown completed closed its loop cleanly, and a task still pending
    # then was abandoned by it, even when the worker or the server then dies of the stop signal
    # it re-raises to exit (uvicorn exits 143 after a clean shutdown; gunicorn then logs its
    # worker "was sent SIGTERM!"). A task is killed when a fault SIGKILLed its worker, or its
    # worker or the server died of a signal before the worker's shutdown completed. Lost: none
    # of these, e.g. a worker that vanished without a clean shutdown.
    if any(e.kind == Kind.FAULT_INJECTED for e in timeline.events if e.get("target") == task.pid):
        return Fate.KILLED
    if worker is not None and worker.shutdown_complete is not None:
        return Fate.ABANDONED
    if timeline.death_of(task.pid) is not None:
        return Fate.KILLED  # its parent (or drainspec, its subreaper) saw it die of a signal
    return Fate.KILLED if timeline.died_by_signal else Fate.LOST


def _account(death: Event) -> str:
    """Who saw a worker die (`worker.exited`): its parent, or drainspec reaping it after its parent."""
    return str(death.get("account") or "its parent's account")


def _describe_fate(timeline: Timeline, task: TaskView, fate: Fate, *, whose: str | None = None) -> Evidence:
    """One task's fate and how it came to it; `whose` says whose work it was (its request's by default)."""
    whose = f" of request {task.request or '?'}" if whose is None else whose
    text = f"{task.name} [{task.id}]{whose}: {fate.value}"
    if fate == Fate.RAN_AFTER_TEARDOWN:
        text += f" (its work ended at {timeline.at(task.finished)})"
    elif fate == Fate.FAILED:
        text += f" ({task.failed})"
    elif fate in (Fate.KILLED, Fate.LOST, Fate.ABANDONED):
        text += f" (started {timeline.at(task.started)}, never ended)"
        fault = next(
            (e for e in timeline.events if e.kind == Kind.FAULT_INJECTED and e.get("target") == task.pid), None
        )
        worker = timeline.workers.get(task.pid)
        death = timeline.death_of(task.pid)
        if fault is not None:
            text += f"; its worker {task.pid} was SIGKILLed by the fault {fault.get('fault')} at {timeline.at(fault.t)}"
        elif fate == Fate.ABANDONED and worker is not None:
            closed = timeline.at(worker.shutdown_complete)
            text += f"; still pending when worker {task.pid}'s loop closed after its shutdown at {closed}"
            if death is not None:
                text += f", the worker then dying of {death.get('signal')} ({_account(death)})"
        elif death is not None:
            read = f"{_account(death)}, read at {timeline.at(death.t)}"
            text += f"; its worker {task.pid} died of {death.get('signal')} ({read})"
        if task.cancelled is not None:
            text += f"; cancelled at {timeline.at(task.cancelled)} but its thread ran on"
    elif fate == Fate.DROPPED:
        text += " (queued, never started)"
    if task.failed and fate != Fate.FAILED:
        text += f"; it raised {task.failed}"
    # Each fate dated when it became final: a task killed, lost or abandoned with its worker's end.
    ended = {Fate.COMPLETED: task.finished, Fate.FAILED: task.finished, Fate.RAN_AFTER_TEARDOWN: task.finished}
    owner, end = timeline.requests.get(task.request or ""), timeline.end_of(task.pid)
    dropped = (owner.end if owner is not None else None) or end
    when = {**ended, Fate.CANCELLED: task.cancelled, Fate.DROPPED: dropped}.get(fate, end)
    when = when or task.started or task.queued
    return Evidence(text, request=task.request, task=task.id, worker=task.pid, t=when)


def service_fate(timeline: Timeline, task: TaskView) -> Fate:
    """
    A task the app spawned during its lifespan startup (a queue consumer, a refresher) is its to
    stop: it must have ended, however, before its worker's lifespan shutdown completed. One still
    running then was cancelled with the loop (abandoned: a job it held is lost) or killed.
    """
    worker = timeline.workers.get(task.pid)
    done = worker.shutdown_complete if worker else None
    end = task.work_end
    if end is not None and (done is None or end <= done):
        return Fate.STOPPED
    if end is not None:
        return Fate.ABANDONED  # ended after the teardown had: cancelled by the loop's closing, or never awaited
    return fate_of(timeline, task)


def background_fate(timeline: Timeline) -> Verdict:
    """
    Each background task classified, and checked against the expected policy; each task the app
    spawned at startup checked to be stopped by its teardown, whatever the policy.
    """
    name = VerdictName.BACKGROUND_FATE
    services = {task.id: service_fate(timeline, task) for task in timeline.service_tasks.values()}
    if not timeline.tasks and not services:
        return _not_applicable(name, "no background task was queued")
    policy = timeline.scenario.background_policy if timeline.scenario else "complete"
    allowed = ALLOWED_FATES.get(policy, ALLOWED_FATES["complete"])
    fates = {task.id: fate_of(timeline, task) for task in timeline.tasks.values()}
    counts: dict[str, int] = {}
    for fate in fates.values():
        counts[fate.value] = counts.get(fate.value, 0) + 1
    tally = ", ".join(f"{count} {fate}" for fate, count in sorted(counts.items()))
    if preflight := sum(task.from_preflight for task in timeline.tasks.values()):
        tally += f"; {preflight} of them queued by the preflight's request"  # or "5 tasks" reads as a miscount
    bad = [task for task in timeline.tasks.values() if fates[task.id] not in allowed]
    outlived = [task for task in timeline.service_tasks.values() if services[task.id] not in SERVICE_FATES]
    evidence = [_describe_fate(timeline, task, fates[task.id]) for task in bad]
    evidence += [_describe_service(timeline, task, services[task.id]) for task in outlived]
    broke = [f"{len(bad)} task(s) broke the '{policy}' policy: {tally}"] if bad else []
    if outlived:
        broke.append(f"{len(outlived)} of {len(services)} task(s) the app started at startup outlived its teardown")
    if broke:
        if fates and not bad:  # the request's tasks, which kept the policy
            broke.append(f"{len(fates)} task(s): {tally}")
        return _fail(name, "; ".join(broke), evidence)
    ended = f"{len(services)} task(s) started at startup, all ended before teardown completed" if services else ""
    summary = "; ".join(part for part in (f"{len(fates)} task(s): {tally}" if fates else "", ended) if part)
    return _pass(name, f"{summary} (policy '{policy}')")


def _describe_service(timeline: Timeline, task: TaskView, fate: Fate) -> Evidence:
    worker = timeline.workers.get(task.pid)
    text = f"{task.name} [{task.id}], started at startup {timeline.at(task.started)}: {fate.value}"
    if fate == Fate.ABANDONED and worker is not None and worker.shutdown_complete is not None:
        completed = f"worker {task.pid}'s lifespan shutdown completed at {timeline.at(worker.shutdown_complete)}"
        if task.cancel_requested:
            # The teardown called cancel() and went on: cancel() only asks, and the request is
            # carried out at the task's next step, after the teardown, or never.
            ended = f"its cancellation ran at {timeline.at(task.cancelled)}" if task.cancelled else "it never ran"
            text += f" (the teardown called its cancel() without awaiting it: still pending when {completed}; {ended})"
            text += "; await the task after cancelling it, so that its cancellation runs before the teardown goes on"
        else:
            # Cancelled after the shutdown by the loop closing, or never: its last steps ran after teardown.
            ended = (
                f"cancelled only at {timeline.at(task.cancelled)}" if task.cancelled else "the process exited under it"
            )
            unasked = "; the teardown never asked it to stop" if task.cancel_requested is False else ""
            text += f" (still running when {completed}; {ended}{unasked})"
            text += "; stop it in the lifespan's teardown: cancel it and await it, or tell it to finish"
        return Evidence(text, task=task.id, worker=task.pid, t=worker.shutdown_complete)
    return _describe_fate(timeline, task, fate, whose=", started at startup")


def teardown_ran(timeline: Timeline) -> Verdict:
    """
    Lifespan shutdown completed on every worker that began its startup (SIGKILL or a forced
    exit skip it). A worker stopped in the middle of its startup never gets a shutdown: what
    the startup had opened so far is never closed, and that fails too.
    """
    name = VerdictName.TEARDOWN_RAN
    started = [w for w in timeline.workers.values() if w.startup_complete is not None or w.startup_received is not None]
    if not started:
        refused = next((e for e in timeline.events if e.kind == Kind.LIFESPAN_UNSUPPORTED), None)
        if refused is not None and refused.get("error"):
            # The app's own answer, so that an app that could not even be called reads as one.
            answer = refused.get("error")
            return _not_applicable(name, f"the app refused the lifespan scope ({answer}); the server ran without one")
        return _not_applicable(name, "the server ran no lifespan startup (lifespan off?)")
    problems = []
    for worker in started:
        if worker.shutdown_complete is not None:
            continue
        if worker.startup_complete is None:
            text = (
                f"worker {worker.pid}: lifespan startup began at {timeline.at(worker.startup_received)} and never "
                f"completed, so no shutdown ran (last sign of life at {timeline.at(worker.last_event)})"
            )
        elif worker.shutdown_failed is not None:
            text = f"worker {worker.pid}: lifespan shutdown failed: {failure_line(worker.shutdown_failed)}"
        elif worker.shutdown_received is not None:
            text = (
                f"worker {worker.pid}: lifespan shutdown began at "
                f"{timeline.at(worker.shutdown_received)} and never completed"
            )
        else:
            text = (
                f"worker {worker.pid}: lifespan shutdown never began "
                f"(last sign of life at {timeline.at(worker.last_event)})"
            )
        if (death := timeline.death_of(worker.pid)) is not None:
            text += f"; it died of {death.get('signal')} ({_account(death)})"
        text += _server_flaw(timeline, worker)
        problems.append(Evidence(text, worker=worker.pid))
    if problems:
        summary = f"teardown did not complete on {len(problems)} of {len(started)} worker(s)"
        if timeline.sigkill is not None:
            problems.append(Evidence(f"SIGKILL was sent at {timeline.at(timeline.sigkill)}", t=timeline.sigkill))
        return _fail(name, summary, problems)
    return _pass(name, f"lifespan shutdown completed on {len(started)} worker(s)")


SEEN_BY_ITSELF = "SQLAlchemy, asyncpg, psycopg 3, psycopg_pool, psycopg2's pools, peewee, redis, httpx and aiohttp"
"""`chaos.probe.resources.LIBRARIES` as a sentence (the judge never loads the hooks); a test keeps them in step."""


def _unhooked(timeline: Timeline) -> str:
    """`; the app loaded psycopg2 and pymongo, which drainspec does not hook`, when it did."""
    names = sorted(timeline.unhooked)
    if not names:
        return ""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return f"; the app loaded {listed}, which drainspec does not hook"


def loop_not_blocked(timeline: Timeline) -> Verdict:
    """
    No event-loop stall over the threshold while the process served or shut down; the evidence
    names the blocking frame. A stall that ended before its process served anything and before
    the shutdown began (an HTTP client loading its CA bundle in the lifespan startup) held up no
    request and no teardown: it is named in the summary, not failed on, so a loaded CI machine
    does not fail a correct app for its start-up.
    """
    name = VerdictName.LOOP_NOT_BLOCKED
    threshold = timeline.scenario.stall_ms if timeline.scenario else None
    limit = f" over {threshold:g} ms" if threshold else ""
    if not timeline.workers:
        return _not_applicable(name, "no server process loaded the probe")
    frozen = timeline.stopped_windows()
    unfrozen = [event for event in timeline.stalls if not _during(event, frozen, threshold or 0.0)]
    at_startup = [event for event in unfrozen if _before_serving(timeline, event)]
    stalls = [event for event in unfrozen if event not in at_startup]
    notes = []
    if excused := len(timeline.stalls) - len(unfrozen):
        notes.append(f"{excused} stall(s) while the harness had the process frozen with SIGSTOP")
    if at_startup:
        notes.append(f"{_startup_stalls(at_startup)}, before the process served and before the shutdown began")
    note = f" ({'; '.join(notes)})" if notes else ""
    if not stalls:
        return _pass(name, f"no event-loop stall{limit} while serving or shutting down{note}")
    evidence = []
    for event in stalls:
        if event.kind == Kind.LOOP_STALL:
            text = (
                f"{timeline.at(event.t)} pid {event.pid}: loop stalled for "
                f"{event.get('stalled_ms')} ms so far, blocked in {event.get('frame')}"
            )
        else:
            text = f"{timeline.at(event.t)} pid {event.pid}: a heartbeat came {event.get('lag_ms')} ms late"
        evidence.append(Evidence(text, worker=event.pid, t=event.t))
    return _fail(name, f"the event loop was blocked{limit}", evidence)


def _before_serving(timeline: Timeline, stall: Event) -> bool:
    """
    Whether a stall ended before its process served (its lifespan startup completed, or its
    first request began) and before the shutdown began. A stall is journaled once the loop runs
    again (`loop.lag`) or while it lasts (`loop.stall`): either way its time is before its end,
    and a process whose loop is stalled cannot journal its startup's completion.
    """
    serving = timeline.workers[stall.pid].serving if stall.pid in timeline.workers else None
    began = timeline.shutdown_began
    return serving is not None and stall.t <= serving and (began is None or stall.t < began)


def _startup_stalls(stalls: Sequence[Event]) -> str:
    """
    `the loop stalled at startup, up to 254 ms, in app/main.py:12 in lifespan`: the longest, and
    the frame the watchdog caught (one stall may be journaled twice, while it lasts and after).
    """

    longest = max(stalls, key=_stalled_ms)
    caught = [event for event in stalls if event.get("frame")]
    where = f", in {max(caught, key=_stalled_ms).get('frame')}" if caught else ""
    return f"the loop stalled at startup, up to {_stalled_ms(longest):g} ms{where}"


def _stalled_ms(stall: Event) -> float:
    """How long a stall had lasted when journaled: a late heartbeat's lag, or the watchdog's count."""
    return float(stall.get("lag_ms") or stall.get("stalled_ms") or 0)


def _during(event: Event, windows: Sequence[tuple[int, int]], threshold_ms: float) -> bool:
    """
    Whether a stall or late heartbeat is explained by a window when the process was frozen:
    what is left of it outside the windows is under the threshold.
    """
    span = _stalled_ms(event) * 1e6
    start, end = event.t - span, event.t
    frozen = sum(max(0.0, min(end, stop) - max(start, begin)) for begin, stop in windows)
    return frozen > 0 and (span - frozen) / 1e6 < threshold_ms


def no_refused_while_routed(timeline: Timeline) -> Verdict:
    """
    No client error on a connection the router sent to the terminating pod. Each request is
    judged by the router's own decision for its connection (`router.decision`, joined to the
    request by `router.request`): routed to the pod after its deletion (or reset there by the
    router's chaos) counts; refused because the router had already removed the endpoint does
    not, whenever the client sent it (that is the next replica's business, and there is none in
    a one-pod replay). A request the router journaled no decision for (an older journal) is
    judged by its send time, between the deletion and the endpoint's removal.
    """
    name = VerdictName.NO_REFUSED_WHILE_ROUTED
    if timeline.deleted is None:
        return _not_applicable(name, "no router in this run (drainspec k8s replays one)")
    deleted, until = timeline.deleted, timeline.routed_until
    decisions: dict[Any, Event] = {}
    carried: dict[str, Any] = {}
    proxied: dict[str, Event] = {}  # a real ingress proxy's account of each request (its access log)
    for event in timeline.events:
        if event.kind == Kind.ROUTER_DECISION:
            decisions[event.get("conn")] = event
        elif event.kind == Kind.ROUTER_REQUEST:
            carried[str(event.get("id"))] = event.get("conn")
        elif event.kind == Kind.PROXY_REQUEST and event.get("id"):
            proxied[str(event.get("id"))] = event
    routed: list[Event] = []
    refused_by_router = 0
    for view in timeline.requests.values():
        client = view.client
        if client is None or client.get("role") == "kubelet":  # preStop httpGet goes straight to the pod
            continue
        proxy = proxied.get(view.id)
        if proxy is not None and int(client.get("sent", 0)) >= deleted:
            # The proxy answered it without trying any pod: its upstream set no longer held one.
            if not proxy.get("attempts"):
                refused_by_router += int(client.get("outcome") != "ok")
            else:
                routed.append(client)
            continue
        decision = decisions.get(carried.get(view.id))
        if decision is not None:
            if int(decision.get("accepted", decision.t)) < deleted:
                continue
            if decision.get("decision") == "no-endpoint":
                refused_by_router += int(client.get("outcome") != "ok")
                continue
            routed.append(client)
            continue
        sent = int(client.get("sent", 0))
        if sent >= deleted and (until is None or sent < until):
            routed.append(client)
    window = f"from the deletion to {timeline.at(until)}"
    aside = (
        f"; {refused_by_router} more refused by the router after it removed the endpoint, not blamed on the pod"
        if refused_by_router
        else ""
    )
    if not routed:
        return _not_applicable(name, f"no request was sent while the terminating pod was still routed{aside}")
    failures = [event for event in routed if event.get("outcome") != "ok"]
    if failures:
        evidence = _failed_requests(timeline, failures)
        summary = f"{len(failures)} of {len(routed)} requests failed while still routed to the pod ({window}){aside}"
        return _fail(name, summary, evidence)
    return _pass(name, f"all {len(routed)} requests sent while the pod was still routed succeeded ({window}){aside}")


def _failed_requests(timeline: Timeline, failures: Sequence[Event]) -> list[Evidence]:
    """Failed client requests, one item each up to `MAX_LISTED`, then how many more."""
    evidence = []
    for event in failures[:MAX_LISTED]:
        sent = int(event.get("sent", event.t))
        status = f" (HTTP {event.get('status')})" if event.get("status") else ""
        text = f"{event.get('id')} {event.get('method')} {event.get('path')} sent {timeline.at(sent)}: "
        evidence.append(Evidence(text + f"{event.get('outcome')}{status}", request=str(event.get("id")), t=sent))
    if len(failures) > MAX_LISTED:
        evidence.append(Evidence(f"... and {len(failures) - MAX_LISTED} more"))
    return evidence


PROXY_CAUSES = {
    "refused": (
        "the pod no longer accepted connections while the proxy still routed to it",
        "a preStop sleep longer than the ingress controller's propagation, so the pod keeps accepting until "
        "the proxy has dropped it",
    ),
    "keep-alive": (
        "the keep-alive race: the proxy reused a pooled connection the pod had closed (the pod's keep-alive "
        "timeout is shorter than the proxy's upstream keep-alive timeout, or it closed idle connections at the signal)",
        "the server's keep-alive timeout above the proxy's upstream keep-alive timeout (uvicorn --timeout-keep-alive "
        "above ingress-nginx's upstream-keepalive-timeout, 60 s), a preStop long enough that the pod is dropped "
        "before it stops; the proxy retries only idempotent requests (proxy_next_upstream never retries a POST)",
    ),
    "timeout": (
        "the pod did not answer within the proxy's timeout",
        "a server shutdown timeout below the proxy's read timeout, and a grace period that covers it",
    ),
    "other": ("the proxy could not get an answer from the pod", "see the proxy's error text"),
}


def _late_requests(timeline: Timeline) -> list[Evidence]:
    """What the emulated network saw (`chaos.k8s.link`): requests written onto connections a pod had closed."""
    late = [e for e in timeline.events if e.kind == Kind.LINK_LATE_REQUEST]
    if not late:
        return []
    by_pod: dict[str, list[Event]] = {}
    for event in late:
        by_pod.setdefault(str(event.get("pod")), []).append(event)
    evidence = []
    for pod, events in by_pod.items():
        after = sorted(float(e.get("sent_after_close") or 0) * 1000 for e in events)
        delay = float(events[0].get("delay") or 0) * 1000
        first = min(e.t for e in events)
        evidence.append(
            Evidence(
                f"on the network to {pod} ({delay:g} ms each way): the proxy wrote {len(events)} request(s) onto "
                f"pooled connections the pod closed, {after[0]:+.1f} to {after[-1]:+.1f} ms from the close "
                f"(first at {timeline.at(first)}): the close had not reached the proxy yet",
                t=first,
            )
        )
    return evidence


def _proxy_cause(error: str, status: int) -> str:
    text = error.lower()
    if "connect() failed" in text or "refused" in text:
        return "refused"
    if any(words in text for words in ("prematurely closed", "reset by peer", "recv() failed", "broken pipe")):
        return "keep-alive"
    if status == 504 or "timed out" in text:
        return "timeout"
    return "other"


def no_proxy_errors(timeline: Timeline) -> Verdict:
    """
    No 502/504 from a real ingress proxy in front of the pods (`drainspec k8s --ingress`), each
    one named by the proxy's own log: the pod it tried, the error, the cause and its fix. A
    request the proxy retried on another pod and got answered is not an error (it is counted).
    """
    name = VerdictName.NO_PROXY_ERRORS
    proxied = [e for e in timeline.events if e.kind == Kind.PROXY_REQUEST]
    if not proxied:
        return _not_applicable(name, "no ingress proxy in this run (drainspec k8s --ingress nginx replays one)")
    retried = [e for e in proxied if len(e.get("attempts") or ()) > 1 and int(e.get("status", 0)) < 500]
    # 502/504, and a 503 after trying a pod (HAProxy's answer when every attempt failed); a 503
    # without any attempt is the proxy's own "no endpoint", judged by no-refused-while-routed.
    errors = [
        e
        for e in proxied
        if int(e.get("status", 0)) in (502, 504) or (int(e.get("status", 0)) == 503 and e.get("attempts"))
    ]
    aside = f"; it retried {len(retried)} request(s) on another pod, answered" if retried else ""
    if not errors:
        return _pass(name, f"no proxy error (502/504) in {len(proxied)} request(s) through the proxy{aside}")
    causes: dict[str, int] = {}
    evidence: list[Evidence] = []
    for event in errors:
        attempts = [a for a in event.get("attempts") or () if isinstance(a, dict)]
        last = next((a for a in reversed(attempts) if a.get("error")), attempts[-1] if attempts else {})
        error = str(last.get("error") or "no error text")
        cause = _proxy_cause(error, int(event.get("status", 0)))
        causes[cause] = causes.get(cause, 0) + 1
        if len(evidence) < MAX_LISTED:
            tried = ", ".join(f"{a.get('pod') or a.get('addr')} {a.get('status') or '-'}" for a in attempts) or "none"
            text = (
                f"{event.get('id') or '?'} {event.get('request')}: HTTP {event.get('status')} at {timeline.at(event.t)}"
                f" (proxy connection {event.get('proxy_connection')}; tried {tried}): {error}"
            )
            evidence.append(Evidence(text, request=str(event.get("id") or "") or None, t=event.t))
    if len(errors) > MAX_LISTED:
        evidence.append(Evidence(f"... and {len(errors) - MAX_LISTED} more"))
    for cause, count in causes.items():
        why, fix = PROXY_CAUSES[cause]
        evidence.append(Evidence(f"{count} x {why}; fix: {fix}"))
    evidence.extend(_late_requests(timeline))
    tally = ", ".join(f"{count} {cause}" for cause, count in sorted(causes.items()))
    return _fail(
        name, f"{len(errors)} of {len(proxied)} request(s) got a proxy error (502/503/504) ({tally}){aside}", evidence
    )


def nothing_left_running(timeline: Timeline) -> Verdict:
    """
    Nothing the servers started outlived them: a child that left the process tree (`setsid`, a
    double fork) keeps a port, a lock or a write going after the pod is gone; in a cluster it dies
    with the container's cgroup, unfinished. drainspec kills each at the end and names it here.
    """
    name = VerdictName.NOTHING_LEFT_RUNNING
    swept = [e for e in timeline.events if e.kind == Kind.PROCESSES_SWEPT]
    if not swept:
        return _not_applicable(name, "the journal has no end-of-run sweep for processes the servers left behind")
    escaped = [e for e in timeline.events if e.kind == Kind.PROCESS_ESCAPED]
    if not escaped:
        return _pass(name, "no process the servers started outlived them")
    evidence = [
        Evidence(f"pid {e.get('target')} ({e.get('command') or '?'}) still ran after the servers exited; killed")
        for e in escaped[:MAX_LISTED]
    ]
    if len(escaped) > MAX_LISTED:
        evidence.append(Evidence(f"... and {len(escaped) - MAX_LISTED} more"))
    return _fail(
        name,
        f"{len(escaped)} process(es) started by the app outlived the server (setsid or double fork): "
        "stop them in the lifespan teardown",
        evidence,
    )


def within_grace(timeline: Timeline) -> Verdict:
    """The process exited on its own before the grace deadline: no SIGKILL."""
    name = VerdictName.WITHIN_GRACE
    if timeline.signal is None or timeline.exit is None:
        return _not_applicable(name, "the server was not stopped by a signal in this run")
    grace = timeline.scenario.grace if timeline.scenario else None
    budget = f" (grace {grace:g}s)" if grace is not None else ""
    if timeline.exit.get("killed"):
        return _fail(
            name,
            f"still running at the deadline; SIGKILLed at {timeline.at(timeline.sigkill)}{budget}",
            _held_at_the_deadline(timeline),
        )
    took = timeline.seconds(timeline.signal, timeline.exit.t)
    code = timeline.exit.get("exit_code")
    return _pass(name, f"exited on its own {took:.3f}s after {timeline.signal_name} with code {code}{budget}")


def _held_at_the_deadline(timeline: Timeline) -> list[Evidence]:
    """
    What the server was still waiting for when SIGKILL came: each request whose call never
    ended (a stream whose body never ended, or one with no answer yet), each lifespan shutdown
    still running, and, for a server that drains with no time limit unless told, how to bound it.
    """
    killed = timeline.sigkill
    if killed is None:
        return []
    held = [
        request
        for request in timeline.requests.values()
        if request.start is not None and request.start < killed and request.end is None
    ]
    evidence = []
    for request in held[:MAX_LISTED]:
        # The headers of a stream that has sent no chunk yet are seen by its client alone: the
        # probe writes a streamed response's start with its first chunk.
        status = request.status or (request.client.get("status") if request.client is not None else None)
        if status is not None and request.response_end is None:
            state = f"its response begun (HTTP {status}) and its body never ended: a stream nobody ended"
        elif request.response_end is not None:
            state = "answered, its call still running (its background work)"
        else:
            state = "no answer yet"
        text = f"{request.id} {request.path}, in flight since {timeline.at(request.start)}: {state}"
        evidence.append(Evidence(text, request=request.id, worker=request.pid, t=request.start))
    if len(held) > MAX_LISTED:
        evidence.append(Evidence(f"and {len(held) - MAX_LISTED} more request(s) in flight"))
    for worker in timeline.workers.values():
        began = worker.shutdown_received
        if began is not None and began < killed and worker.shutdown_complete is None and worker.shutdown_failed is None:
            text = (
                f"worker {worker.pid}: its lifespan shutdown, begun at {timeline.at(began)}, had not completed: "
                "the teardown itself ran into the deadline"
            )
            evidence.append(Evidence(text, worker=worker.pid, t=began))
    advice = _drain_advice(timeline) if held else None
    if advice is not None:
        evidence.append(Evidence(advice))
    return evidence


def _drain_advice(timeline: Timeline) -> str | None:
    """How to bound a drain the server leaves unbounded (uvicorn's, unless told), when the run left it so."""
    # Here: the drain bound's reader and the budget's margin, read only when a drain ran into SIGKILL.
    from chaos.k8s.manifest import MARGIN, server_timeout
    from chaos.servers import SERVERS

    scenario = timeline.scenario
    if scenario is None or scenario.command is not None or scenario.server not in SERVERS:
        return None
    bound = server_timeout([scenario.server, *scenario.server_args], scenario.env)
    if bound is None or bound.seconds is not None or bound.unread is not None:
        return None
    spec = SERVERS[bound.server]
    return (
        f"{spec.name} waits for every request in flight with no time limit unless told: end long-lived streams "
        f"when shutdown begins, or {spec.timeout_advice(scenario.grace - MARGIN)} (the grace less a {MARGIN} s margin)"
    )


def signal_reaches_app(timeline: Timeline) -> Verdict:
    """
    The stop signal reached the app. Evidence, strongest first: a worker began its teardown;
    the signalled process had a handler for the signal; the signalled process was itself the
    app (it loaded the probe) and exited. A process with no handler at PID 1 never sees the
    signal; a wrapper shell outside a namespace dies of it and leaves the app untold.
    """
    name = VerdictName.SIGNAL_REACHES_APP
    if timeline.signal is None or timeline.exit is None or not timeline.signals:
        return _not_applicable(name, "no stop signal was sent")
    sent = timeline.signals[0]
    who = f"pid {sent.get('target')} ({sent.get('comm') or '?'})"
    reacted = [w for w in timeline.workers.values() if w.teardown is not None and w.teardown > timeline.signal]
    if reacted:
        first = min(w.teardown for w in reacted if w.teardown is not None)
        return _pass(name, f"shutdown began at {timeline.at(first)}")
    handled = sent.get("handled")
    if handled is False:
        is_app = sent.get("target") in timeline.workers
        if timeline.replay and not is_app:
            detail = "it is PID 1 of the pod and has no handler, so the kernel drops the signal"
        elif not is_app:
            detail = "it has no handler, so it died of it and the app under it was never told"
        else:
            detail = "the app has no handler for it"
        if not timeline.exit.get("killed") and is_app:
            return _pass(name, f"{timeline.signal_name} killed the app outright: {detail} (see teardown-ran)")
        return _fail(name, f"{timeline.signal_name} to {who} never reached the app: {detail}")
    # A handled signal (a handler, or blocked and waited for as tini and dumb-init do) only
    # reached the app if the app acted on it: in a pod, an init that forwards it to a shell
    # which dies of it exits at once, and the kernel kills the app with the namespace.
    started = [w for w in timeline.workers.values() if w.startup_complete is not None]
    if timeline.replay and started and not timeline.exit.get("killed"):
        return _fail(
            name,
            f"{timeline.signal_name} reached {who}, which exited at {timeline.at(timeline.exit.t)}, but the app never "
            "began its shutdown: it was killed with the pod's namespace when PID 1 exited (an init in front of a "
            "shell that does not exec the server forwards the signal to the shell, which dies of it)",
        )
    if not timeline.exit.get("killed"):
        return _pass(name, f"{who} took {timeline.signal_name} and exited at {timeline.at(timeline.exit.t)}")
    return _pass(
        name,
        f"{timeline.signal_name} reached a handler in {who}; the app's teardown (its lifespan shutdown) had not "
        "begun when SIGKILL came (see within-grace)",
    )


def data_integrity(timeline: Timeline) -> Verdict:
    name = VerdictName.DATA_INTEGRITY
    if timeline.integrity is None:
        return _not_applicable(name, "no integrity check was given (--integrity module:function)")
    check = timeline.integrity.get("check")
    error = timeline.integrity.get("error")
    if error:
        # A broken check says nothing about the data: not a verdict (the run ends with exit 2).
        summary = f"{check} itself crashed: {exception_line(error)}"
        return Verdict(name.value, Status.NOT_APPLICABLE, summary, (Evidence(str(error)),))
    problems = [Evidence(str(p)) for p in timeline.integrity.get("problems") or ()]
    if problems:
        return _fail(name, f"{check} found {len(problems)} problem(s)", problems)
    return _pass(name, f"{check} found every confirmed write whole")


def rollout_zero_failed_requests(timeline: Timeline) -> Verdict:
    """
    During a rolling update, every request of the steady load got a full response: the one
    question a rollout is judged by in production.
    """
    name = VerdictName.ROLLOUT_ZERO_FAILED
    if not timeline.rollout:
        return _not_applicable(name, "not a rolling update (drainspec k8s --rollout replays one)")
    steady = [
        view.client
        for view in timeline.requests.values()
        if view.client is not None and view.client.get("role") == "steady"
    ]
    if not steady:
        return _fail(name, "no request was sent during the rollout: nothing was judged")
    steady.sort(key=lambda event: int(event.get("sent", event.t)))
    failures = [event for event in steady if event.get("outcome") != "ok"]
    if failures:
        counts: dict[str, int] = {}
        for event in failures:
            outcome = str(event.get("outcome"))
            counts[outcome] = counts.get(outcome, 0) + 1
        tally = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()))
        summary = f"{len(failures)} of {len(steady)} requests during the rolling update failed ({tally})"
        return _fail(name, summary, _failed_requests(timeline, failures))
    return _pass(name, f"all {len(steady)} requests during the rolling update succeeded")


CHECKS: dict[VerdictName, Callable[[Timeline], Verdict]] = {
    VerdictName.INFLIGHT_COMPLETED: inflight_completed,
    VerdictName.TEARDOWN_AFTER_DRAIN: teardown_after_drain,
    VerdictName.NO_USE_AFTER_CLOSE: no_use_after_close,
    VerdictName.BACKGROUND_FATE: background_fate,
    VerdictName.TEARDOWN_RAN: teardown_ran,
    VerdictName.LOOP_NOT_BLOCKED: loop_not_blocked,
    VerdictName.NO_REFUSED_WHILE_ROUTED: no_refused_while_routed,
    VerdictName.WITHIN_GRACE: within_grace,
    VerdictName.SIGNAL_REACHES_APP: signal_reaches_app,
    VerdictName.DATA_INTEGRITY: data_integrity,
    VerdictName.RESOURCES_CLOSED: resources_closed,
    VerdictName.ROLLOUT_ZERO_FAILED: rollout_zero_failed_requests,
    VerdictName.NO_PROXY_ERRORS: no_proxy_errors,
    VerdictName.NOTHING_LEFT_RUNNING: nothing_left_running,
}


NOT_JUDGED_IN_A_ROLLOUT: dict[VerdictName, str] = {
    VerdictName.INFLIGHT_COMPLETED: ROLLOUT_REASON,
    VerdictName.NO_REFUSED_WHILE_ROUTED: ROLLOUT_REASON,
    VerdictName.TEARDOWN_AFTER_DRAIN: PER_POD_REASON,
    VerdictName.BACKGROUND_FATE: PER_POD_REASON,
    VerdictName.TEARDOWN_RAN: PER_POD_REASON,
    VerdictName.WITHIN_GRACE: PER_POD_REASON,
    VerdictName.SIGNAL_REACHES_APP: PER_POD_REASON,
    VerdictName.RESOURCES_CLOSED: PER_POD_REASON,
}
"""
In a rolling update several pods stop one after another, each journaling as PID 1 of its own
namespace: verdicts about one server's shutdown would mix them up, so they say why they are not
judged. The problems that are real in whichever pod they happen (a blocked loop, a pool used
after close, lost data) are still judged.
"""


def judge(events: Sequence[Event] | Timeline) -> list[Verdict]:
    """Every verdict, in the order of `VerdictName`."""
    timeline = events if isinstance(events, Timeline) else build(events)
    verdicts = []
    for name, check in CHECKS.items():
        if timeline.rollout and name in NOT_JUDGED_IN_A_ROLLOUT:
            verdicts.append(_not_applicable(name, NOT_JUDGED_IN_A_ROLLOUT[name]))
        else:
            verdicts.append(check(timeline))
    return verdicts


def failed(verdicts: Sequence[Verdict]) -> set[str]:
    return {verdict.name for verdict in verdicts if verdict.failed}
