"""
Chaos experiments: one scenario repeated with a seeded signal offset and fault, and the
experiment files that let a team keep such runs in a repository.

Each run draws its own seed from the experiment's seed, and everything random in the run
comes from that run seed alone, so a failing run is replayed exactly with `--replay-seed`.

Experiment file (YAML):

    name: the reference app survives a second signal
    scenario:                 # any Scenario field: app, server, server_args, requests, grace...
      app: app.main:app
      grace: 5
    faults: [second-signal:INT@0.3, stall:0.3@0.1]   # one is drawn per run
    offset: 0.5               # the signal comes 0..offset s after the work is in flight
    runs: 5
    seed: 7
    expect:
      pass: [inflight-completed]
      fail: []                # verdicts that must fail in every run
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaos import faults
from chaos.errors import SetupError
from chaos.judge.verdict import Status, Verdict, VerdictName
from chaos.outcome import RunResult
from chaos.parallel import run_all
from chaos.runner import execute
from chaos.scenario import Scenario
from chaos.validate import check_scenario, load_yaml_documents, read_text


@dataclass(frozen=True)
class RunOutcome:
    index: int
    seed: int
    offset: float
    fault: str | None
    verdicts: tuple[Verdict, ...]
    # What the run's journal lacks for its verdicts to be trusted (`RunResult.missing_evidence`):
    # a run with nothing in flight at its signal judged nothing, and must not count as a pass.
    missing: tuple[str, ...] = ()

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(v.name for v in self.verdicts if v.failed)

    def judged(self, name: str) -> bool:
        return any(v.name == name and v.status != Status.NOT_APPLICABLE for v in self.verdicts)


@dataclass(frozen=True)
class Experiment:
    scenario: Scenario
    faults: tuple[str, ...] = ()
    offset: float = 0.0
    runs: int = 1
    seed: int = 0
    name: str = "experiment"
    expect_pass: frozenset[str] = field(default_factory=frozenset)
    expect_fail: frozenset[str] = field(default_factory=frozenset)

    def run_seeds(self) -> list[int]:
        rng = random.Random(self.seed)
        return [rng.randrange(2**31) for _ in range(self.runs)]

    def plan(self, run_seed: int) -> tuple[float, str | None]:
        """The signal offset and the fault of the run with this seed."""
        rng = random.Random(run_seed)
        offset = round(rng.uniform(0.0, self.offset), 3) if self.offset else 0.0
        fault = rng.choice(self.faults) if self.faults else None
        return offset, fault


def run_once(experiment: Experiment, index: int, run_seed: int, out_dir: Path) -> RunOutcome:
    offset, fault = experiment.plan(run_seed)
    scenario = dataclasses.replace(
        experiment.scenario,
        signal_delay=offset,
        faults=(*experiment.scenario.faults, *((fault,) if fault else ())),
    )
    events = execute(scenario, out_dir / f"run{index:03d}-seed{run_seed}")
    result = RunResult.of(events)
    return RunOutcome(index, run_seed, offset, fault, tuple(result.verdicts), tuple(result.missing_evidence))


def _run_job(job: tuple[Experiment, int, int, Path]) -> RunOutcome:
    """`run_once` in a worker process (`chaos.parallel`)."""
    return run_once(*job)


def run_experiment(
    experiment: Experiment,
    out_dir: Path,
    *,
    replay_seed: int | None = None,
    progress: Callable[[RunOutcome], None] | None = None,
    jobs: int = 1,
) -> list[RunOutcome]:
    """Every run of the experiment (`jobs` side by side), in the order of their seeds."""
    for text in experiment.faults:
        faults.parse_fault(text)  # bad fault names fail before the first run
    seeds = [replay_seed] if replay_seed is not None else experiment.run_seeds()
    work = [(experiment, index, seed, out_dir) for index, seed in enumerate(seeds, start=1)]
    outcomes = []
    for outcome in run_all(_run_job, work, jobs=jobs):
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes


def wilson_interval(failures: int, runs: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a failure probability seen `failures` times in `runs`."""
    if runs == 0:
        return 0.0, 1.0
    p = failures / runs
    denominator = 1 + z * z / runs
    centre = (p + z * z / (2 * runs)) / denominator
    half = z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class VerdictTally:
    """How often one verdict failed across the runs, and the seeds that replay each failure."""

    name: str
    failures: int
    runs: int
    # Each replays its failure exactly: `drainspec chaos --replay-seed SEED`.
    failing_seeds: tuple[int, ...]
    judged: int = 0  # runs in which the verdict applied (not n/a): what a rate is out of

    @property
    def probability(self) -> float:
        return self.failures / self.judged if self.judged else 0.0


def tally(outcomes: Sequence[RunOutcome]) -> list[VerdictTally]:
    result = []
    for name in VerdictName:
        failing = [o.seed for o in outcomes if name.value in o.failed]
        judged = sum(o.judged(name.value) for o in outcomes)
        result.append(VerdictTally(name.value, len(failing), len(outcomes), tuple(failing), judged))
    return result


def unmet_expectations(experiment: Experiment, outcomes: Sequence[RunOutcome]) -> list[str]:
    """What the runs did against the file's `expect`, one line per broken expectation."""
    problems = []
    for outcome in outcomes:
        label = f"run {outcome.index} (seed {outcome.seed}, fault {outcome.fault or 'none'})"
        for name in sorted(experiment.expect_pass & outcome.failed):
            problems.append(f"{label}: {name} failed, expected to pass")
        for name in sorted(experiment.expect_fail - outcome.failed):
            problems.append(f"{label}: {name} passed, expected to fail")
    return problems


# --- files --------------------------------------------------------------------------------------

_KNOWN_KEYS = {"name", "scenario", "faults", "offset", "runs", "seed", "expect"}


MAX_EXPERIMENT_BYTES = 1024 * 1024
MAX_RUNS = 10_000
MAX_OFFSET_SECONDS = 3600.0


def load_experiment(path: Path) -> Experiment:
    """
    Read an experiment file; any mistake is a `SetupError` naming the file and the key. Every
    value is checked for its type and bounds here (`chaos.validate`), so a string `grace`, a
    `faults:` written as one string or `runs: -3` is one line, not a crash or a silent no-op.
    """
    try:
        text = read_text(path, limit=MAX_EXPERIMENT_BYTES, what="experiment (YAML)", error=SetupError)
    except SetupError as exc:
        raise SetupError(f"cannot read experiment {exc}") from None
    try:
        documents = list(load_yaml_documents(text, source=str(path), error=SetupError))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SetupError(f"{path}: not valid YAML{where}") from None
    data = documents[0] if documents else None
    if not isinstance(data, Mapping):
        raise SetupError(f"{path}: an experiment is a mapping with a 'scenario' key")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise SetupError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    scenario = _scenario(path, data.get("scenario"))
    expect = data.get("expect") or {}
    if not isinstance(expect, Mapping) or set(expect) - {"pass", "fail"}:
        raise SetupError(f"{path}: 'expect' takes 'pass' and 'fail' lists of verdict names")
    names = {v.value for v in VerdictName}
    expect_pass, expect_fail = (frozenset(_strings(path, f"expect.{key}", expect.get(key))) for key in ("pass", "fail"))
    unknown_verdicts = (expect_pass | expect_fail) - names
    if unknown_verdicts:
        raise SetupError(f"{path}: unknown verdict(s) {', '.join(sorted(unknown_verdicts))}")
    runs = data.get("runs", 1)
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= MAX_RUNS:
        raise SetupError(f"{path}: 'runs' must be a whole number of at least 1 (at most {MAX_RUNS}), not {runs!r}")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SetupError(f"{path}: 'seed' must be a whole number, not {seed!r}")
    offset = data.get("offset", 0.0)
    if (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not 0 <= offset <= MAX_OFFSET_SECONDS  # NaN fails this too
    ):
        raise SetupError(f"{path}: 'offset' must be seconds between 0 and {MAX_OFFSET_SECONDS:g}, not {offset!r}")
    chosen = tuple(_strings(path, "faults", data.get("faults")))
    faults.parse_faults(chosen)  # a bad fault fails here, before any run
    return Experiment(
        scenario=scenario,
        faults=chosen,
        offset=float(offset),
        runs=runs,
        seed=seed,
        name=str(data.get("name", path.stem)),
        expect_pass=expect_pass,
        expect_fail=expect_fail,
    )


def _strings(path: Path, key: str, value: Any) -> list[str]:
    """A YAML list of strings; one string alone is a list of one (never a list of its letters)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SetupError(f"{path}: '{key}' must be a list of strings, not {value!r}")
    return value


def _scenario(path: Path, data: Any) -> Scenario:
    if not isinstance(data, Mapping) or "app" not in data:
        raise SetupError(f"{path}: 'scenario' must be a mapping with at least 'app: module:attribute'")
    known = {f.name for f in dataclasses.fields(Scenario)}
    unknown = set(data) - known
    if unknown:
        raise SetupError(f"{path}: unknown scenario key(s) {', '.join(sorted(map(str, unknown)))}")
    problem = check_scenario(data, runnable=True)
    if problem is not None:
        raise SetupError(f"{path}: scenario: {problem}")
    try:
        return Scenario.from_dict(data)
    except TypeError as exc:
        raise SetupError(f"{path}: {exc}") from None
