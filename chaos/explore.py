"""
`drainspec explore`: is there any moment at which the stop signal breaks this service?

A run judges one interleaving. Exploration places the stop signal at the moments that matter:

    1. a learning run: the scenario as given; its journal says when each request, background
       task and spawned (fire-and-forget) task starts and ends, relative to the moment the
       work was in flight (`traffic.in_flight`)
    2. attempts, in this order:
         the learning run's own moment (it counts: a failure there is a failure)
         just after each task starts, and just before each request or task ends
         for each spawned task, the same moments with only the requests that spawn work
           (the slow requests dropped), so nothing else holds the drain while it runs
         teardown aimed inside each window where a spawned task uses a resource
         nothing in flight (`--signal-at ready`), and during lifespan startup
    3. attempts run `--jobs` at a time until the first failure; every passing attempt adds its
       margin (teardown minus the end of the last untracked work before it) to the report, and
       a margin under `LUCKY_MARGIN_SECONDS` is a warning even when everything passed

Each attempt has a seed that encodes it whole (`Attempt.seed`), so `drainspec run --seed N`
with the same flags replays it exactly.

A verdict that failed on facts all older than the signal (a loop stall while the requests were
being served) broke whatever the signal's moment: it is reported apart (`failed_before_signal`),
as what the scenario breaks on every run that comes that far, not as a race with the signal.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.journal import Kind
from chaos.judge.timeline import TaskView, Timeline
from chaos.judge.verdict import Verdict, VerdictName
from chaos.outcome import RunResult
from chaos.parallel import run_all
from chaos.runner import execute
from chaos.scenario import SIGNAL_MOMENTS, Scenario, SignalAt

EPSILON_SECONDS = 0.02  # "just after" / "just before" a moment of the learning run
LUCKY_MARGIN_SECONDS = 0.05
EXPLORE_SCHEMA = "drainspec.explore/1"
VARIANTS: tuple[tuple[bool, SignalAt], ...] = (
    (False, "in-flight"),  # the scenario's traffic, the signal `offset` s after it is in flight
    (True, "in-flight"),  # only the background requests: nothing long holds the drain
    (False, "ready"),
    (False, "startup"),
)


@dataclass(frozen=True)
class Attempt:
    """One placement of the stop signal: an offset after the work is in flight, and the traffic."""

    offset: float
    isolate: bool = False
    signal_at: SignalAt = "in-flight"
    why: str = ""

    @property
    def seed(self) -> int:
        """The whole attempt as one integer: offset in milliseconds, times four, plus the variant."""
        return round(self.offset * 1000) * len(VARIANTS) + VARIANTS.index((self.isolate, self.signal_at))

    @classmethod
    def from_seed(cls, seed: int) -> Attempt:
        if seed < 0:
            raise ValueError(f"seed {seed} must not be negative")
        milliseconds, variant = divmod(seed, len(VARIANTS))
        isolate, signal_at = VARIANTS[variant]
        return cls(milliseconds / 1000, isolate, signal_at, why=f"seed {seed}")

    @property
    def moment(self) -> str:
        """When its stop signal comes, as a sentence's end: `the stop signal {moment}`."""
        return SIGNAL_MOMENTS.get(self.signal_at) or f"at +{self.offset:.3f}s after the work was in flight ({self.why})"

    def apply(self, scenario: Scenario) -> Scenario:
        requests = 0 if self.isolate else scenario.requests
        return dataclasses.replace(scenario, signal_delay=self.offset, requests=requests, signal_at=self.signal_at)


@dataclass(frozen=True)
class Tried:
    """What one attempt showed: the verdicts that failed, and the margin when it passed."""

    attempt: Attempt
    run_dir: str
    failed: tuple[str, ...]
    margin: float | None
    missing_evidence: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    before_signal: tuple[str, ...] = ()  # failed on facts all older than the signal
    left_open: tuple[str, ...] = ()  # failed on a resource a completed teardown did not close

    @property
    def broke(self) -> bool:
        return bool(self.failed)

    @property
    def signal_irrelevant(self) -> bool:
        """
        Every failure is one the signal's moment did not cause: it came before the signal was
        sent, or it is a resource the app's own teardown ran to its end without closing.
        """
        return self.broke and set(self.failed) <= {*self.before_signal, *self.left_open}


@dataclass(frozen=True)
class Exploration:
    learning: Tried
    tried: list[Tried] = field(default_factory=list)

    @property
    def first_failure(self) -> Tried | None:
        failures = [t for t in (self.learning, *self.tried) if t.broke]
        return min(failures, key=lambda t: (t.attempt.offset, t.attempt.seed)) if failures else None

    @property
    def unverified(self) -> list[Tried]:
        """The moments that judged nothing (`RunResult.missing_evidence`): no pass, and no failure."""
        return [t for t in (self.learning, *self.tried) if t.missing_evidence and not t.broke]

    @property
    def smallest_margin(self) -> Tried | None:
        margins = [
            t for t in (self.learning, *self.tried) if t.margin is not None and not t.broke and not t.missing_evidence
        ]
        return min(margins, key=lambda t: t.margin or 0.0) if margins else None


def plan_attempts(timeline: Timeline, scenario: Scenario) -> list[Attempt]:
    """The moments that matter, from the learning run, without duplicates (by seed)."""
    zero = next((e.t for e in timeline.events if e.kind == Kind.IN_FLIGHT), None)
    attempts: list[Attempt] = []
    if zero is not None:

        def after(t: int | None, delta: float) -> float | None:
            return None if t is None else max(0.0, round((t - zero) / 1e9 + delta, 3))

        for task in sorted(timeline.tasks.values(), key=lambda task: task.started or 0):
            name = _named(task)
            for offset, why in (
                (after(task.started, EPSILON_SECONDS), f"just after task {name} [{task.id}] started"),
                (after(task.work_end, -EPSILON_SECONDS), f"just before task {name} [{task.id}] ended"),
            ):
                if offset is not None:
                    attempts.append(Attempt(offset, why=why))
        for view in sorted(timeline.requests.values(), key=lambda v: v.start or 0):
            if view.client is None or view.client.get("role") not in ("slow", "background"):
                continue
            offset = after(view.response_end, -EPSILON_SECONDS)
            if offset is not None:
                attempts.append(Attempt(offset, why=f"just before request {view.id} was answered"))
        spawned = [task for task in timeline.tasks.values() if task.spawned and task.started is not None]
        if spawned and scenario.requests and scenario.background:
            longest = max((task.work_end or task.started or 0) - (task.started or 0) for task in spawned) / 1e9
            for offset in (EPSILON_SECONDS, round(longest / 2, 3)):
                attempts.append(Attempt(offset, isolate=True, why="a spawned task running, no slow request"))
        attempts += _aimed_inside_uses(timeline, scenario, zero)
    attempts += [
        Attempt(0.0, signal_at="ready", why="nothing in flight"),
        Attempt(0.0, signal_at="startup", why="during lifespan startup"),
    ]
    unique: dict[int, Attempt] = {}
    for attempt in attempts:
        unique.setdefault(attempt.seed, attempt)
    return list(unique.values())


def _named(task: TaskView) -> str:
    """A task as an attempt names it: its function, and whose it is when the preflight queued it."""
    name = task.name.rsplit(".", 1)[-1]
    if task.from_preflight:
        name += ", the preflight's"  # still running when the work went in flight
    return name


MAX_AIMED_USES = 8  # windows of resource use by untracked work aimed at, per exploration


def _aimed_inside_uses(timeline: Timeline, scenario: Scenario, zero: int) -> list[Attempt]:
    """
    The windows in which a task the app spawned (which no server waits for) used a resource:
    the signal placed so that teardown, which followed the drain by `teardown_lag` in the
    learning run, falls in the middle of each, with only the requests that spawn work sent
    (nothing else holds the drain). At most `MAX_AIMED_USES`, spread over the run.
    """
    lag = teardown_lag(timeline)
    aimed = []
    for resource in timeline.resources.values():
        for use in resource.uses:
            task = timeline.tasks.get(use.task or "")
            if task is None or not task.spawned or use.end is None:
                continue
            middle = (use.start + use.end) // 2
            offset = max(0.0, round((middle - zero) / 1e9 - lag, 3))
            name = _named(task)
            why = f"teardown aimed inside {use.op} on {timeline.label(resource)} by task {name} [{task.id}]"
            aimed.append(Attempt(offset, isolate=bool(scenario.requests), why=why))
    if len(aimed) > MAX_AIMED_USES:
        step = len(aimed) / MAX_AIMED_USES
        aimed = [aimed[int(i * step)] for i in range(MAX_AIMED_USES)]
    return aimed


def teardown_lag(timeline: Timeline) -> float:
    """
    Seconds from the end of the last request's call to teardown, on the slowest worker of the
    learning run: how long after the drain a server begins its teardown (uvicorn looks for its
    exit flag every 0.1 s). 0 when the run shows no such pair.
    """
    lags = _gaps_before_teardown(timeline, lambda pid: (v.end for v in timeline.requests.values() if v.pid == pid))
    return max(lags, default=0.0)


def margin_of(timeline: Timeline) -> float | None:
    """
    Per worker, teardown minus the end of the last untracked work that ended before it (a task
    the app spawned, which no server waits for); the smallest. Requests and their background
    tasks end before teardown by construction of every server's drain, so their small margins
    are causality, not luck; an untracked task's small margin is luck.
    """
    margins = _gaps_before_teardown(
        timeline, lambda pid: (t.work_end for t in timeline.tasks.values() if t.pid == pid and t.spawned)
    )
    return round(min(margins), 4) if margins else None


def _gaps_before_teardown(timeline: Timeline, ends_of: Callable[[int], Iterable[int | None]]) -> list[float]:
    """Per worker, seconds from the last of `ends_of(pid)` at or before its teardown to the teardown."""
    gaps = []
    for worker in timeline.workers.values():
        teardown = worker.teardown
        if teardown is None:
            continue
        before = [end for end in ends_of(worker.pid) if end is not None and end <= teardown]
        if before:
            gaps.append((teardown - max(before)) / 1e9)
    return gaps


@dataclass(frozen=True)
class _Job:
    scenario: Scenario
    attempt: Attempt
    run_dir: str


def _try(job: _Job) -> Tried:
    """One attempt in a worker process (module level, so that `spawn` workers can import it)."""
    events = execute(job.attempt.apply(job.scenario), job.run_dir)
    return judged(job.attempt, job.run_dir, RunResult.of(events, Path(job.run_dir)))


def judged(attempt: Attempt, run_dir: str, result: RunResult) -> Tried:
    failed = tuple(sorted(result.failed))
    evidence = tuple(
        f"{verdict.name}: {item}" for verdict in result.verdicts if verdict.failed for item in verdict.evidence[:3]
    )
    margin = None if failed else margin_of(result.timeline)
    before = failed_before_signal(result.verdicts, result.timeline)
    left_open = left_open_by_teardown(result.verdicts, result.timeline)
    return Tried(attempt, run_dir, failed, margin, tuple(result.missing_evidence), evidence, before, left_open)


def failed_before_signal(verdicts: Sequence[Verdict], timeline: Timeline) -> tuple[str, ...]:
    """
    The failed verdicts whose every fact is dated before the stop signal was sent: a loop
    blocked while the work was being served fails `loop-not-blocked` at any signal moment.
    A verdict with an undated fact, or none, is not among them: nothing shows it came first.
    """
    signal = timeline.signal
    if signal is None:
        return ()
    return tuple(
        sorted(
            verdict.name
            for verdict in verdicts
            if verdict.failed
            and verdict.evidence
            and all(item.t is not None and item.t < signal for item in verdict.evidence)
        )
    )


def left_open_by_teardown(verdicts: Sequence[Verdict], timeline: Timeline) -> tuple[str, ...]:
    """
    `resources-closed`, when every resource it found open belongs to a worker whose lifespan
    shutdown completed: a teardown that ran to its end without closing it never will, whatever
    the signal's moment (one killed mid-teardown, or before it, is the moment's doing).
    """
    if not any(verdict.name == VerdictName.RESOURCES_CLOSED and verdict.failed for verdict in verdicts):
        return ()
    left = [r for r in timeline.resources.values() if r.opened is not None and r.closed is None]
    finished = all(
        (worker := timeline.workers.get(r.pid)) is not None and worker.shutdown_complete is not None for r in left
    )
    return (VerdictName.RESOURCES_CLOSED.value,) if left and finished else ()


def explore(
    scenario: Scenario,
    out: Path,
    *,
    jobs: int = 1,
    progress: Callable[[Tried], None] | None = None,
) -> Exploration:
    """The learning run, then the attempts until the first failure."""
    learning_attempt = Attempt(scenario.signal_delay, why="the learning run")
    learning_dir = str(out / "learning")
    learning_result = RunResult.of(execute(learning_attempt.apply(scenario), learning_dir), Path(learning_dir))
    learning = judged(learning_attempt, learning_dir, learning_result)
    if progress is not None:
        progress(learning)
    if learning.broke:
        return Exploration(learning)
    planned = plan_attempts(learning_result.timeline, scenario)
    attempts = [attempt for attempt in planned if attempt.seed != learning_attempt.seed]
    work = [
        _Job(scenario, attempt, str(out / f"attempt{n:02d}-seed{attempt.seed}"))
        for n, attempt in enumerate(attempts, start=1)
    ]
    tried = []
    for result in run_all(_try, work, jobs=jobs, stop=lambda tried: tried.broke):
        tried.append(result)
        if progress is not None:
            progress(result)
    return Exploration(learning, tried)


def to_dict(exploration: Exploration) -> dict[str, Any]:
    def one(tried: Tried) -> dict[str, Any]:
        attempt = tried.attempt
        return {
            "seed": attempt.seed,
            "offset": attempt.offset,
            "isolate": attempt.isolate,
            "signal_at": attempt.signal_at,
            "why": attempt.why,
            "failed": list(tried.failed),
            "failed_before_signal": list(tried.before_signal),
            "failed_left_open": list(tried.left_open),
            "margin": tried.margin,
            "missing_evidence": list(tried.missing_evidence),
            "evidence": list(tried.evidence),
            "run_dir": tried.run_dir,
        }

    failure = exploration.first_failure
    margin = exploration.smallest_margin
    return {
        "schema": EXPLORE_SCHEMA,
        "result": "fail" if failure else "pass",
        "first_failure": one(failure) if failure else None,
        "smallest_margin": one(margin) if margin else None,
        "learning": one(exploration.learning),
        "attempts": [one(t) for t in exploration.tried],
    }


def write_json(path: Path, exploration: Exploration) -> None:
    from chaos.outdir import write_file

    write_file(path, (json.dumps(to_dict(exploration), indent=2) + "\n").encode())
