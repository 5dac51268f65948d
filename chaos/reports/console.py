"""
One run on the terminal, rebuilt from the journal alone: the verdicts with their evidence, then
a compact timeline (`timeline_lines`, which report.json carries too), and the resources the app
opened with what became of them (`resource_lines`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape

from chaos.errors import capped, message_line
from chaos.journal import Event, Kind
from chaos.judge.timeline import Timeline, raised_text
from chaos.judge.verdict import Status, Verdict

STATUS_STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.NOT_APPLICABLE: "dim"}
STATUS_LABEL = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.NOT_APPLICABLE: "n/a "}


# --- timeline -----------------------------------------------------------------------------------


def _line_for(timeline: Timeline, event: Event) -> str | None:
    kind, fields = event.kind, event.fields
    who = f"[{event.pid}]"
    if kind == Kind.SIGNAL_SENT:
        return f"harness  {fields.get('signal')} sent to pid {fields.get('target')}"
    if kind == Kind.FAULT_INJECTED:
        at = f" at pid {fields.get('target')}" if fields.get("target") else ""
        where = f" on {fields.get('endpoint')}" if fields.get("endpoint") else ""
        return f"chaos    fault {fields.get('fault')} injected{at}{where}"
    if kind == Kind.SIGKILL_SENT:
        return f"harness  SIGKILL to pid {fields.get('target')}: grace of {fields.get('after')}s ran out"
    if kind == Kind.SERVER_EXITED:
        how = "killed" if fields.get("killed") else "exited"
        return f"harness  server {how}, exit code {fields.get('exit_code')}"
    if kind == Kind.WORKER_EXITED:
        ended = f"died of {fields['signal']}" if fields.get("signal") else f"exited with code {fields.get('exit_code')}"
        account = fields.get("account") or "its parent"
        # A worker loaded the probe; anything else below the server is a helper of its own
        # (multiprocessing's resource tracker under uvicorn --workers), not a worker.
        who = "worker" if fields.get("target") in timeline.workers else "process"
        return f"harness  {who} {fields.get('target')} {ended} ({account}), as read after the server exited"
    if kind in (Kind.PRESTOP_START, Kind.PRESTOP_END):
        return f"kubelet  {kind} {fields.get('detail', '')}".rstrip()
    pod = f"pod {fields['pod']}" if fields.get("pod") else "pod"
    if kind == Kind.POD_STARTED and fields.get("pod"):
        return f"kubelet  {pod} started"
    if kind == Kind.SERVER_READY and fields.get("pod"):
        return f"kubelet  {pod} ready: routed"
    if kind == Kind.POD_DELETED:
        return f"kubelet  {pod} deleted; grace {fields.get('grace')}s starts"
    if kind == Kind.ROUTER_TERMINATING:
        endpoint = f"endpoint {fields['endpoint']}" if timeline.rollout and fields.get("endpoint") else "endpoint"
        return f"router   {endpoint} terminating; still routed for {fields.get('propagation')}s"
    if kind == Kind.ROUTER_REMOVED:
        if timeline.rollout and fields.get("endpoint"):
            return f"router   endpoint {fields['endpoint']} removed: no new connections to it"
        return "router   endpoint removed: no new connections to the pod"
    if kind == Kind.CLIENT_REQUEST and fields.get("role") == "steady" and fields.get("outcome") == "ok":
        return None
    if kind == Kind.CLIENT_REQUEST:
        status = f" HTTP {fields['status']}" if "status" in fields else ""
        request = f"{fields.get('id')} {fields.get('method')} {fields.get('path')}"
        return f"client   {request}: {fields.get('outcome')}{status}"
    if kind in (Kind.RESOURCE_CLOSED, Kind.RESOURCE_USE, Kind.PROBE_WARNING):
        return _resource_line(timeline, event, who)
    if kind == Kind.APP_UNAWAITED:
        return f"app{who:>8} coroutine {fields.get('coroutine')} never awaited (dropped at {fields.get('where')})"
    if kind in (
        Kind.SHUTDOWN_RECEIVED,
        Kind.SHUTDOWN_COMPLETE,
        Kind.SHUTDOWN_FAILED,
        Kind.POOL_CLOSED,
        Kind.POOL_USE_AFTER_CLOSE,
        Kind.LOOP_STALL,
    ):
        extra = ""
        if kind == Kind.POOL_USE_AFTER_CLOSE:
            extra = f" ({fields.get('use')}, {fields.get('request') or fields.get('thread') or '?'})"
        elif kind == Kind.LOOP_STALL:
            extra = f" in {fields.get('frame')}"
        return f"app{who:>8} {kind}{extra}"
    if kind in (Kind.STARTUP_COMPLETE, Kind.STARTUP_FAILED) and event.t >= timeline.origin:
        return f"app{who:>8} {kind}"  # a startup the stop signal came during
    if kind == Kind.REQUEST_END and event.t >= timeline.origin:
        raised = _raised(event) if fields.get("outcome") == "error" else ""
        return f"app{who:>8} request {fields.get('request')} {fields.get('outcome')}{raised}"
    if kind in (Kind.TASK_FINISHED, Kind.TASK_CANCELLED, Kind.TASK_FAILED) and event.t >= timeline.origin:
        raised = _raised(event) if kind == Kind.TASK_FAILED else ""
        return f"app{who:>8} task {timeline.task_label(str(fields.get('task')))} {kind.split('.')[1]}{raised}"
    return None


RAISED_CHARS = 240  # of an exception's text, and where, on a timeline line


def _raised(event: Event) -> str:
    """What a request or task raised, and where, on one line."""
    return ": " + capped(message_line(raised_text(event)), RAISED_CHARS)


def _resource_line(timeline: Timeline, event: Event, who: str) -> str | None:
    """The close of a resource the app opened at startup, and any use after a close."""
    if event.kind == Kind.PROBE_WARNING:
        return f"app{who:>8} probe.warning ({event.get('library')}): {event.get('error')}"
    resource = timeline.resource_of(event)
    if resource is None:
        return None
    if event.kind == Kind.RESOURCE_CLOSED and resource.long_lived and resource.closed == event.t:
        return f"app{who:>8} {timeline.label(resource)} closed ({event.get('how')})"
    start = event.get("start") if isinstance(event.get("start"), int) else event.t
    if event.kind == Kind.RESOURCE_USE and resource.closed is not None and start >= resource.closed:
        by = event.get("task") or event.get("request") or event.get("thread") or "app"
        return f"app{who:>8} {event.get('op')} on {timeline.label(resource)} after it closed ({by})"
    return None


def resource_lines(timeline: Timeline, limit: int = 20) -> list[str]:
    """
    One line per resource: what it is, who opened it and when, when it closed (or that it never
    did), how many uses it had and how many came after its close.
    """
    at = timeline.at
    lines = []
    for resource in sorted(timeline.resources.values(), key=lambda r: r.opened or r.closed or 0):
        if resource.recorded:
            head = f"pool {resource.name} (recorded by the app with chaos.record)"
            opened = f"opened {at(resource.opened)}" if resource.opened is not None else "its opening not recorded"
            uses = f"{len(resource.refusals)} use(s) after close" if resource.refusals else "uses not recorded"
        else:
            head = f"{resource.label} ({resource.type})"
            opened = f"opened {at(resource.opened)} {timeline.opened_by(resource)}"
            late = sum(1 for u in resource.uses if resource.closed is not None and u.start >= resource.closed)
            uses = f"{len(resource.uses)} use(s)" + (f", {late} after its close" if late else "")
        if resource.closed is not None:
            closed = f"closed {at(resource.closed)} ({resource.closed_how})"
        else:
            closed = "NEVER CLOSED" if resource.opened is not None else "its close not recorded"
        lines.append(f"{head}: {opened}, {closed}; {uses}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def timeline_lines(timeline: Timeline, limit: int = 60) -> list[str]:
    """One line per notable event; runs of steady-load failures with one outcome share a line."""
    lines: list[str] = []
    run: list[Event] = []

    def flush() -> None:
        if not run:
            return
        first, last = run[0], run[-1]
        fields = first.fields
        ids = str(fields.get("id")) if len(run) == 1 else f"{fields.get('id')}..{last.get('id')} ({len(run)} requests)"
        status = f" HTTP {fields['status']}" if "status" in fields else ""
        request = f"{ids} {fields.get('method')} {fields.get('path')}"
        lines.append(f"{timeline.at(first.t):>9}  client   {request}: {fields.get('outcome')}{status}")
        run.clear()

    for event in timeline.events:
        if event.kind == Kind.CLIENT_REQUEST and event.get("role") == "steady" and event.get("outcome") != "ok":
            if run and (run[-1].get("outcome"), run[-1].get("status")) != (event.get("outcome"), event.get("status")):
                flush()
            run.append(event)
            continue
        text = _line_for(timeline, event)
        if text is not None:
            flush()
            lines.append(f"{timeline.at(event.t):>9}  {text}")
    flush()
    if len(lines) > limit:
        hidden = len(lines) - limit
        lines = lines[: limit // 2] + [f"           ... {hidden} more lines ..."] + lines[-limit // 2 :]
    return lines


# --- console ------------------------------------------------------------------------------------


def print_console(
    console: Console, timeline: Timeline, verdicts: Sequence[Verdict], missing_evidence: Sequence[str] = ()
) -> None:
    """The run as a person reads it; "verified" only when nothing failed and no evidence is missing."""
    scenario = timeline.scenario
    if timeline.rollout:
        facts = ", ".join(f"{key} {value}" for key, value in timeline.rollout.items() if value is not None)
        console.print(f"[bold]drainspec[/] rolling update: {escape(facts)}")
    elif scenario is not None:
        console.print(
            f"[bold]drainspec[/] {escape(scenario.subject)}: {escape(scenario.workload)}, "
            f"{escape(scenario.signal)} with a {scenario.grace:g}s grace"
        )
        loaded = next((e for e in timeline.events if e.kind == Kind.PROBE_LOADED and e.get("source")), None)
        if loaded is not None:
            made = " (an app factory: called, its app judged)" if loaded.get("factory") else ""
            app, source = escape(str(loaded.get("app"))), escape(str(loaded.get("source")))
            servers = loaded.get("servers")
            served = ""
            if isinstance(servers, dict) and servers:  # the releases a verdict may name as the cause
                served = ", served by " + " and ".join(escape(f"{name} {version}") for name, version in servers.items())
            console.print(f"  [dim]{app} loaded from {source}{made}{served}[/]")
        if (started := timeline.script_server) is not None:
            server, workers = escape(str(started.get("server"))), escape(str(started.get("workers")))
            console.print(f"  [dim]the script starts {server} with {workers} worker(s)[/]")
    console.print()
    zero = "the pod's deletion" if timeline.deleted is not None else "the stop signal"
    if timeline.rollout and timeline.deleted is not None:
        zero = "the first pod's deletion"
    console.print(f"[bold]Timeline[/] (seconds from {zero})")
    for line in timeline_lines(timeline):
        console.print("  " + escape(line), highlight=False)
    console.print()
    resources = resource_lines(timeline)
    if resources:
        console.print("[bold]Resources[/] (seen in the app; a use is a query, a command or a request)")
        for line in resources:
            console.print("  " + escape(line), highlight=False)
        console.print()
    console.print("[bold]Verdicts[/]")
    for verdict in verdicts:
        style = STATUS_STYLE[verdict.status]
        label = STATUS_LABEL[verdict.status]
        console.print(f"  [{style}]{label}[/] {verdict.name:<24} {escape(verdict.summary)}", highlight=False)
        for item in verdict.evidence:
            console.print(f"       [dim]-[/] {escape(str(item))}", highlight=False)
    failures = [v.name for v in verdicts if v.failed]
    console.print()
    if failures:
        console.print(f"[bold red]{len(failures)} verdict(s) failed:[/] {', '.join(failures)}")
    elif missing_evidence:
        console.print("[bold yellow]not verified: the evidence is incomplete[/]")
        for missing in missing_evidence:
            console.print(f"  [yellow]-[/] {escape(missing)}", highlight=False)
    else:
        verified = "rolling update verified" if timeline.rollout else "graceful shutdown verified"
        console.print(f"[bold green]{verified}[/]")


# --- until every caller imports from chaos.reports.json and chaos.reports.junit ------------------
