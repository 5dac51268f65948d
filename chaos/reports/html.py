"""
One run as a self-contained HTML page (`timeline.html`), rebuilt from the journal alone: the
verdicts on top, failures first in red with their evidence, then one lane per worker, request
and background task on one axis in seconds from the stop signal (or from the pod's deletion in
a Kubernetes replay), with a vertical marker for every step of the shutdown. A lane is flagged
red when its request failed, its task met a fate the policy forbids, or a failed verdict's
evidence names it (its `request`, `task` or `worker` field).

Inline CSS and inline SVG only: no script, no font, no image, no URL. The file opens the same
from a CI artifact on an air-gapped machine, and opening it can never leak anything. Hover
titles (`<title>` in SVG) carry the exact times, without JavaScript.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chaos.journal import Event, Kind
from chaos.judge.timeline import RequestView, TaskView, Timeline, WorkerView
from chaos.judge.verdict import (
    ALLOWED_FATES,
    SERVICE_FATES,
    Evidence,
    Fate,
    Status,
    Verdict,
    fate_of,
    service_fate,
)
from chaos.outdir import write_file

MAX_LANES = 200  # requests and tasks together; workers and aggregate lanes always shown
WIDTH = 1160  # fits a 1200 px window with the page margins
PLOT_LEFT, PLOT_RIGHT = 270, WIDTH - 16
LABEL_CHARS = 40  # what fits the label column at 11 px
LANE_HEIGHT = 18
EVIDENCE_SHOWN = 8  # a failed verdict's first items; the rest fold away, so the lanes stay in view
HEADING_HEIGHT = 22
MARKER_ROW_HEIGHT = 14
AXIS_HEIGHT = 22
CHAR_WIDTH = 6.4  # average glyph width at 11 px, to keep marker labels from overlapping
NICE_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)

STATUS_LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_APPLICABLE: "n/a"}
FATE_LABEL = {
    Fate.COMPLETED: "completed",
    Fate.CANCELLED: "cancelled",
    Fate.DROPPED: "dropped (never started)",
    Fate.KILLED: "killed (running at SIGKILL)",
    Fate.LOST: "lost (started, never ended)",
    Fate.ABANDONED: "abandoned (pending when the loop closed)",
    Fate.FAILED: "failed (raised)",
    Fate.RAN_AFTER_TEARDOWN: "ran after teardown",
    Fate.STOPPED: "ended before teardown completed",
}

CSS = """
body{font:13px/1.4 "DejaVu Sans",system-ui,sans-serif;color:#202124;margin:16px auto;max-width:1168px;padding:0 8px}
h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:18px 0 6px}
.result{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;font-size:14px;vertical-align:2px}
.result.pass,.badge.pass{background:#2e7d32}.result.fail,.badge.fail{background:#c62828}
.badge{display:inline-block;min-width:34px;text-align:center;border-radius:3px;color:#fff;font-size:11px;
font-weight:bold;padding:0 4px}.badge.not-applicable{background:#bdc1c6;color:#3c4043}
.meta{color:#5f6368;margin:2px 0}b.failed{color:#b71c1c}
table.verdicts{border-collapse:collapse;width:100%}
table.verdicts td,table.verdicts th{border-bottom:1px solid #e0e0e0;padding:3px 6px;text-align:left;vertical-align:top}
table.verdicts th{background:#f1f3f4;font-size:12px}
table.verdicts th:nth-child(2){width:52px}
table.verdicts td.name{white-space:nowrap;font-family:"DejaVu Sans Mono",monospace;font-size:12px}
tr.fail{background:#fdecea}tr.fail td.name{color:#b71c1c;font-weight:bold}tr.not-applicable{color:#80868b}
ul.evidence{margin:2px 0 2px 18px;padding:0;font-family:"DejaVu Sans Mono",monospace;font-size:11.5px}
tr.fail ul.evidence{color:#7f1d1d}
details summary{cursor:pointer;color:#5f6368;font-size:12px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:#3c4043;margin:4px 0 8px}
.key{display:inline-block;width:18px;height:9px;border-radius:2px;margin-right:4px;vertical-align:-1px}
svg.timeline{display:block;max-width:100%;height:auto;background:#fff}
svg text{font-family:"DejaVu Sans",system-ui,sans-serif;font-size:11px;fill:#202124}
svg .tick{fill:#5f6368;font-size:10px}svg .grid{stroke:#eceff1}svg .zero{stroke:#9aa0a6}
svg .heading{font-weight:bold;font-size:12px}svg .note{fill:#5f6368;font-style:italic}
svg .stripe{fill:#f8f9fa}svg .flagged-row{fill:#fdecea}svg text.flagged{fill:#b71c1c;font-weight:bold}
svg .mlabel{paint-order:stroke;stroke:#fff;stroke-width:3px;font-size:10.5px}
svg line.marker{stroke:#80868b;stroke-dasharray:3 3}svg line.marker.signal{stroke:#1a73e8;stroke-dasharray:none}
svg line.marker.kill,svg line.marker.bad{stroke:#b71c1c;stroke-dasharray:none;stroke-width:2}
svg line.marker.k8s{stroke:#6d4c41}svg line.marker.exit{stroke:#202124;stroke-dasharray:none}
svg text.marker.signal{fill:#1a73e8}svg text.marker.kill,svg text.marker.bad{fill:#b71c1c;font-weight:bold}
svg text.marker.k8s{fill:#6d4c41}
.c-ok,.f-completed,.f-stopped{fill:#2e9e4f}.c-fail,.f-failed{fill:#d93025}.c-none{fill:#9aa0a6}.c-worker{fill:#4a6fa5}
.f-cancelled{fill:#f9ab00}.f-dropped{fill:#9aa0a6}.f-killed{fill:#7f1d1d}.f-lost{fill:#8e24aa}
.f-ran-after-teardown{fill:#e8710a}.f-abandoned{fill:#5d4037}.c-routed{fill:#a1887f}.c-queued{fill:#cfd8dc}.c-overrun{fill:#e8710a}
.c-tick{fill:#202124}.c-stall{fill:#d93025}
svg .light{opacity:.35}svg .open{stroke:#3c4043;stroke-width:.8;stroke-dasharray:4 2}
svg .dot{stroke:#fff;stroke-width:.5}
"""


# --- the model: lanes of bars and dots, and markers across them ----------------------------------


@dataclass(frozen=True)
class Bar:
    """A span on a lane; `thin` bars sit inside full ones (the server's view inside the client's)."""

    start: int
    end: int
    css: str
    title: str
    thin: bool = False


@dataclass(frozen=True)
class Dot:
    """One instant on a lane: a tick for a lifecycle step, a dot for a request or a problem."""

    t: int
    css: str
    title: str
    tick: bool = False


@dataclass
class Lane:
    kind: str  # worker, request, task, steady, router: a data attribute the tests look for
    key: str
    label: str
    title: str
    first: int
    bars: list[Bar] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    flagged: bool = False


@dataclass(frozen=True)
class Marker:
    t: int
    label: str
    kind: str  # a data attribute: signal, sigkill, exit, prestop-start, ...
    css: str = ""


@dataclass(frozen=True)
class Scale:
    start: int
    end: int
    origin: int

    def x(self, t: int) -> float:
        return PLOT_LEFT + (t - self.start) / (self.end - self.start) * (PLOT_RIGHT - PLOT_LEFT)


# --- what failed verdicts point to -------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """The requests, tasks and workers that failed verdicts name in their evidence."""

    requests: frozenset[str] = frozenset()
    tasks: frozenset[str] = frozenset()
    workers: frozenset[int] = frozenset()


def named_by_failures(verdicts: Sequence[Verdict]) -> Named:
    items: list[Evidence] = [item for verdict in verdicts if verdict.failed for item in verdict.evidence]
    return Named(
        requests=frozenset(item.request for item in items if item.request is not None),
        tasks=frozenset(item.task for item in items if item.task is not None),
        workers=frozenset(item.worker for item in items if item.worker is not None),
    )


# --- lanes -------------------------------------------------------------------------------------


def _first_seen(timeline: Timeline) -> dict[int, int]:
    """When each process first wrote to the journal: a worker's lane starts there."""
    first: dict[int, int] = {}
    for event in timeline.events:
        first.setdefault(event.pid, event.t)
    return first


def _end_of_run(timeline: Timeline) -> int:
    if timeline.exit is not None:
        return timeline.exit.t
    return timeline.events[-1].t if timeline.events else 0


def _worker_lane(timeline: Timeline, worker: WorkerView, start: int, named: Named) -> Lane:
    at = timeline.at
    status = "shutdown complete" if worker.shutdown_complete is not None else "no shutdown complete"
    lane = Lane(
        kind="worker",
        key=str(worker.pid),
        label=f"worker pid {worker.pid}",
        title=f"worker pid {worker.pid}: first event {at(start)}, last {at(worker.last_event)}; {status}",
        first=start,
        flagged=worker.pid in named.workers,
    )
    lane.bars.append(
        Bar(start, worker.last_event, "c-worker", f"pid {worker.pid}: journaled until {at(worker.last_event)}")
    )
    end = _end_of_run(timeline)
    if end > worker.last_event:
        tail = f"pid {worker.pid}: silent from {at(worker.last_event)} until the server exited at {at(end)}"
        lane.bars.append(Bar(worker.last_event, end, "c-worker light", tail, thin=True))
    steps = (
        (worker.startup_complete, "lifespan startup complete"),
        (worker.shutdown_received, "lifespan shutdown received"),
        (worker.pool_closed, "pool closed"),
        (worker.shutdown_complete, "lifespan shutdown complete"),
    )
    for t, what in steps:
        if t is not None:
            lane.dots.append(Dot(t, "c-tick", f"pid {worker.pid}: {what} at {at(t)}", tick=True))
    for resource in timeline.resources.values():
        if resource.pid == worker.pid and resource.long_lived and resource.closed is not None and not resource.recorded:
            text = f"pid {worker.pid}: {timeline.label(resource)} closed at {at(resource.closed)}"
            lane.dots.append(Dot(resource.closed, "c-tick", text, tick=True))
        for use in resource.uses:
            if use.pid == worker.pid and resource.closed is not None and use.start >= resource.closed:
                who = use.task or use.request or use.thread or "the app"
                text = f"{at(use.start)} {use.op} on {timeline.label(resource)} after it closed, by {who}"
                lane.dots.append(Dot(use.start, "c-stall", text))
    for event in timeline.events:
        if event.pid == worker.pid and event.kind in (Kind.LOOP_STALL, Kind.LOOP_LAG, Kind.POOL_USE_AFTER_CLOSE):
            blocked = int(float(event.get("stalled_ms") or event.get("lag_ms") or 0) * 1e6)
            if blocked:
                lane.bars.append(Bar(event.t - blocked, event.t, "c-stall", _problem(timeline, event), thin=True))
            lane.dots.append(Dot(event.t, "c-stall", _problem(timeline, event)))
        elif event.pid == worker.pid and event.kind in (Kind.SHUTDOWN_FAILED, Kind.PROBE_ERROR):
            lane.dots.append(Dot(event.t, "c-stall", f"{at(event.t)} {event.kind}: {event.get('message', '')}"))
    return lane


def _problem(timeline: Timeline, event: Event) -> str:
    at = timeline.at(event.t)
    if event.kind == Kind.LOOP_STALL:
        return f"{at} loop stalled {event.get('stalled_ms')} ms in {event.get('frame')}"
    if event.kind == Kind.LOOP_LAG:
        return f"{at} heartbeat {event.get('lag_ms')} ms late"
    who = event.get("request") or event.get("thread") or "?"
    return f"{at} pool used after close: {event.get('use', 'use')} by {who}"


def _request_lane(timeline: Timeline, view: RequestView, named: Named) -> Lane:
    at, client = timeline.at, view.client
    outcome = view.client_outcome
    css = "c-none" if outcome is None else "c-ok" if outcome == "ok" else "c-fail"
    method = client.get("method", "") if client is not None else ""
    path = client.get("path", view.path) if client is not None else view.path
    status = client.get("status") if client is not None else view.status
    seen = (outcome or "no client record") + (f", HTTP {status}" if status is not None else "")
    starts = [t for t in (int(client.get("sent", client.t)) if client else None, view.start) if t is not None]
    lane = Lane(
        kind="request",
        key=view.id,
        label=f"{view.id} {method} {path}".replace("  ", " "),
        title=f"request {view.id} {method} {path}: {seen}",
        first=min(starts),
        flagged=(outcome is not None and outcome != "ok") or view.id in named.requests,
    )
    if client is not None:
        sent = int(client.get("sent", client.t))
        error = f" ({client.get('error')})" if client.get("error") else ""
        text = f"{view.id} client: sent {at(sent)}, {seen} at {at(client.t)}{error}"
        lane.bars.append(Bar(sent, client.t, f"{css} light", text))
    if view.start is not None:
        end = view.end if view.end is not None else _end_of_run(timeline)
        open_end = "" if view.end is not None else " open"
        ended = f"{view.end_outcome} at {at(view.end)}" if view.end is not None else "never ended"
        if view.raised:
            ended += f", raised {view.raised}"
        text = f"{view.id} in the app (pid {view.pid}): from {at(view.start)}, {ended}"
        lane.bars.append(Bar(view.start, end, css + open_end, text, thin=True))
        work_end = view.work_end
        if work_end is not None and view.end is not None and work_end > view.end:
            text = f"{view.id}: its work went on after the call ended, until {at(work_end)}"
            lane.bars.append(Bar(view.end, work_end, "c-overrun", text, thin=True))
    return lane


def _task_lane(
    timeline: Timeline, task: TaskView, allowed: frozenset[Fate], named: Named, *, service: bool = False
) -> Lane:
    """A background task's lane; `service`: one the app spawned at startup, its teardown's to stop."""
    at = timeline.at
    fate = service_fate(timeline, task) if service else fate_of(timeline, task)
    short = task.name.rsplit(".", 1)[-1]
    owner = f" of {task.request}" if task.request else " (startup)" if service else ""
    queued = task.queued if task.queued is not None else task.started or 0
    lane = Lane(
        kind="task",
        key=task.id,
        label=f"{short} [{task.id}]{owner}",
        title=f"task {task.name} [{task.id}]{owner} (pid {task.pid}{', sync' if task.sync else ''}): "
        f"{FATE_LABEL[fate]}",
        first=queued,
        flagged=fate not in allowed or task.id in named.tasks,
    )
    end = _end_of_run(timeline)
    if task.started is None:
        text = f"[{task.id}] queued at {at(queued)}, never started"
        lane.bars.append(Bar(queued, end, "c-queued open", text, thin=True))
        return lane
    if task.started > queued:
        lane.bars.append(Bar(queued, task.started, "c-queued", f"[{task.id}] queued {at(queued)}", thin=True))
    work_end = task.work_end
    css = f"f-{fate.value}" + ("" if work_end is not None else " open")
    finish = f"ended {at(work_end)}" if work_end is not None else "never ended"
    text = f"[{task.id}] {FATE_LABEL[fate]}: started {at(task.started)}, {finish}"
    if task.failed:
        text += f"; raised {task.failed}"
        lane.title += f"; raised {task.failed}"
    lane.bars.append(Bar(task.started, work_end if work_end is not None else end, css, text))
    if task.cancelled is not None:
        lane.dots.append(Dot(task.cancelled, "c-tick", f"[{task.id}] cancelled at {at(task.cancelled)}", tick=True))
    return lane


def _steady_lane(timeline: Timeline, views: Sequence[RequestView]) -> Lane:
    """Steady new requests (hundreds in a replay) as dots on one lane: failures on top, in red."""
    events = [view.client for view in views if view.client is not None]
    bad = [event for event in events if event.get("outcome") != "ok"]
    lane = Lane(
        kind="steady",
        key="steady",
        label=f"steady load: {len(events)} sent, {len(bad)} failed",
        title=f"{len(events)} steady new requests, {len(bad)} failed; one dot each, at its send time",
        first=min(int(e.get("sent", e.t)) for e in events),
        flagged=bool(bad),
    )
    for event in sorted(events, key=lambda e: e.get("outcome") != "ok"):
        status = f" HTTP {event.get('status')}" if event.get("status") is not None else ""
        sent = int(event.get("sent", event.t))
        text = f"{event.get('id')} {event.get('path')} sent {timeline.at(sent)}: {event.get('outcome')}{status}"
        lane.dots.append(Dot(sent, "c-ok" if event.get("outcome") == "ok" else "c-fail", text))
    return lane


def _router_lane(timeline: Timeline) -> Lane | None:
    """In a replay: how long the router still sent new connections to the terminating pod."""
    if timeline.deleted is None:
        return None
    if timeline.rollout:
        return _rollout_router_lane(timeline)
    ready = next((e.t for e in timeline.events if e.kind == Kind.SERVER_READY), timeline.deleted)
    until = timeline.routed_until if timeline.routed_until is not None else _end_of_run(timeline)
    at = timeline.at
    lane = Lane(
        kind="router",
        key="router",
        label=f"router: {len(timeline.upstream_failures)} upstream failures",
        title=f"the Service routed new connections to the pod until {at(timeline.routed_until)}",
        first=ready,
        flagged=bool(timeline.upstream_failures),
    )
    lane.bars.append(Bar(ready, until, "c-routed", f"routed to the pod until {at(timeline.routed_until)}"))
    for event in timeline.upstream_failures:
        lane.dots.append(Dot(event.t, "c-fail", f"{at(event.t)} upstream failed: {event.get('error')}"))
    return lane


def _rollout_router_lane(timeline: Timeline) -> Lane:
    """In a rolling update: each deleted pod's window of still being routed to, from its deletion."""
    at = timeline.at
    assert timeline.deleted is not None
    lane = Lane(
        kind="router",
        key="router",
        label=f"router: {len(timeline.upstream_failures)} upstream failures",
        title="the Service in front of the pods: how long each deleted pod was still routed to",
        first=timeline.deleted,
        flagged=bool(timeline.upstream_failures),
    )
    removed = {str(event.get("endpoint")): event.t for event in timeline.events if event.kind == Kind.ROUTER_REMOVED}
    for event in timeline.events:
        if event.kind != Kind.POD_DELETED:
            continue
        pod = str(event.get("pod", "pod"))
        until = removed.get(pod)
        end = until if until is not None and until >= event.t else _end_of_run(timeline)
        text = f"{pod} deleted at {at(event.t)}, still routed to until {at(until)}"
        lane.bars.append(Bar(event.t, end, "c-routed", text))
    for event in timeline.upstream_failures:
        lane.dots.append(Dot(event.t, "c-fail", f"{at(event.t)} upstream failed: {event.get('error')}"))
    return lane


def _cap(lanes: list[Lane], limit: int) -> tuple[list[Lane], int]:
    """At most `limit` lanes, every flagged one first, then the earliest; drawn in time order."""
    if len(lanes) <= limit:
        return lanes, 0
    ranked = sorted(lanes, key=lambda lane: (not lane.flagged, lane.first))[:limit]
    kept = {id(lane) for lane in ranked}
    return [lane for lane in lanes if id(lane) in kept], len(lanes) - limit


def build_lanes(timeline: Timeline, verdicts: Sequence[Verdict]) -> list[tuple[str, list[Lane], int]]:
    """The lanes, grouped under headings, each group with how many of its lanes were left out."""
    named = named_by_failures(verdicts)
    first = _first_seen(timeline)
    workers = [_worker_lane(timeline, w, first.get(w.pid, w.last_event), named) for w in timeline.workers.values()]
    steady = [v for v in timeline.requests.values() if v.client is not None and v.client.get("role") == "steady"]
    aggregated = {view.id for view in steady}
    single = [
        _request_lane(timeline, view, named)
        for view in timeline.requests.values()
        if view.id not in aggregated and (view.client is not None or view.start is not None)
    ]
    policy = timeline.scenario.background_policy if timeline.scenario else "complete"
    allowed = ALLOWED_FATES.get(policy, ALLOWED_FATES["complete"])
    tasks = [_task_lane(timeline, task, allowed, named) for task in timeline.tasks.values()]
    services = timeline.service_tasks.values()
    tasks += [_task_lane(timeline, task, SERVICE_FATES, named, service=True) for task in services]
    kept, hidden = _cap(
        sorted(single, key=lambda lane: lane.first) + sorted(tasks, key=lambda lane: lane.first), MAX_LANES
    )
    requests = [lane for lane in kept if lane.kind == "request"]
    hidden_requests = len(single) - len(requests)
    groups = [("workers", sorted(workers, key=lambda lane: lane.first), 0)]
    shared = [lane for lane in (_router_lane(timeline), _steady_lane(timeline, steady) if steady else None) if lane]
    if shared:
        groups.append(("traffic", shared, 0))
    groups.append(("requests (client's wait, pale; the app's call, solid)", requests, hidden_requests))
    groups.append(("background tasks", [lane for lane in kept if lane.kind == "task"], hidden - hidden_requests))
    return groups


# --- markers -----------------------------------------------------------------------------------


def build_markers(timeline: Timeline) -> list[Marker]:
    """Every step of the shutdown, as a vertical line across all lanes."""
    several = len(timeline.workers) > 1
    markers = []
    for event in timeline.events:
        marker = _marker_for(event, several)
        if event.kind == Kind.RESOURCE_CLOSED:
            marker = _resource_marker(timeline, event, several)
        if marker is not None:
            markers.append(marker)
    return markers


def _resource_marker(timeline: Timeline, event: Event, several_workers: bool) -> Marker | None:
    """The close of an engine, pool or client the app opened at startup: its teardown, as a pool's."""
    resource = timeline.resource_of(event)
    if resource is None or not resource.long_lived or resource.closed != event.t:
        return None
    pid = f" [{event.pid}]" if several_workers else ""
    return Marker(event.t, f"{_clip(resource.label, 32)} closed{pid}", "pool-closed")


def _marker_for(event: Event, several_workers: bool) -> Marker | None:
    kind, t = event.kind, event.t
    pid = f" [{event.pid}]" if several_workers else ""
    if kind == Kind.SIGNAL_SENT:
        return Marker(t, str(event.get("signal", "signal")), "signal", "signal")
    if kind == Kind.SIGKILL_SENT:
        return Marker(t, "SIGKILL", "sigkill", "kill")
    if kind == Kind.SERVER_EXITED:
        how = "killed" if event.get("killed") else f"exit {event.get('exit_code')}"
        return Marker(t, f"server {how}", "exit", "exit")
    if kind == Kind.PRESTOP_START:
        return Marker(t, "preStop start", "prestop-start", "k8s")
    if kind == Kind.PRESTOP_END:
        return Marker(t, "preStop end" + ("" if event.get("ok", True) else " (failed)"), "prestop-end", "k8s")
    if kind == Kind.POD_DELETED:
        pod = f"{event.get('pod')} " if event.get("pod") else "pod "
        return Marker(t, f"{pod}deleted", "pod-deleted", "k8s")
    if kind == Kind.SERVER_READY and event.get("pod"):  # a rolling update's pods, each by name
        return Marker(t, f"{event.get('pod')} ready", "pod-ready", "k8s")
    if kind == Kind.ROUTER_REMOVED:
        return Marker(t, "router removed", "router-removed", "k8s")
    if kind == Kind.SHUTDOWN_RECEIVED:
        return Marker(t, f"shutdown received{pid}", "shutdown-received")
    if kind == Kind.SHUTDOWN_COMPLETE:
        return Marker(t, f"shutdown complete{pid}", "shutdown-complete")
    if kind == Kind.SHUTDOWN_FAILED:
        return Marker(t, f"shutdown failed{pid}", "shutdown-failed", "bad")
    if kind == Kind.POOL_CLOSED:
        return Marker(t, f"pool closed{pid}", "pool-closed")
    if kind == Kind.APP_UNAWAITED:
        name = str(event.get("coroutine")).rsplit(".", 1)[-1]
        return Marker(t, f"{_clip(name, 24)}() never awaited{pid}", "unawaited", "bad")
    if kind == Kind.FAULT_INJECTED:
        return Marker(t, f"fault {event.get('fault')}", "fault", "bad")
    return None


def _place_labels(markers: Sequence[Marker], scale: Scale) -> list[tuple[Marker, int, bool]]:
    """Each marker's label row, greedily, so no two labels overlap; right-aligned near the edge."""
    rows: list[list[tuple[float, float]]] = []
    placed = []
    for marker in sorted(markers, key=lambda m: m.t):
        x = scale.x(marker.t)
        width = len(marker.label) * CHAR_WIDTH + 6
        flip = x + width > WIDTH
        span = (x - width, x) if flip else (x, x + width)
        row = next(
            (i for i, taken in enumerate(rows) if all(span[1] < a or span[0] > b for a, b in taken)),
            len(rows),
        )
        if row == len(rows):
            rows.append([])
        rows[row].append(span)
        placed.append((marker, row, flip))
    return placed


# --- drawing -----------------------------------------------------------------------------------


def _e(value: object) -> str:
    """
    The one way any value reaches the page: every character that could open a tag, end an
    attribute or start an entity is escaped. The journal is written by the app under test as
    well as by drainspec, so no field of it is trusted, not even one that should be a number.
    """
    return html.escape(str(value), quote=True)


def _seconds(value: object) -> str:
    """A number of seconds as `1.5`, anything else as its text (still to be escaped)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def _scale(timeline: Timeline, groups: Sequence[tuple[str, list[Lane], int]], markers: Sequence[Marker]) -> Scale:
    times = [m.t for m in markers]
    for _, lanes, _ in groups:
        for lane in lanes:
            times += [t for bar in lane.bars for t in (bar.start, bar.end)] + [dot.t for dot in lane.dots]
    origin = timeline.origin
    start, end = min(times, default=origin), max(times, default=origin)
    start, end = min(start, origin), max(end, origin)
    pad = max((end - start) // 40, 50_000_000)
    return Scale(start - pad, end + pad, origin)


def _tick_step(span_seconds: float) -> float:
    return next((step for step in NICE_STEPS if span_seconds / step <= 12), NICE_STEPS[-1])


def _ticks(scale: Scale) -> list[tuple[int, str]]:
    step = _tick_step((scale.end - scale.start) / 1e9)
    first = math.ceil((scale.start - scale.origin) / 1e9 / step)
    last = math.floor((scale.end - scale.origin) / 1e9 / step)
    digits = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    ticks = []
    for k in range(first, last + 1):
        seconds = k * step
        label = "0" if k == 0 else f"{seconds:+.{digits}f}s"
        ticks.append((scale.origin + round(seconds * 1e9), label))
    return ticks


def _clip(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _draw_lane(lane: Lane, y: int, scale: Scale, stripe: bool) -> list[str]:
    flagged = "true" if lane.flagged else "false"
    out = [f'<g class="lane" data-kind="{_e(lane.kind)}" data-id="{_e(lane.key)}" data-flagged="{flagged}">']
    if lane.flagged:
        out.append(f'<rect class="flagged-row" x="0" y="{y}" width="{WIDTH}" height="{LANE_HEIGHT}"/>')
    elif stripe:
        out.append(f'<rect class="stripe" x="0" y="{y}" width="{WIDTH}" height="{LANE_HEIGHT}"/>')
    css = ' class="flagged"' if lane.flagged else ""
    mark = "! " if lane.flagged else ""
    out.append(f'<text x="8" y="{y + 13}"{css}><title>{_e(lane.title)}</title>{_e(mark + _clip(lane.label))}</text>')
    for bar in lane.bars:
        x0, x1 = scale.x(bar.start), scale.x(max(bar.end, bar.start))
        top, height = (y + 6, 6) if bar.thin else (y + 3, 12)
        out.append(
            f'<rect class="{_e(bar.css)}" x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{height}"><title>{_e(bar.title)}</title></rect>'
        )
    for dot in lane.dots:
        x = scale.x(dot.t)
        if dot.tick:
            out.append(
                f'<rect class="{_e(dot.css)}" x="{x - 1:.1f}" y="{y + 1}" width="2" height="{LANE_HEIGHT - 2}">'
                f"<title>{_e(dot.title)}</title></rect>"
            )
        else:
            out.append(
                f'<circle class="dot {_e(dot.css)}" cx="{x:.1f}" cy="{y + LANE_HEIGHT / 2}" r="3.5">'
                f"<title>{_e(dot.title)}</title></circle>"
            )
    out.append("</g>")
    return out


def _axis(ticks: Sequence[tuple[int, str]], scale: Scale, y: int, below: bool) -> list[str]:
    out = []
    for t, label in ticks:
        x = scale.x(t)
        ty = y + 14 if below else y - 6
        out.append(f'<text class="tick" x="{x:.1f}" y="{ty}" text-anchor="middle">{_e(label)}</text>')
    return out


def render_svg(timeline: Timeline, verdicts: Sequence[Verdict]) -> str:
    groups = build_lanes(timeline, verdicts)
    markers = build_markers(timeline)
    scale = _scale(timeline, groups, markers)
    placed = _place_labels(markers, scale)
    rows = max((row for _, row, _ in placed), default=-1) + 1
    top = 6 + rows * MARKER_ROW_HEIGHT + AXIS_HEIGHT
    body: list[str] = []
    y = top
    for heading, lanes, hidden in groups:
        if not lanes and not hidden:
            continue
        body.append(f'<text class="heading" x="4" y="{y + 15}">{_e(heading)}</text>')
        y += HEADING_HEIGHT
        for index, lane in enumerate(lanes):
            body += _draw_lane(lane, y, scale, stripe=index % 2 == 1)
            y += LANE_HEIGHT
        if hidden:
            note = f"+{hidden} more not drawn (the first {MAX_LANES} lanes in all, flagged ones first)"
            body.append(f'<text class="note" x="8" y="{y + 13}">{_e(note)}</text>')
            y += LANE_HEIGHT
    bottom = y + 4
    height = bottom + AXIS_HEIGHT
    ticks = _ticks(scale)
    out = [
        f'<svg class="timeline" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="timeline">'
    ]
    for t, _ in ticks:
        x = scale.x(t)
        css = "zero" if t == scale.origin else "grid"
        out.append(f'<line class="{css}" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}"/>')
    out += _axis(ticks, scale, top, below=False)
    out += _axis(ticks, scale, bottom, below=True)
    out += body
    for marker, row, flip in placed:
        x, label_y = scale.x(marker.t), 6 + (row + 1) * MARKER_ROW_HEIGHT - 3
        css = f"marker {marker.css}".strip()
        anchor = ' text-anchor="end"' if flip else ""
        text_x = x - 3 if flip else x + 3
        out.append(
            f'<g data-marker="{_e(marker.kind)}"><title>{_e(marker.label)} at {_e(timeline.at(marker.t))}</title>'
            f'<line class="{_e(css)}" x1="{x:.1f}" y1="{label_y - 9}" x2="{x:.1f}" y2="{bottom}"/>'
            f'<text class="mlabel {_e(css)}" x="{text_x:.1f}" y="{label_y}"{anchor}>{_e(marker.label)}</text></g>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _evidence(items: Sequence[Evidence]) -> str:
    return '<ul class="evidence">' + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"


def _verdict_rows(verdicts: Sequence[Verdict]) -> list[str]:
    rows = []
    for verdict in verdicts:
        status = verdict.status.value
        cell = _e(verdict.summary)
        if verdict.failed:
            shown, rest = verdict.evidence[:EVIDENCE_SHOWN], verdict.evidence[EVIDENCE_SHOWN:]
            cell += _evidence(shown)
            if rest:
                cell += f"<details><summary>{_e(len(rest))} more</summary>{_evidence(rest)}</details>"
        elif verdict.evidence:
            notes = _e(len(verdict.evidence))
            cell += f"<details><summary>{notes} note(s)</summary>{_evidence(verdict.evidence)}</details>"
        label = _e(STATUS_LABEL[verdict.status])
        rows.append(
            f'<tr class="{_e(status)}" data-verdict="{_e(verdict.name)}"><td class="name">{_e(verdict.name)}</td>'
            f'<td><span class="badge {_e(status)}">{label}</span></td><td>{cell}</td></tr>'
        )
    return rows


def _legend() -> str:
    keys = [
        ("c-worker", "worker alive"),
        ("c-ok", "request ok / task completed"),
        ("c-fail", "request failed"),
        ("f-cancelled", "task cancelled"),
        ("c-queued", "task queued / dropped"),
        ("f-killed", "task killed"),
        ("f-lost", "task lost"),
        ("f-abandoned", "task abandoned (left running by teardown)"),
        ("f-ran-after-teardown", "ran after teardown / work after the call"),
    ]
    items = [
        f'<span><svg width="18" height="9"><rect class="{c}" width="18" height="9"/></svg> {_e(t)}</span>'
        for c, t in keys
    ]
    items.append("<span>dashed outline: no end recorded</span>")
    items.append('<span><b class="failed">! red row</b>: named by a failed verdict</span>')
    return '<div class="legend">' + "".join(items) + "</div>"


def _heading(timeline: Timeline, verdicts: Sequence[Verdict]) -> list[str]:
    failed = [v.name for v in verdicts if v.failed]
    result = "fail" if failed else "pass"
    out = [f'<h1>drainspec timeline <span class="result {_e(result)}">{_e(result.upper())}</span></h1>']
    scenario = timeline.scenario
    if scenario is not None and not timeline.rollout:
        signal = str(scenario.signal).removeprefix("SIG")
        out.append(
            f'<p class="meta">{_e(scenario.subject)}: {_e(scenario.workload)}, '
            f"SIG{_e(signal)} with a {_e(_seconds(scenario.grace))}s grace</p>"
        )
    if (started := timeline.script_server) is not None:
        server, workers = _e(started.get("server")), _e(started.get("workers"))
        out.append(f'<p class="meta">The script starts {server} with {workers} worker(s).</p>')
    if timeline.replay:
        facts = ", ".join(f"{_e(k)} {_e(v)}" for k, v in timeline.replay.items() if v is not None)
        out.append(f'<p class="meta">Kubernetes replay: {facts}</p>')
    if timeline.rollout:
        facts = ", ".join(f"{_e(k)} {_e(v)}" for k, v in timeline.rollout.items() if v is not None)
        out.append(f'<p class="meta">Kubernetes rolling update: {facts}</p>')
    zero = "the pod's deletion" if timeline.deleted is not None else f"the stop signal ({timeline.signal_name})"
    if timeline.rollout and timeline.deleted is not None:
        zero = "the first pod's deletion"
    if timeline.deleted is None and timeline.signal is None:
        zero = "the first event (no stop signal was sent)"
    out.append(f'<p class="meta">Times are seconds from {_e(zero)}; hover a bar for its exact times.</p>')
    if failed:
        out.append(
            f'<p class="meta"><b class="failed">{len(failed)} verdict(s) failed:</b> {_e(", ".join(failed))}</p>'
        )
    return out


def _findings(timeline: Timeline) -> list[str]:
    if not timeline.findings:
        return []
    items = "".join(
        f"<li>{_e(str(e.get('severity', '')).upper())} {_e(e.get('code', ''))}: {_e(e.get('message', ''))}</li>"
        for e in timeline.findings
    )
    return ["<h2>Manifest findings</h2>", f'<ul class="evidence">{items}</ul>']


def _escaped(timeline: Timeline) -> list[str]:
    """Processes the app started that outlived the server: drainspec killed them at the end."""
    items = "".join(
        f"<li>pid {_e(e.get('target'))} ({_e(e.get('found'))}): {_e(e.get('command'))}</li>"
        for e in timeline.events
        if e.kind == Kind.PROCESS_ESCAPED
    )
    if not items:
        return []
    return [
        "<h2>Processes left running</h2>",
        '<p class="meta"><b class="failed">The app started these and they outlived the server;'
        " drainspec killed them at the end of the run.</b></p>",
        f'<ul class="evidence">{items}</ul>',
    ]


def _resources(timeline: Timeline) -> list[str]:
    """The resources the app opened: what each is, who opened it, when it closed, its uses."""
    if not timeline.resources:
        return []
    at = timeline.at
    rows = []
    for resource in sorted(timeline.resources.values(), key=lambda r: r.opened or r.closed or 0):
        if resource.recorded:
            opened = at(resource.opened) if resource.opened is not None else "not recorded"
            uses = f"{len(resource.refusals)} after its close (recorded by the app)"
        else:
            opened = f"{at(resource.opened)} {timeline.opened_by(resource)}"
            late = sum(1 for u in resource.uses if resource.closed is not None and u.start >= resource.closed)
            uses = f"{len(resource.uses)}" + (f", {late} after its close" if late else "")
        never = resource.closed is None and resource.opened is not None
        closed = f"{at(resource.closed)} ({resource.closed_how})" if resource.closed is not None else "never"
        css = "fail" if never or "after its close" in uses and not uses.startswith("0 ") else "pass"
        cells = [timeline.label(resource), resource.type, opened, closed, uses]
        rows.append(
            f'<tr class="{css}" data-resource="{_e(resource.id)}"><td class="name">{_e(cells[0])}</td>'
            + "".join(f"<td>{_e(cell)}</td>" for cell in cells[1:])
            + "</tr>"
        )
    return [
        "<h2>Resources</h2>",
        '<table class="verdicts"><thead><tr><th>resource</th><th>what</th><th>opened</th><th>closed</th>'
        "<th>uses</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
    ]


def render(timeline: Timeline, verdicts: Sequence[Verdict]) -> str:
    """The whole page: verdicts, then the lanes; no external resource of any kind."""
    parts: Iterable[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>drainspec timeline</title>",
        f"<style>{CSS}</style></head><body>",
        *_heading(timeline, verdicts),
        "<h2>Verdicts</h2>",
        '<table class="verdicts"><thead><tr><th>verdict</th><th>status</th><th>summary and evidence</th></tr></thead>',
        "<tbody>",
        *_verdict_rows(verdicts),
        "</tbody></table>",
        *_findings(timeline),
        *_escaped(timeline),
        "<h2>Timeline</h2>",
        _legend(),
        render_svg(timeline, verdicts),
        *_resources(timeline),  # below the lanes: the page opens on the verdicts and the timeline
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_html(path: Path, timeline: Timeline, verdicts: Sequence[Verdict]) -> None:
    """Write timeline.html (never through a link: `chaos.outdir.write_file`)."""
    write_file(path, render(timeline, verdicts).encode("utf-8"))
