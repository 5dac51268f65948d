"""
drainspec must never harm what it touches: the output directory it is pointed at, files behind
symbolic links, a second run sharing a directory. None of these tests starts a server.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chaos import outdir
from chaos.cli import main
from chaos.errors import SetupError
from chaos.lifecycle import JOURNAL_FILE, prepare_run_dir
from tests.conftest import ROOT

JOURNAL = (
    '{"t": 1, "pid": 2, "kind": "run.start", "scenario": {"app": "a:b"}}\n'
    '{"t": 2, "pid": 2, "kind": "signal.sent", "signal": "SIGTERM", "target": 3}\n'
    '{"t": 3, "pid": 2, "kind": "server.exited", "returncode": 0, "exit_code": 0, "killed": false}\n'
)


def run_refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """`drainspec run` in-process: it must stop at the output directory, before any server starts."""
    code = main(["run", "--app", "app.main:app", "--requests", "1", "--background", "0", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drainspec: error: "), err
    return lines[0]


# --- 1: --out takes over nothing it did not make ------------------------------------------------


def test_a_directory_with_user_files_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "d"
    (out / "data").mkdir(parents=True)
    (out / "data" / "keep").write_text("x")
    line = run_refused(capsys, "--out", str(out))
    assert "did not write" in line and "new or empty directory" in line
    assert (out / "data" / "keep").read_text() == "x"
    assert sorted(p.name for p in out.iterdir()) == ["data"]


def test_out_dot_never_empties_the_working_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.db").write_text("precious")
    (tmp_path / "journal.jsonl").write_text("mine")
    monkeypatch.chdir(tmp_path)
    run_refused(capsys, "--out", ".")
    assert (tmp_path / "data" / "mine.db").read_text() == "precious"
    assert (tmp_path / "journal.jsonl").read_text() == "mine"


def test_a_symlink_as_out_is_refused_and_its_target_untouched(tmp_path, capsys):
    target = tmp_path / "system"
    target.mkdir(mode=0o755)
    target.chmod(0o755)
    (tmp_path / "link").symlink_to(target)
    line = run_refused(capsys, "--out", str(tmp_path / "link"))
    assert "symbolic link" in line
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert list(target.iterdir()) == []


def test_a_file_as_out_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert "not a directory" in run_refused(capsys, "--out", str(tmp_path / "f"))


def test_an_empty_directory_is_adopted_and_marked_private(tmp_path):
    out = tmp_path / "empty"
    out.mkdir(mode=0o755)
    path = prepare_run_dir(out)
    assert (path / outdir.MARKER).is_file()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert (path / "data").is_dir()


def test_its_own_directory_is_emptied_of_the_previous_run_without_following_links(tmp_path):
    out = prepare_run_dir(tmp_path / "out")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    (out / JOURNAL_FILE).symlink_to(victim / "keep")
    (out / "data" / "inside").symlink_to(victim)
    (out / "server.log").write_text("old")
    prepare_run_dir(out)
    assert (victim / "keep").read_text() == "x"
    assert not (out / JOURNAL_FILE).exists() and not (out / "server.log").exists()
    assert list((out / "data").iterdir()) == []


def test_the_journal_is_created_0600_and_never_through_a_link(tmp_path):
    from chaos.journal import JournalWriter

    directory = outdir.claim(tmp_path / "out")
    try:
        (directory.path / "planted").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(FileExistsError):
            directory.create("planted")
        writer = JournalWriter(directory.path / JOURNAL_FILE, fd=directory.create(JOURNAL_FILE))
        writer.write("x")
        writer.close()
        assert stat.S_IMODE((directory.path / JOURNAL_FILE).stat().st_mode) == 0o600
        assert not (tmp_path / "elsewhere").exists()
    finally:
        outdir.release(directory)


# --- 8: one run per directory ---------------------------------------------------------------------

HOLDER = """
import sys
from chaos import outdir
directory = outdir.claim(sys.argv[1])
print("claimed", flush=True)
sys.stdin.read()
"""


def test_a_second_run_on_a_locked_directory_gets_a_clear_error(tmp_path, capsys):
    out = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
        line = run_refused(capsys, "--out", str(out))
        assert f"another drainspec run (pid {holder.pid}) is using {out}" in line
        with pytest.raises(SetupError, match="another drainspec run"):
            prepare_run_dir(out)
    finally:
        holder.communicate("", timeout=10)
    prepare_run_dir(out)  # free again once the first run is over


def test_claims_in_one_process_nest_and_unlock_at_the_last_release(tmp_path):
    first = outdir.claim(tmp_path / "out")
    second = outdir.claim(tmp_path / "out")
    assert first is second and first.users == 2
    outdir.release(second)
    assert first.users == 1
    outdir.release(first)
    with outdir.claimed(tmp_path / "out") as again:
        assert again is not first


# --- the default output: one directory per run ----------------------------------------------------


def test_runs_by_default_never_share_a_directory_and_latest_follows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = outdir.new_run_directory("run")
    second = outdir.new_run_directory("run")
    try:
        assert first.path != second.path
        assert first.path.parent == second.path.parent == tmp_path / outdir.DEFAULT_ROOT
        assert first.path.name.endswith("-run") and second.path.name.startswith(time.strftime("%Y%m%d"))
        latest = tmp_path / outdir.DEFAULT_ROOT / outdir.LATEST
        assert latest.is_symlink() and latest.resolve() == second.path.resolve()
    finally:
        outdir.release(first)
        outdir.release(second)


def test_a_default_directory_of_a_refused_command_is_not_left_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_refused(capsys, "--signal", "BOGUS", "--command", "no-such-server-here {port} {app}")
    assert list((tmp_path / outdir.DEFAULT_ROOT).iterdir()) == []


def test_a_latest_that_is_not_a_link_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / outdir.DEFAULT_ROOT / outdir.LATEST).mkdir(parents=True)
    with outdir.claimed(outdir.new_run_directory("run").path) as directory:
        outdir.release(directory)  # the claim new_run_directory made
    assert (tmp_path / outdir.DEFAULT_ROOT / outdir.LATEST).is_dir()


# --- report paths: never through a link --------------------------------------------------------


@pytest.mark.parametrize("option", ["--json", "--junit", "--html"])
def test_report_never_writes_through_a_symlink(tmp_path, capsys, option):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(JOURNAL)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "report").symlink_to(victim)
    code = main(["report", str(journal), option, str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "symbolic link" in err, err
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("option", ["--json", "--junit", "--html"])
def test_report_into_a_missing_directory_creates_it(tmp_path, capsys, option):
    journal = tmp_path / "journal.jsonl"
    journal.write_text(JOURNAL)
    target = tmp_path / "new" / "dir" / "file"
    code = main(["report", str(journal), option, str(target)])
    assert code in (0, 1, 2), capsys.readouterr()
    assert target.is_file() and stat.S_IMODE(target.stat().st_mode) == 0o600
    if option == "--json":
        assert json.loads(target.read_text())["schema"].startswith("drainspec.report/")


def test_a_junit_path_that_is_a_link_is_refused_before_the_run(tmp_path, capsys):
    (tmp_path / "junit.xml").symlink_to(tmp_path / "victim")
    line = run_refused(capsys, "--out", str(tmp_path / "out"), "--junit", str(tmp_path / "junit.xml"))
    assert "symbolic link" in line
    assert not (tmp_path / "victim").exists()


def test_a_crash_is_saved_in_the_claimed_directory(tmp_path, capsys, monkeypatch):
    import chaos.runner

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(chaos.runner, "execute", boom)
    code = main(["run", "--app", "app.main:app", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 3 and str(tmp_path / "out" / "drainspec-crash.txt") in err
    saved = tmp_path / "out" / "drainspec-crash.txt"
    assert "RuntimeError: a bug" in saved.read_text()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert os.stat(tmp_path / "out").st_mode & 0o077 == 0


# --- 2: no live markup in any report -------------------------------------------------------------

MARKUP = [
    "<script>alert(1)</script>",
    '"onload=alert(1) x="',
    "'><img src=x onerror=alert(2)>",
    "[/bold]",
    "[bold red]x[/]",
    "&amp;<!--",
    "]]></failure><x>",
]


def markup_journal(path: Path, *, replay: bool) -> None:
    """A journal whose every free-text field holds markup, as an app under test could write it."""
    from chaos.journal import Kind
    from chaos.scenario import Scenario
    from tests.journals import HARNESS, Journal

    evil = " ".join(MARKUP)
    scenario = Scenario(
        app=f"{evil}:app", server=MARKUP[3], command=MARKUP[1], request_path=f"GET /{MARKUP[0]}", integrity=evil
    )
    journal = Journal().run_start(
        scenario=scenario, **({"replay": {"pod": evil, "container": MARKUP[2]}} if replay else {})
    )
    journal.startup()
    journal.request(f"r1{MARKUP[2]}", start=-100, end=None, client="reset", path=f"/{evil}", method=MARKUP[1])
    journal.request(MARKUP[0], start=-90, end=50, path=f"/{MARKUP[4]}", status=500, client="server-error")
    journal.task(MARKUP[1], -80, -70, failed=evil, finished=100, name=evil, request=MARKUP[0])
    journal.add(10, Kind.LOOP_STALL, stalled_ms=400.0, frame=evil, stack=MARKUP)
    journal.add(20, Kind.POOL_CLOSED, pool=evil)
    journal.add(30, Kind.POOL_USE_AFTER_CLOSE, pool=evil, use=evil)
    journal.add(40, Kind.FAULT_INJECTED, HARNESS, fault=evil)
    journal.add(-50, Kind.STATIC_FINDING, HARNESS, severity=MARKUP[0], code=MARKUP[3], number=1, message=evil,
                recommendation=evil)  # fmt: skip
    if replay:
        journal.pod_deleted(-10, pod=evil)
        journal.add(-5, Kind.ROUTER_TERMINATING, HARNESS, endpoint=evil, propagation=1.0)
        journal.client(f"s1{MARKUP[0]}", 30, "reset", sent=5, path=f"/{evil}")
        journal.add(60, Kind.ROUTER_REMOVED, HARNESS, endpoint=evil)
        journal.add(45, Kind.ROUTER_UPSTREAM_FAILED, HARNESS, endpoint=evil, error=evil)
    journal.signal(0, comm=evil)
    journal.shutdown(200, failed=evil)
    journal.exit(300, returncode=-9, killed=True)
    journal.integrity(310, problems=MARKUP, check=evil)
    journal.add(305, Kind.PROCESS_ESCAPED, HARNESS, target=99999, command=evil, found=MARKUP[0])
    path.write_text("".join(event.to_json() + "\n" for event in sorted(journal.events, key=lambda e: e.t)))


class _Page:
    """What an HTML parser finds: every tag and attribute name, and the text outside tags."""

    def __init__(self, text: str) -> None:
        from html.parser import HTMLParser

        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        page = self

        class Parser(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                page.tags.add(tag)
                page.attributes.update(name for name, _ in attrs)

        Parser().feed(text)


@pytest.mark.parametrize("replay", [False, True], ids=["run", "replay"])
def test_markup_in_a_journal_is_inert_in_every_report(tmp_path, capsys, replay):
    journal = tmp_path / "journal.jsonl"
    markup_journal(journal, replay=replay)
    reports = {name: tmp_path / name for name in ("report.json", "junit.xml", "timeline.html")}
    code = main(
        ["report", str(journal), "--json", str(reports["report.json"]), "--junit", str(reports["junit.xml"]),
         "--html", str(reports["timeline.html"])]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1, err  # judged (the run failed), never a crash
    assert "Traceback" not in out + err
    assert "[/bold]" in out and "<script>alert(1)</script>" in out  # shown as text by the console

    page = _Page(reports["timeline.html"].read_text())
    assert "script" not in page.tags and "img" not in page.tags and "x" not in page.tags
    assert not {name for name in page.attributes if name.startswith("on")}, page.attributes
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "span", "b", "table", "thead",
               "tbody", "tr", "th", "td", "ul", "li", "details", "summary", "div", "svg", "rect", "g", "text",
               "line", "circle"}  # fmt: skip
    assert page.tags <= allowed, page.tags - allowed
    html_text = reports["timeline.html"].read_text()
    assert "&lt;script&gt;" in html_text and "<script>" not in html_text

    report = json.loads(reports["report.json"].read_text())
    assert MARKUP[0] in json.dumps(report)  # the data survives, as data

    import xml.etree.ElementTree as ET

    suite = ET.parse(reports["junit.xml"]).getroot()
    assert {case.get("name") for case in suite.iter("testcase")}
    assert not list(suite.iter("x")) and not list(suite.iter("script"))


def test_scenario_fields_of_the_wrong_type_never_reach_the_page_unescaped(tmp_path, capsys):
    """The app can journal its own run.start: `requests` as a string is refused, and escaped anyway."""
    from chaos.journal import Event, Kind
    from chaos.judge.timeline import Timeline
    from chaos.reports.html import render
    from chaos.scenario import Scenario

    script = "<script>alert(1)</script>"
    journal = tmp_path / "journal.jsonl"
    start = {"t": 1, "pid": 2, "kind": "run.start", "scenario": {"app": "a:b", "requests": script}}
    journal.write_text(json.dumps(start) + "\n" + JOURNAL.split("\n", 1)[1])
    code = main(["report", str(journal), "--html", str(tmp_path / "t.html")])
    err = capsys.readouterr().err
    assert code == 2 and '"requests" must be an integer' in err, err
    assert not (tmp_path / "t.html").exists()

    scenario = Scenario(app="a:b", requests=script, grace=script)  # type: ignore[arg-type]
    events = [Event(1, 2, Kind.RUN_START, {"scenario": scenario.to_dict()})]
    page = render(Timeline(events=events, scenario=scenario), [])
    assert script not in page and "&lt;script&gt;" in page


def test_the_server_log_line_an_error_quotes_has_no_url_password(tmp_path):
    from chaos.target import last_log_line

    log = tmp_path / "server.log"
    log.write_text("starting\nOSError: cannot connect to postgresql://app:hunter2@db:5432/app\n\n")
    assert last_log_line(log) == "OSError: cannot connect to postgresql://app:***@db:5432/app"
