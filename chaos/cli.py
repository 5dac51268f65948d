"""
The `drainspec` command.

    drainspec run --app PKG.MODULE:ATTR [options] [-- SERVER ARGS...]
    drainspec matrix --app PKG.MODULE:ATTR [--servers ...] [--signals TERM,INT] [--knob SERVER=ARGS]
    drainspec chaos --app PKG.MODULE:ATTR --runs N --seed S [--choose-fault FAULT ...]
    drainspec experiment FILE.yaml ...
    drainspec k8s MANIFEST.yaml [--propagation 0.5..3] [--static]
    drainspec report JOURNAL [--json PATH] [--junit PATH] [--html PATH]

Exit codes (`chaos.outcome`): 0 every verdict passed on complete evidence, 1 a verdict failed,
2 bad input, an environment that cannot run the check, or incomplete evidence (always one line
on stderr saying what to do), 3 drainspec itself crashed (its traceback saved to a file).

`run`, `chaos`, `matrix` and `k8s` share one set of traffic arguments; every mode gets its
verdicts from `chaos.outcome.RunResult`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from chaos import __version__, config
from chaos.errors import EXIT_BAD_INPUT, EXIT_CRASHED, DrainspecError, UsageError, one_line
from chaos.journal import Event
from chaos.scenario import BACKGROUND_PATH, HOLD_PATH, SIGNAL_AT, K8sOptions, Scenario, parse_range
from chaos.servers import SERVERS, names_text, own_script_of

if TYPE_CHECKING:
    from rich.console import Console

    from chaos.outcome import RunResult

CRASH_FILE = "drainspec-crash.txt"
OUT_HELP = (
    "directory for the journal and reports: new, empty, or one drainspec made "
    "(default: a new drainspec-out/<time>-<mode>/, linked as drainspec-out/latest)"
)
_claims: list[Any] = []
"""The output directories this command holds (`chaos.outdir`), released when `main` returns."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        if message == "argument --server-arg: expected one argument":  # its value is itself a flag
            message += (
                ": join a flag to it (--server-arg=--timeout-graceful-shutdown) or put the server's arguments after --"
            )
        raise UsageError(f"{message} (see {_help_of(self.prog.split()[1:])})")


def _help_of(subcommand: Sequence[str]) -> str:
    """The help to read: `drainspec run --help`, or `drainspec --help` before a subcommand is known."""
    return " ".join(["drainspec", *subcommand, "--help"])


def _non_negative(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
        return value

    return parse


def _jobs(text: str) -> int:
    jobs = _non_negative(int)(text)
    if not 1 <= jobs <= 64:
        raise argparse.ArgumentTypeError(f"{text!r}: give between 1 and 64 jobs")
    return int(jobs)


def _port(text: str) -> int:
    port = _non_negative(int)(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(port)


CONFIGURABLE = ("run", "chaos", "matrix", "explore")  # the commands a scenario file gives options to


def build_parser(
    defaults: Mapping[str, Any] | None = None, source: Path | None = None, *, only: str | None = None
) -> argparse.ArgumentParser:
    """
    The command line; `defaults` (from a scenario file, `chaos.config`) go under the flags. With
    `only`, the subcommand about to run is the only one given its arguments (the others are
    named, for the help and the choices): building all of them costs more than the rest of the
    command line does before a run spawns its server.
    """
    parser = _Parser(prog="drainspec", description="Verify that an ASGI service shuts down gracefully.")
    parser.add_argument("--version", action="version", version=f"drainspec {__version__}")
    commands = parser.add_subparsers(dest="subcommand", required=True, parser_class=_Parser)
    for name, (help_text, add_arguments) in SUBCOMMANDS.items():
        command = commands.add_parser(name, help=help_text)
        if only is not None and name != only:
            continue
        add_arguments(command)
        if defaults and name in CONFIGURABLE:
            known = {action.dest for action in command._actions}
            command.set_defaults(**config.apply(defaults, known, source))
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_server_arguments(parser)
    _add_traffic_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="print only the result line")
    parser.add_argument(
        "--seed",
        type=_non_negative(int),
        help="replay an attempt of drainspec explore (its signal offset and traffic), with the same flags",
    )


def _explore_arguments(parser: argparse.ArgumentParser) -> None:
    _add_server_arguments(parser)
    _add_traffic_arguments(parser)
    parser.add_argument("--jobs", type=_jobs, default=None, help="attempts side by side (default: the CPUs)")


def _chaos_arguments(parser: argparse.ArgumentParser) -> None:
    _add_server_arguments(parser)
    _add_traffic_arguments(parser)
    parser.add_argument("--runs", type=_non_negative(int), default=10)
    parser.add_argument("--seed", type=int, default=0, help="the experiment's seed; each run derives its own")
    parser.add_argument("--offset", type=_non_negative(float), default=0.5, help="signal 0..OFFSET s after in-flight")
    parser.add_argument(
        "--choose-fault", action="append", default=[], metavar="FAULT", help="one drawn per run (repeat)"
    )
    parser.add_argument("--replay-seed", type=int, help="rerun exactly the run with this seed")
    parser.add_argument("--jobs", type=_jobs, default=1, help="runs side by side (same results as one by one)")


def _experiment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--out", default=None, help=OUT_HELP)


def _k8s_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, help="Deployment or Pod YAML (multi-document is fine)")
    parser.add_argument("--container", help="which container, when the pod has several")
    parser.add_argument(
        "--dockerfile",
        type=Path,
        help="the Dockerfile the image is built from: its ENTRYPOINT and CMD when the manifest has no "
        "command, its ENV and STOPSIGNAL",
    )
    parser.add_argument(
        "--dockerfile-target", metavar="STAGE", help="the Dockerfile's stage the image is (default: the last)"
    )
    _add_traffic_arguments(parser, requests=2, background=0)
    parser.add_argument(
        "--propagation", default="1", help="seconds routers keep sending new connections: 1.5 or 0.5..3"
    )
    parser.add_argument("--seed", type=int, help="picks the propagation inside a range, reproducibly")
    parser.add_argument("--steady-path", help="path of the steady new requests (default: readiness path)")
    parser.add_argument("--static", action="store_true", help="only check the manifest; run nothing")
    parser.add_argument(
        "--rollout", action="store_true", help="replay a rolling update of all replicas under steady load instead"
    )
    parser.add_argument("--no-namespace", action="store_true", help="run as a plain process, not PID 1")
    parser.add_argument(
        "--ingress",
        choices=("builtin", "nginx", "haproxy"),
        default="builtin",
        help="the proxy in front of the pods: drainspec's router, or a real nginx (ingress-nginx's defaults) "
        "or haproxy (HAProxy Ingress's defaults) started on 127.0.0.1",
    )
    parser.add_argument(
        "--ingress-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the ingress's defaults (repeat), e.g. upstream-keepalive-timeout=5",
    )
    parser.add_argument(
        "--load-rate",
        type=_non_negative(float),
        default=0.0,
        metavar="R",
        help="paced keep-alive load at R requests/s through the router or ingress (default: one request per 50 ms)",
    )
    parser.add_argument(
        "--load-connections",
        type=int,
        default=8,
        metavar="N",
        help="keep-alive connections of the paced load (--load-rate), or POSTs per burst (--load-bursts)",
    )
    parser.add_argument(
        "--load-bursts",
        type=int,
        default=0,
        metavar="N",
        help="N bursts of POSTs (one per --load-connections) spaced at the server's keep-alive timeout, "
        "before the deletion: load that finds the keep-alive race",
    )
    parser.add_argument(
        "--link-delay",
        type=_non_negative(float),
        default=0.0,
        metavar="SECONDS",
        help="one-way network delay between the ingress proxy and each pod, e.g. 0.001 (with --ingress)",
    )
    parser.add_argument(
        "--latency", type=_non_negative(float), default=0.0, help="seconds the router adds to a connect"
    )
    parser.add_argument(
        "--reset-rate",
        type=_non_negative(float),
        default=0.0,
        help="fraction of new connections reset once terminating",
    )


def _matrix_arguments(parser: argparse.ArgumentParser) -> None:
    _add_server_arguments(parser)
    _add_traffic_arguments(parser)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated")
    parser.add_argument("--signals", default="TERM", help="comma-separated stop signals, e.g. TERM,INT,QUIT")
    parser.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="SERVER=ARGS",
        help="server arguments for one more row of SERVER (repeat); SERVER= alone means as shipped. "
        "Replaces that server's default rows (as shipped, and with its drain bounded at 1 s)",
    )


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journal", type=Path)
    parser.add_argument("--json", type=Path, help="write report.json here")
    parser.add_argument("--junit", type=Path, help="write JUnit XML here")
    parser.add_argument("--html", type=Path, help="write the HTML timeline (timeline.html) here")


def _add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Which server runs which app: `run`, `chaos` and `matrix` (a replay reads the manifest)."""
    parser.add_argument("--app", help="the ASGI app, as PKG.MODULE:ATTR (importable from here)")
    parser.add_argument("--scenario", metavar="NAME", help="a named scenario of drainspec.toml / [tool.drainspec]")
    parser.add_argument("--config", type=Path, help="the scenario file (default: drainspec.toml, else pyproject.toml)")
    parser.add_argument("--server", default="uvicorn", help=f"{names_text()}, or use --command")
    parser.add_argument(
        "--command",
        help="any other server command; {port} and {app} are filled in, e.g. 'mysrv --bind 127.0.0.1:{port} {app}'",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server argument (repeat; or put them after --)",
    )
    parser.add_argument("--workers", type=_non_negative(int), default=1)
    parser.add_argument("--port", type=_port, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--signal", default="TERM", help="stop signal: TERM, INT, QUIT, ...")
    parser.add_argument("--grace", type=_non_negative(float), default=30.0, help="seconds before SIGKILL")
    parser.add_argument("--integrity", metavar="MODULE:FUNCTION", help="data-integrity check to run afterwards")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help="inject a fault (repeat): second-signal:INT@0.3, sigkill@0.5, stall:0.5@0.2, crash-worker@0.2, "
        "teardown-delay:1.5, keepalive@0.3, stream[:SECONDS], websocket",
    )
    parser.add_argument(
        "--signal-delay", type=_non_negative(float), default=0.0, help="seconds between in-flight and signal"
    )
    parser.add_argument(
        "--signal-at",
        choices=SIGNAL_AT,
        default="in-flight",
        help="when the stop signal comes: with the work in flight (default), once ready with nothing in "
        "flight, or during lifespan startup",
    )


def _add_traffic_arguments(parser: argparse.ArgumentParser, *, requests: int = 3, background: int = 1) -> None:
    """The work put in flight, the judging thresholds and where files go: every run mode."""
    parser.add_argument("--requests", type=_non_negative(int), default=requests, help="slow requests in flight")
    parser.add_argument("--request-seconds", type=_non_negative(float), default=1.0)
    parser.add_argument("--request-path", default=HOLD_PATH, help="'METHOD /path', {seconds} and {id} filled in")
    parser.add_argument(
        "--background",
        type=_non_negative(int),
        default=background,
        help="requests that leave a background task running",
    )
    parser.add_argument("--background-seconds", type=_non_negative(float), default=1.0)
    parser.add_argument("--background-path", default=BACKGROUND_PATH)
    parser.add_argument("--background-policy", choices=["complete", "allow-cancel"], default="complete")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a header on every request of the scenario (repeat), e.g. 'Authorization: Bearer ...'",
    )
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--json", dest="json_body", metavar="JSON|@FILE", help="a JSON body ({id}, {seconds} filled)")
    body.add_argument("--data", metavar="TEXT|@FILE", help="a raw body ({id}, {seconds} filled)")
    parser.add_argument(
        "--expect-status",
        default="2xx",
        metavar="STATUSES",
        help="statuses that count as served: 2xx (default), 2xx,3xx, 200,201, 200-299",
    )
    parser.add_argument("--ready-timeout", type=_non_negative(float), default=20.0)
    parser.add_argument("--stall-ms", type=_non_negative(float), default=250.0, help="event-loop stall threshold")
    parser.add_argument(
        "--no-instrument",
        dest="instrument",
        action="store_false",
        help="do not hook the app's pools and clients (SQLAlchemy, asyncpg, psycopg, redis, httpx, aiohttp)",
    )
    parser.add_argument("--out", default=None, help=OUT_HELP)
    parser.add_argument("--junit", type=Path, help="also write JUnit XML here")


def _scenario(args: argparse.Namespace, server_args: Sequence[str] = ()) -> Scenario:
    """The one `Scenario` of a command line; a replay has no server arguments (the manifest has them)."""
    env = {}
    for item in getattr(args, "env", ()):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r} must look like KEY=VALUE")
        env[key] = value
    app = getattr(args, "app", "") or ""
    script = own_script_of(getattr(args, "command", None))
    if script is not None:
        app = script.name  # the script decides which app its server runs
    elif hasattr(args, "server") and not app:
        raise UsageError(
            "--app is required (PKG.MODULE:ATTR); or put app = ... in drainspec.toml "
            "or in the [tool.drainspec] table of pyproject.toml"
        )
    if app and ":" not in app and script is None:
        raise UsageError(f'--app "{app}" must be in format "<module>:<attribute>"')
    server: dict[str, Any] = {
        "app": app,
        "server": getattr(args, "server", "uvicorn"),
        "server_args": tuple(getattr(args, "server_arg", ())) + tuple(server_args),
        "command": getattr(args, "command", None),
        "workers": max(1, getattr(args, "workers", 1)),
        "port": getattr(args, "port", None),
        "signal": getattr(args, "signal", "TERM"),
        "grace": getattr(args, "grace", 30.0),
        "integrity": getattr(args, "integrity", None),
        "faults": tuple(getattr(args, "fault", ())),
        "signal_delay": getattr(args, "signal_delay", 0.0),
        "signal_at": getattr(args, "signal_at", "in-flight"),
    }
    return Scenario(
        **server,
        env=env,
        requests=args.requests,
        request_seconds=args.request_seconds,
        request_path=args.request_path,
        background=args.background,
        background_seconds=args.background_seconds,
        background_path=args.background_path,
        background_policy=args.background_policy,
        ready_timeout=args.ready_timeout,
        stall_ms=args.stall_ms,
        headers=tuple(args.header),
        json_body=_body(args.json_body, "--json"),
        data=_body(args.data, "--data"),
        expect_status=args.expect_status,
        instrument=args.instrument,
    )


def _noted(console: Console, scenario: Scenario) -> Scenario:
    """The scenario, after a note on the console for what in it will not do what it says."""
    from chaos.workload import durations_not_carried

    for note in durations_not_carried(scenario):
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return scenario


def _body(value: str | None, option: str) -> str | None:
    """A body given inline, or `@FILE` to read it from a file."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        if not path.is_file():
            raise UsageError(f"{option} {value}: no such file; give @PATH to a file, or the body inline")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{option} {value}: cannot be read ({exc})") from None


def _show(console: Console, result: RunResult, *, quiet: bool = False) -> None:
    from chaos.reports.console import print_console

    if quiet:
        failures = sorted(result.failed)
        line = "FAIL: " + ", ".join(failures) if failures else ("PASS" if result.passed else "INCOMPLETE")
        console.print(line, highlight=False)
        for item in result.missing_evidence:
            console.print(f"incomplete evidence: {escape(item)}", highlight=False)
    else:
        print_console(console, result.timeline, result.verdicts, result.missing_evidence)


def _output(args: argparse.Namespace, mode: str) -> Path:
    """
    Claim the command's output directory (`chaos.outdir`: only a new, empty or drainspec-made
    one, locked against a second run) and check the --junit path before anything runs. Without
    `--out`, each run gets a new `drainspec-out/<time>-<mode>/`.
    """
    from chaos import outdir

    if getattr(args, "junit", None) is not None:
        outdir.check_writable(args.junit)
    directory = outdir.new_run_directory(mode) if args.out is None else outdir.claim(args.out)
    _claims.append(directory)
    return directory.path


def _run(args: argparse.Namespace, server_args: Sequence[str], console: Console) -> int:
    from chaos.lifecycle import JOURNAL_FILE
    from chaos.runner import execute

    scenario = _noted(console, _scenario(args, server_args))
    if args.seed is not None:
        from chaos.explore import Attempt

        scenario = Attempt.from_seed(args.seed).apply(scenario)
    out = _output(args, "run")
    if not args.quiet:
        console.print(f"[dim]starting {escape(scenario.subject)}; files in {out}/[/]")
    with _status(console, out / JOURNAL_FILE, ready_timeout=scenario.ready_timeout):
        events = execute(scenario, out)
    from chaos.outcome import RunResult

    result = RunResult.of(events, out)
    result.write(out, junit=args.junit)
    _show(console, result, quiet=args.quiet)
    if not args.quiet:
        console.print(f"[dim]journal, report.json, timeline.html and junit.xml in {out}/[/]")
    return result.exit_code


def _explore(args: argparse.Namespace, server_args: Sequence[str], console: Console) -> int:
    from chaos.explore import LUCKY_MARGIN_SECONDS, Tried, explore, write_json
    from chaos.parallel import default_jobs

    scenario = _noted(console, _scenario(args, server_args))
    out = _output(args, "explore")
    jobs = args.jobs or default_jobs()
    what = f"a learning run, then {jobs} attempt(s) at a time"
    console.print(f"[dim]exploring {escape(scenario.app)}: {what}; in {out}/[/]")

    def progress(tried: Tried) -> None:
        attempt = tried.attempt
        verdict = "[bold red]FAIL[/] " + ", ".join(tried.failed) if tried.broke else "[green]pass[/]"
        if not tried.broke and tried.missing_evidence:
            verdict = "[yellow]not verified[/]"  # it judged nothing: `RunResult.missing_evidence`
        margin = f", margin {tried.margin:.3f}s" if tried.margin is not None else ""
        console.print(
            f"  seed {attempt.seed:>7}  {attempt.signal_at:<9} +{attempt.offset:.3f}s"
            f"{' isolated' if attempt.isolate else '         '}  {verdict}{margin}  [dim]{escape(attempt.why)}[/]"
        )

    exploration = explore(scenario, out, jobs=jobs, progress=progress)
    write_json(out / "explore.json", exploration)
    console.print()
    failure = exploration.first_failure
    if failure is not None:
        attempt = failure.attempt
        if failure.signal_irrelevant:
            reasons = []
            if failure.before_signal:
                reasons.append(f"{', '.join(failure.before_signal)} failed before the stop signal was sent")
            if left_open := [name for name in failure.left_open if name not in failure.before_signal]:
                reasons.append(f"{', '.join(left_open)} failed on what a teardown that ran to its end left open")
            console.print(
                f"[bold red]FAIL[/] {'; '.join(reasons)}, at seed {attempt.seed} ({escape(attempt.why)}): "
                "not a race with the signal, the scenario breaks it whenever the signal comes"
            )
        else:
            console.print(
                f"[bold red]FAIL[/] the stop signal {escape(attempt.moment)} breaks: {', '.join(failure.failed)}"
            )
            if failure.before_signal:
                console.print(f"  ({', '.join(failure.before_signal)} failed before the signal: not its moment)")
        for item in failure.evidence:
            console.print(f"  - {escape(item)}", highlight=False)
        console.print(f"  replay: drainspec run <the same flags> --seed {attempt.seed}  (files in {failure.run_dir})")
        return 1
    smallest = exploration.smallest_margin
    tried = 1 + len(exploration.tried)
    unverified = exploration.unverified
    if len(unverified) == tried:
        console.print(f"[bold yellow]not verified[/]: none of {tried} moments had the evidence their verdicts need")
        console.print(f"  - {escape(unverified[0].missing_evidence[0])}", highlight=False)
        return 2
    if unverified:
        console.print(
            f"[yellow]note[/]: {len(unverified)} of {tried} moments judged nothing "
            f"({escape(unverified[0].missing_evidence[0])}); the rest are what passed"
        )
        tried -= len(unverified)
    if smallest is not None and smallest.margin is not None and smallest.margin < LUCKY_MARGIN_SECONDS:
        console.print(
            f"[bold yellow]warning[/]: every one of {tried} moments passed, but at seed {smallest.attempt.seed} "
            f"teardown began {smallest.margin * 1000:.0f} ms after the last work ended: it passed by luck"
        )
    else:
        margin = (
            f"; smallest margin {smallest.margin:.3f}s between untracked work and teardown"
            if smallest and smallest.margin is not None
            else "; no untracked (spawned) work was seen"
        )
        console.print(f"[bold green]PASS[/] the stop signal broke nothing at any of {tried} moments{margin}")
    return 0


def _print_chaos(console: Console, experiment: Any, outcomes: Sequence[Any]) -> int:
    """
    In how many runs each verdict failed, out of the runs it applied in; 1 when one failed, else 2
    when a run lacked the evidence its verdicts need (it judged nothing: not a pass), else 0.
    """
    from chaos.experiment import tally, wilson_interval

    console.print()
    console.print(f"[bold]{len(outcomes)} run(s)[/], experiment seed {experiment.seed}; failed in:")
    any_failed = False
    for row in tally(outcomes):
        if not row.judged:
            console.print(f"  [dim]n/a[/] {row.name} [dim](applied in no run)[/]")
            continue
        others = f" [dim](n/a in {row.runs - row.judged})[/]" if row.judged < row.runs else ""
        if not row.failures:
            console.print(f"  [green]0/{row.judged}[/] {row.name}{others}")
            continue
        any_failed = True
        low, high = wilson_interval(row.failures, row.judged)
        seeds = ", ".join(str(seed) for seed in row.failing_seeds[:10])
        console.print(
            f"  [bold red]{row.failures}/{row.judged}[/] {row.name}{others}: p = {row.probability:.2f} "
            f"(95% CI {low:.2f}-{high:.2f}); replay with --replay-seed {seeds}"
        )
    unverified = [outcome for outcome in outcomes if outcome.missing]
    if unverified:
        console.print(
            f"[bold yellow]not verified[/]: {len(unverified)} of {len(outcomes)} run(s) lack the evidence "
            "their verdicts need, and count as no pass"
        )
        for outcome in unverified[:10]:
            console.print(f"  run {outcome.index} (seed {outcome.seed}): {escape(outcome.missing[0])}", highlight=False)
    return 1 if any_failed else 2 if unverified else 0


def _chaos(args: argparse.Namespace, server_args: Sequence[str], console: Console) -> int:
    from chaos.experiment import Experiment, run_experiment

    if args.runs < 1 and args.replay_seed is None:
        raise UsageError(f"--runs {args.runs}: a chaos experiment needs at least one run")
    scenario = _noted(console, _scenario(args, server_args))
    experiment = Experiment(
        scenario=scenario,
        faults=tuple(args.choose_fault),
        offset=args.offset,
        runs=args.runs,
        seed=args.seed,
    )

    def progress(outcome: Any) -> None:
        failed = ", ".join(sorted(outcome.failed)) or ("not verified" if outcome.missing else "all passed")
        console.print(
            f"  run {outcome.index:>3} seed {outcome.seed:>10} offset {outcome.offset:.3f}s "
            f"fault {outcome.fault or '-'}: {failed}"
        )

    out = _output(args, "chaos")
    outcomes = run_experiment(experiment, out, replay_seed=args.replay_seed, progress=progress, jobs=args.jobs)
    return _print_chaos(console, experiment, outcomes)


def _experiments(args: argparse.Namespace, console: Console) -> int:
    from chaos.experiment import load_experiment, run_experiment, unmet_expectations

    loaded = [load_experiment(path) for path in args.files]
    root = _output(args, "experiment")
    code = 0
    for path, experiment in zip(args.files, loaded, strict=True):
        console.print(f"[bold]{escape(experiment.name)}[/] ({escape(str(path))}): {experiment.runs} run(s)")
        outcomes = run_experiment(experiment, root / path.stem)
        problems = unmet_expectations(experiment, outcomes)
        _print_chaos(console, experiment, outcomes)
        for problem in problems:
            console.print(f"  [bold red]unmet:[/] {escape(problem)}")
        if problems:
            code = 1
        elif any(outcome.missing for outcome in outcomes):  # met by runs that judged nothing: not met
            code = code or 2
        else:
            console.print("  [green]every expectation met[/]")
    return code


def _matrix(args: argparse.Namespace, server_args: Sequence[str], console: Console) -> int:
    import shlex

    from chaos import matrix
    from chaos.runner import stop_signal_of

    if args.command or args.server != "uvicorn":
        raise UsageError("matrix takes --servers (comma-separated), not --server or --command")
    knobs: dict[str, list[tuple[str, ...]]] = {}
    for item in args.knob:
        server, sep, words = item.partition("=")
        if not sep:
            raise UsageError(f"--knob {item!r} must look like SERVER=ARGS, e.g. gunicorn=--graceful-timeout 5")
        try:
            knobs.setdefault(server.strip(), []).append(tuple(shlex.split(words)))
        except ValueError as exc:
            raise UsageError(f"--knob {item!r}: {exc}") from None
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    if not servers or not signals:
        raise UsageError("--servers and --signals each need at least one name, e.g. --servers uvicorn,gunicorn")
    for name in signals:
        stop_signal_of(name, where="--signals")
    cells = matrix.cells(servers, signals, knobs)
    base = _noted(console, _scenario(args, server_args))
    out = _output(args, "matrix")
    console.print(f"[dim]{len(cells)} cell(s), one run each, one after another; files in {out}/[/]")

    def progress(result: matrix.CellResult) -> None:
        failed = ", ".join(sorted(result.failed)) or (
            f"could not run: {result.error}" if result.error else "not verified" if result.missing else "all passed"
        )
        console.print(f"  {escape(result.cell.label)}: {escape(failed)}")

    results = matrix.run_matrix(base, cells, out, progress)
    matrix.write_json(out / "matrix.json", base, results)
    console.print()
    matrix.print_table(console, results)
    if all(result.error for result in results):
        raise UsageError(f"no cell could run: {results[0].error}")
    if any(result.failed for result in results):
        return 1
    return 2 if any(result.missing for result in results) else 0  # a cell that judged nothing is no pass


def _print_findings(console: Console, findings: Sequence[Any]) -> None:
    console.print("[bold]Manifest[/]")
    if not findings:
        console.print("  [green]no static finding[/]")
    for finding in findings:
        style = "bold red" if finding.severity == "error" else "yellow"
        console.print(
            f"  [{style}]{finding.severity.upper():<7}[/] {finding.code} (#{finding.number}): {escape(finding.message)}"
        )
        console.print(f"          [dim]fix:[/] {escape(finding.recommendation)}")
    console.print()


def _app_variable_notes(container: Any) -> list[str]:
    """What a script's server takes its app from, when it is a variable (`uvicorn "$APP_MODULE"`)."""
    from chaos.k8s.manifest import analyse, app_variable, pod_env

    found = app_variable(container.argv, pod_env(container))
    if found is None:
        return []
    (name, app), server = found, analyse(container.argv).server
    if app is not None:
        return [f"the app {server} runs is ${name}: {app}"]
    return [
        f"{server} takes its app from ${name}, which is not an import string here: set {name}=module:attribute "
        "(in the environment or the manifest's env) so that requests are put in flight inside the app"
    ]


def _k8s(args: argparse.Namespace, console: Console) -> int:
    from chaos.k8s.findings import static_findings
    from chaos.k8s.manifest import load_manifest, select_container, with_image
    from chaos.k8s.plan import Replay
    from chaos.lifecycle import JOURNAL_FILE

    pod = load_manifest(args.manifest)
    image = None
    if args.dockerfile is not None:
        from chaos.k8s.image import load_dockerfile

        image = load_dockerfile(args.dockerfile, target=args.dockerfile_target)
    elif args.dockerfile_target is not None:
        raise UsageError("--dockerfile-target names a stage of --dockerfile: add --dockerfile PATH")
    container, assumed = with_image(pod, select_container(pod, args.container), image)
    for note in (*assumed, *_app_variable_notes(container)):
        console.print(f"[dim]{escape(note)}[/]")
    if args.reset_rate > 1:
        raise UsageError(f"--reset-rate {args.reset_rate:g} must be a fraction between 0 and 1")
    options = K8sOptions(
        propagation=parse_range(args.propagation),
        seed=args.seed,
        steady_path=args.steady_path,
        namespace=not args.no_namespace,
        latency=args.latency,
        reset_rate=args.reset_rate,
        ingress=args.ingress,
        ingress_options=tuple(args.ingress_option),
        load_rate=args.load_rate,
        load_connections=args.load_connections,
        load_bursts=args.load_bursts,
        link_delay=args.link_delay,
    )
    if not 1 <= args.load_connections <= 512:
        raise UsageError(f"--load-connections {args.load_connections} must be between 1 and 512")
    if not 0 <= args.load_bursts <= 100:
        raise UsageError(f"--load-bursts {args.load_bursts} must be between 0 and 100")
    if args.load_bursts and args.load_rate:
        raise UsageError("--load-bursts and --load-rate are two kinds of load: choose one")
    if args.load_bursts and args.rollout:
        raise UsageError("--load-bursts replays one pod's termination: drop --rollout")
    if args.link_delay > 1:
        raise UsageError(f"--link-delay {args.link_delay:g} must be at most 1 second (e.g. 0.001)")
    if args.link_delay and args.ingress == "builtin":
        raise UsageError("--link-delay is the network between an ingress proxy and the pods: add --ingress nginx")
    if args.ingress != "builtin" and (args.latency or args.reset_rate):
        raise UsageError("--latency and --reset-rate are the builtin router's chaos; drop them with --ingress")
    from chaos.k8s.ingress import parse_options

    ingress_options = parse_options(args.ingress, options.ingress_options)
    findings = static_findings(pod, container, propagation=options.propagation[1])
    from chaos.k8s.findings import keepalive_below_proxy
    from chaos.k8s.ingress import upstream_idle_timeout

    idle = upstream_idle_timeout(args.ingress, ingress_options)
    if idle is not None and (race := keepalive_below_proxy(container, args.ingress, idle)) is not None:
        findings.append(race)
    errors = any(f.severity == "error" for f in findings)
    if args.static:
        _print_findings(console, findings)
        return 1 if errors else 0
    out = _output(args, "rollout" if args.rollout else "k8s")
    if args.rollout:
        from chaos.k8s.rollout import Strategy, rollout

        strategy = Strategy.of(pod)
        console.print(
            f"[dim]rolling update of {pod.kind}/{escape(pod.name)}: {strategy.replicas} replica(s), maxSurge "
            f"{strategy.surge}, maxUnavailable {strategy.unavailable}; files in {out}/[/]"
        )
        play: Callable[[Replay, Path], list[Event]] = rollout
    else:
        from chaos.k8s.replay import replay

        console.print(
            f"[dim]replaying {pod.kind}/{escape(pod.name)} container {escape(container.name)}; files in {out}/[/]"
        )
        play = replay
    if args.ingress != "builtin":
        from chaos.k8s.ingress import STANDS_FOR

        settings = ", ".join(f"{key}={value}" for key, value in ingress_options.items())
        console.print(f"[dim]ingress: {args.ingress} with {STANDS_FOR[args.ingress]}'s defaults: {escape(settings)}[/]")
    with contextlib.ExitStack() as stack:
        workdir = None
        if image is not None and image.rearranges():
            import tempfile

            from chaos.k8s.image import assemble_workdir

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drainspec-workdir-")))
            assemble_workdir(image, workdir)
            console.print(
                f"[dim]the image's WORKDIR {escape(image.workdir)} is laid out from {escape(image.source)}'s COPY "
                f"lines (links to the files here) in {workdir}: the command runs there[/]"
            )
        with _status(console, out / JOURNAL_FILE, ready_timeout=args.ready_timeout):
            events = play(Replay(pod, container, _noted(console, _scenario(args)), options, workdir), out)
    from chaos.outcome import RunResult

    result = RunResult.of(events, out)
    result.write(out, junit=args.junit)
    _print_findings(console, findings)
    _show(console, result)
    if not args.rollout:
        _print_budget(console, result, pod, container)
    code = result.exit_code
    return 1 if errors and code == 0 else code


def _print_budget(console: Console, result: RunResult, pod: Any, container: Any) -> None:
    from chaos.k8s.manifest import prestop_seconds, recommend_budget
    from chaos.k8s.replay import cut_short, measured_drain

    propagation = float(result.timeline.replay.get("propagation", 0.0))
    drain = measured_drain(result.events)
    console.print()
    console.print("[bold]Recommended budget[/]")
    if drain is None:
        # No arithmetic on a kill time: a drain cut short was not measured. The root cause first.
        cause = cut_short(result.timeline) or "the app did not drain by itself, so its drain was not measured"
        console.print(f"  [bold red]no budget:[/] {escape(cause)}")
        return
    budget = recommend_budget(
        propagation, drain, current_prestop=prestop_seconds(container.prestop), current_grace=pod.grace
    )
    for line in budget.lines:
        console.print(f"  {escape(line)}")


def _report(args: argparse.Namespace, console: Console) -> int:
    from chaos.journal import read_journal
    from chaos.reports.html import write_html
    from chaos.reports.json import write_json
    from chaos.reports.junit import write_junit

    events = read_journal(args.journal)
    if not events:
        raise UsageError(f"{args.journal} holds no events; is it a drainspec journal?")
    from chaos.outcome import RunResult

    result = RunResult.of(events)
    _show(console, result)
    if args.json:
        write_json(args.json, result.timeline, result.verdicts)
    if args.junit:
        write_junit(args.junit, result.timeline, result.verdicts)
    if args.html:
        write_html(args.html, result.timeline, result.verdicts)
    return result.exit_code


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("start a server, put work in flight, stop it, judge it", _run_arguments),
    "explore": ("place the stop signal at every moment that matters", _explore_arguments),
    "chaos": ("repeat a scenario with seeded signal offsets and faults", _chaos_arguments),
    "experiment": ("run experiment files and check their expectations", _experiment_arguments),
    "k8s": ("replay a Deployment's termination locally and judge it", _k8s_arguments),
    "matrix": ("one scenario across servers, signals and knobs: a table", _matrix_arguments),
    "report": ("rebuild the reports of a run from its journal", _report_arguments),
}
"""Each subcommand, in the order the help lists them: its one-line help, and what adds its arguments."""


COMMANDS: dict[str, Callable[[argparse.Namespace, Sequence[str], Console], int]] = {
    "run": _run,
    "chaos": _chaos,
    "matrix": _matrix,
    "k8s": lambda args, _, console: _k8s(args, console),
    "experiment": lambda args, _, console: _experiments(args, console),
    "report": lambda args, _, console: _report(args, console),
    "explore": _explore,
}


class _Console:
    """
    rich's Console, made on first use. rich takes longer to import than the rest of the command
    line does, and a quiet run prints nothing until its server has long been spawned: the
    imports then overlap the server's boot (`chaos.runner.LOADED_WHILE_THE_SERVER_BOOTS`).
    """

    def __init__(self) -> None:
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            self._console = _console_for_a_reader_that_may_leave()
        return getattr(self._console, name)


def _console_for_a_reader_that_may_leave() -> Console:
    """
    A rich Console on a stdout that goes quiet when its reader leaves (`drainspec run | head`).
    Left to rich, the broken pipe ends the command at whichever print met it (`SystemExit(1)`
    from rich 13, a `BrokenPipeError` before): its reports unwritten and its exit code a failure
    that never happened. The verdicts decide the exit code whoever is still reading.
    """
    from rich.console import Console

    return Console(file=cast("TextIO", _ReaderMayLeave(sys.stdout)), highlight=False, soft_wrap=True)


class _ReaderMayLeave:
    """A text stream that, once its reader has gone, sends what is left to print nowhere."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_left()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_left()

    def _reader_left(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())  # what the stream still buffers goes there too
        os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: rich asks the real stream
        return getattr(self._stream, name)


def _status(console: Console, journal: Path, *, ready_timeout: float) -> contextlib.AbstractContextManager[None]:
    """The live status line of a run (`chaos.reports.progress`), on a terminal only."""
    if not sys.stdout.isatty():  # a pipe or a file: no status, and no rich loaded to decide so
        return contextlib.nullcontext()
    from chaos.reports import progress

    return progress.status(console, journal, ready_timeout=ready_timeout)


def escape(text: str) -> str:
    """rich's markup escape, imported when first needed (see `_Console`)."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    server_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, server_args = argv[:split], argv[split + 1 :]
    console = cast("Console", _Console())
    args: argparse.Namespace | None = None
    try:
        defaults, source = _scenario_file(argv)
        only = argv[0] if argv and argv[0] in SUBCOMMANDS else None
        args, unknown = build_parser(defaults, source, only=only).parse_known_args(argv)
        if unknown:  # the subcommand's own parser left them: its help is the one to read
            raise UsageError(f"unrecognized arguments: {' '.join(unknown)} (see {_help_of([args.subcommand])})")
        return COMMANDS[args.subcommand](args, server_args, console)
    except DrainspecError as exc:
        print(f"drainspec: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("drainspec: interrupted; every process it started has been reaped", file=sys.stderr)
        return 130
    except Exception:
        where = _save_crash()
        print(f"drainspec: internal error (a bug in drainspec); traceback saved to {where}", file=sys.stderr)
        return EXIT_CRASHED
    finally:
        _release_outputs()


def _release_outputs() -> None:
    """Unlock the command's output directories; drop a default one the command never used."""
    from chaos import outdir

    while _claims:
        outdir.release(_claims.pop(), drop_if_unused=True)


def _scenario_file(argv: Sequence[str]) -> tuple[dict[str, Any], Path | None]:
    """The options a scenario file gives the command about to run (`chaos.config`)."""
    if not argv or argv[0] not in CONFIGURABLE:
        return {}, None
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--scenario")
    early.add_argument("--config", type=Path)
    known, _ = early.parse_known_args(argv[1:])
    return config.load_options(known.config, known.scenario)


def _save_crash() -> str:
    """The traceback of a crash, in the run's output directory when there is one, else a temp file."""
    import traceback  # a crash only: a run spawns its server before anything it does not need loads

    text = traceback.format_exc()
    if _claims:
        try:
            return str(_claims[-1].write(CRASH_FILE, text.encode()))
        except DrainspecError:
            pass
    import tempfile

    fd, name = tempfile.mkstemp(prefix="drainspec-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as file:
        file.write(text)
    return name


def command() -> NoReturn:
    """
    The `drainspec` command: `main`, then the exit, without the interpreter's teardown. Every
    process the run started is reaped and every file written by then; what is left is freeing
    objects a process about to end frees anyway: the interpreter's last garbage collection took
    0.1 s of every run, and the rest of its teardown 10 ms more (`bench/overhead.py`).
    """
    code = main()
    with contextlib.suppress(OSError):  # a reader that went away (`drainspec run | head`)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    command()
