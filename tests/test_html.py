"""
The HTML timeline, on journals of real runs: a lane for every worker, request and background
task, a marker for every shutdown step, what failed verdicts name highlighted, all text escaped,
and nothing loaded from anywhere. Which lanes are flagged is also checked on small hand-written
journals, with no server started. Then the page as a browser draws it: a headless Chromium
screenshot that must not be blank (CI installs Chromium; elsewhere the test skips without it).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from chaos.journal import Kind
from chaos.judge.verdict import Evidence, Fate, Status, Verdict, fate_of
from chaos.outcome import RunResult
from chaos.reports import html
from tests.journals import Journal, graceful
from tests.test_bad_input import drainspec

URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "data", "poster", "srcset", "background"}
SCREENSHOT_SECONDS = 60.0  # Chromium takes about a second; a hang is killed, never waited on
# Tall enough for the lanes below the verdicts: evidence quoting a long run directory (CI's
# pytest-of-root/pytest-N/popen-gwN/...) wraps onto more lines and pushed them off a 900-pixel page.
WINDOW = (1200, 1500)
FAIL_BADGE, WORKER_BAR, OK_GREEN = (0xC6, 0x28, 0x28), (0x4A, 0x6F, 0xA5), (0x2E, 0x9E, 0x4F)


@dataclasses.dataclass
class LaneSeen:
    flagged: bool
    classes: set[str] = dataclasses.field(default_factory=set)
    titles: list[str] = dataclasses.field(default_factory=list)


class Page(HTMLParser):
    """What a reader of the page sees: lanes, markers, verdict rows, and every URL it holds."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.lanes: dict[tuple[str, str], LaneSeen] = {}
        self.markers: list[str] = []
        self.rows: dict[str, str] = {}
        self.evidence: dict[str, list[str]] = {}
        self.urls: list[str] = []
        self._lane: LaneSeen | None = None
        self._row: str | None = None
        self._text: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.urls += [value for name, value in values.items() if name in URL_ATTRIBUTES]
        if tag == "g" and "data-kind" in values:
            self._lane = LaneSeen(flagged=values["data-flagged"] == "true")
            self.lanes[(values["data-kind"], values["data-id"])] = self._lane
        elif tag == "g" and "data-marker" in values:
            self.markers.append(values["data-marker"])
        elif tag == "tr" and "data-verdict" in values:
            self._row = values["data-verdict"]
            self.rows[self._row] = values.get("class", "")
            self.evidence[self._row] = []
        if self._lane is not None and tag in ("rect", "circle"):
            self._lane.classes.update(values.get("class", "").split())
        if tag in ("title", "li"):
            self._text = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._lane is not None and self._text is not None:
            self._lane.titles.append("".join(self._text))
        elif tag == "li" and self._row is not None and self._text is not None:
            self.evidence[self._row].append("".join(self._text))
        if tag in ("title", "li"):
            self._text = None
        elif tag == "g":  # lanes hold no nested group
            self._lane = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def ids(self, kind: str) -> set[str]:
        return {key for lane_kind, key in self.lanes if lane_kind == kind}


def page_of(result: RunResult) -> tuple[str, Page]:
    text = html.render(result.timeline, result.verdicts)
    return text, Page(text)


def assert_self_contained(text: str, page: Page) -> None:
    assert page.urls == [], f"the page links to {page.urls}"
    for needle in ("http://", "https://", "<script", "<link", "<img", "<iframe", "@import", "url("):
        assert needle not in text.lower(), f"the page holds {needle!r}"


# --- the page, on journals of real runs --------------------------------------------------------


@pytest.mark.e2e
def test_a_passing_run_has_a_lane_for_everything_and_loads_nothing(run_scenario):
    result = run_scenario(request_path="GET /slow?seconds={seconds}&note=<i>x</i>")
    assert result.failed == set(), result.explain()
    text, page = page_of(result)
    assert_self_contained(text, page)
    timeline = result.timeline
    assert page.ids("worker") == {str(pid) for pid in timeline.workers}
    assert page.ids("request") == set(timeline.requests)
    assert page.ids("task") == set(timeline.tasks) and len(timeline.tasks) >= 2
    assert not any(lane.flagged for lane in page.lanes.values())
    assert {"signal", "shutdown-received", "pool-closed", "shutdown-complete", "exit"} <= set(page.markers)
    assert "sigkill" not in page.markers
    assert set(page.rows) == {v.name for v in result.verdicts}
    assert "fail" not in page.rows.values()
    assert "<i>x</i>" not in text and "&lt;i&gt;x&lt;/i&gt;" in text  # the request path, escaped
    assert 'class="result pass"' in text


@pytest.mark.e2e
def test_a_sigkilled_run_shows_failed_requests_and_killed_tasks_in_red(run_scenario):
    result = run_scenario(request_seconds=3.0, background_seconds=3.0, grace=1.0)
    assert {"inflight-completed", "within-grace", "teardown-ran"} <= result.failed, result.explain()
    text, page = page_of(result)
    assert_self_contained(text, page)
    assert {"signal", "sigkill", "exit"} <= set(page.markers)
    for request_id, view in result.timeline.requests.items():
        lane = page.lanes[("request", request_id)]
        if view.client_outcome != "ok":
            assert lane.flagged and "c-fail" in lane.classes, request_id
            assert any(str(view.client_outcome) in title for title in lane.titles), lane.titles
    killed = [t for t in result.timeline.tasks.values() if fate_of(result.timeline, t) == Fate.KILLED]
    assert killed, result.explain()
    for task in killed:
        lane = page.lanes[("task", task.id)]
        assert lane.flagged and "f-killed" in lane.classes and "open" in lane.classes
    for verdict in result.verdicts:
        if verdict.failed:
            assert page.rows[verdict.name] == "fail"
            assert page.evidence[verdict.name] == [str(item) for item in verdict.evidence[: html.EVIDENCE_SHOWN]]


@pytest.mark.e2e
def test_the_worker_a_failed_verdict_names_is_flagged(run_scenario):
    result = run_scenario(app="app.variants.exit_skips_teardown:app", grace=2.0)
    assert result.failed == {"teardown-ran", "resources-closed"}, result.explain()
    text, page = page_of(result)
    assert_self_contained(text, page)
    (pid,) = result.timeline.workers
    assert page.lanes[("worker", str(pid))].flagged
    assert "shutdown-complete" not in page.markers
    assert page.rows["teardown-ran"] == "fail"
    assert any("lifespan shutdown never began" in item for item in page.evidence["teardown-ran"])
    assert not any(lane.flagged for (kind, _), lane in page.lanes.items() if kind != "worker")


@pytest.mark.e2e
def test_lanes_beyond_the_cap_are_counted_and_flagged_ones_kept(run_scenario, monkeypatch):
    result = run_scenario(request_seconds=3.0, background_seconds=3.0, grace=1.0)
    monkeypatch.setattr(html, "MAX_LANES", 2)
    text, page = page_of(result)
    drawn = [key for key in page.lanes if key[0] in ("request", "task")]
    total = len(result.timeline.requests) + len(result.timeline.tasks)
    assert len(drawn) == 2 and all(page.lanes[key].flagged for key in drawn)
    hidden = [int(n) for n in re.findall(r"\+(\d+) more not drawn", text)]
    assert sum(hidden) == total - 2, hidden


@pytest.mark.e2e
def test_a_replay_aggregates_the_steady_load_and_marks_the_kubelet_steps(replay_manifest):
    result = replay_manifest(
        "deployment.yaml", propagation=(0.3, 0.3), requests=1, request_seconds=0.3, namespace=False
    )
    timeline, verdicts = result.timeline, result.verdicts
    assert not [v.name for v in verdicts if v.failed]
    text = html.render(timeline, verdicts)
    page = Page(text)
    assert_self_contained(text, page)
    steady = {key for key, view in timeline.requests.items() if view.client and view.client.get("role") == "steady"}
    assert len(steady) >= 5
    assert page.ids("steady") == {"steady"} and not steady & page.ids("request")
    assert page.ids("router") == {"router"}
    kubelet = {"pod-deleted", "prestop-start", "prestop-end", "router-removed", "signal", "shutdown-complete", "exit"}
    assert kubelet <= set(page.markers)
    assert "seconds from the pod&#x27;s deletion" in text


@pytest.mark.e2e
def test_the_cli_writes_the_page_beside_report_json_and_rebuilds_it(tmp_path):
    out = tmp_path / "out"
    args = ["--requests", "1", "--request-seconds", "0.3", "--background", "1", "--background-seconds", "0.3"]
    result, _ = drainspec("run", "--app", "app.main:app", *args, "--grace", "5", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "report.json").exists()
    written = (out / "timeline.html").read_text(encoding="utf-8")
    rebuilt, _ = drainspec("report", str(out / "journal.jsonl"), "--html", str(tmp_path / "again.html"))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == written


# --- which lanes are flagged, on hand-written journals -------------------------------------------


def two_workers() -> Journal:
    """Two workers that drained, each with one request answered and one task completed."""
    journal = Journal().run_start()
    for pid, n in ((7, 1), (8, 2)):
        journal.startup(pid=pid).request(f"r{n}", start=-100, end=100, pid=pid)
        journal.task(f"t{n}", -90, -80, finished=50, request=f"r{n}", pid=pid)
        journal.shutdown(200, complete=210, pid=pid)
    return journal.signal(0, target=7).exit(300)


def flagged(page: Page) -> set[tuple[str, str]]:
    return {key for key, lane in page.lanes.items() if lane.flagged}


def test_lanes_are_flagged_from_the_fields_of_failed_verdicts_evidence_not_their_words():
    timeline = two_workers().timeline()
    named = Evidence("r1 [t1] of worker 7 (pid 7) is only in the words", request="r2", task="t2", worker=8)
    verdicts = [
        Verdict("made-up-failure", Status.FAIL, "r1, [t1], worker 7 and pid 7 in the summary too", (named,)),
        Verdict("made-up-pass", Status.PASS, "notes flag nothing", (Evidence("x", request="r1", task="t1", worker=7),)),
    ]
    assert html.named_by_failures(verdicts) == html.Named(frozenset({"r2"}), frozenset({"t2"}), frozenset({8}))
    text = html.render(timeline, verdicts)
    page = Page(text)
    assert_self_contained(text, page)
    assert page.ids("request") == {"r1", "r2"} and page.ids("task") == {"t1", "t2"} and page.ids("worker") == {"7", "8"}
    assert flagged(page) == {("request", "r2"), ("task", "t2"), ("worker", "8")}
    assert page.evidence["made-up-failure"] == [str(named)]


def test_every_fate_has_its_label_and_its_colour():
    """A fate without a fill rule is drawn black: abandoned tasks were, until this test."""
    for fate in Fate:
        assert fate in html.FATE_LABEL and f".f-{fate.value}" in html.CSS, fate


@pytest.mark.parametrize(
    ("cancelled", "css", "flag"),
    [
        pytest.param(255, "f-stopped", False, id="stopped-by-teardown"),
        pytest.param(270, "f-abandoned", True, id="outlived-teardown"),
    ],
)
def test_a_task_the_app_started_at_startup_has_its_lane(cancelled, css, flag):
    """A queue consumer the lifespan started is drawn beside the request's tasks, red when it outlived teardown."""
    result = RunResult.of(graceful().service("a1", -850, cancelled=cancelled).timeline().events)
    page = Page(html.render(result.timeline, result.verdicts))
    lane = page.lanes[("task", "a1")]
    assert css in lane.classes and lane.flagged is flag
    assert any("consume_jobs [a1] (startup)" in title for title in lane.titles), lane.titles


def test_nothing_is_flagged_when_every_verdict_passed():
    result = RunResult.of(two_workers().timeline().events)
    assert result.failed == set()
    assert flagged(Page(html.render(result.timeline, result.verdicts))) == set()


def test_a_failed_drain_flags_its_worker_and_the_work_it_cut_short():
    journal = (
        Journal()
        .run_start()
        .startup(pid=7)
        .request("r1", start=-100, end=200, pid=7)  # answered: flagged only because the verdict names it
        .request("r9", start=-100, end=-50, pid=7)  # done before the teardown: not flagged
        .signal(0, target=7)
        .shutdown(50, complete=300, pid=7)
        .exit(400)
    )
    result = RunResult.of(journal.timeline().events)
    assert result.failed == {"teardown-after-drain"}
    page = Page(html.render(result.timeline, result.verdicts))
    assert flagged(page) == {("worker", "7"), ("request", "r1")}
    assert page.evidence["teardown-after-drain"] == [
        "worker 7: lifespan shutdown began at +0.050s while still running:",
        "request r1 /slow (ended +0.200s)",
    ]


def test_a_rollout_page_shows_each_deleted_pod_still_routed_and_the_failed_requests():
    rollout = {"pod": "web", "replicas": 2, "max_surge": 1, "max_unavailable": 0, "propagation": 0.2}
    journal = Journal().run_start(rollout=rollout)
    for n, pod in enumerate(("web-old1", "web-old2", "web-new3", "web-new4")):
        journal.add(-900 + n, "pod.started", 1000, target=5000 + n, pod=pod)
        journal.startup(-800 + n, pid=1)
        journal.add(-700 + n, "server.ready", 1000, port=8000 + n, pod=pod)
    for n in range(1, 11):
        journal.client(f"s{n}", -500 + 100 * n, "refused" if n == 4 else "ok", sent=-510 + 100 * n, status=None)
    journal.pod_deleted(0, pod="web-old1").router_removed(200, "web-old1").signal(150, target=5000)
    journal.pod_deleted(300, pod="web-old2").router_removed(500, "web-old2").signal(450, target=5001)
    result = RunResult.of(journal.timeline().events)
    assert result.failed == {"rollout-zero-failed-requests"}
    text = html.render(result.timeline, result.verdicts)
    page = Page(text)
    assert_self_contained(text, page)
    assert "Kubernetes rolling update: pod web, replicas 2" in text
    assert "seconds from the first pod&#x27;s deletion" in text
    router = page.lanes[("router", "router")]
    assert [t for t in router.titles if "still routed to until" in t] == [
        "web-old1 deleted at +0.000s, still routed to until +0.200s",
        "web-old2 deleted at +0.300s, still routed to until +0.500s",
    ]
    assert page.lanes[("steady", "steady")].flagged
    assert page.markers.count("pod-ready") == 4 and page.markers.count("pod-deleted") == 2
    assert page.evidence["rollout-zero-failed-requests"] == ["s4 GET / sent -0.110s: refused"]


# --- the page in a browser ---------------------------------------------------------------------

# Chromium's helper processes outlive the browser by a moment. This wrapper makes itself their
# subreaper, so it reaps every one of them (killing any still there after 5 s) before it exits:
# the screenshot leaves no process and no zombie behind.
SUBREAPER = r"""
import ctypes, os, subprocess, sys, time
import psutil
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
browser = subprocess.Popen(sys.argv[2:])
try:
    code = browser.wait(timeout=float(sys.argv[1]))
except subprocess.TimeoutExpired:
    browser.kill()
    code = 124
deadline = time.monotonic() + 5
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid:
        continue
    if time.monotonic() > deadline:
        for child in psutil.Process().children():
            child.kill()
    time.sleep(0.02)
sys.exit(code)
"""


def chromium() -> str:
    """The browser, or a skip; in CI (CI set) a missing browser is a failure: CI installs it."""
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not on PATH but CI is set: .ci/run must install it (apt-get install chromium)")
        pytest.skip("chromium is not on PATH (apt-get install chromium); the screenshot test needs it")
    return path


def screenshot(browser: str, page: Path, work: Path) -> Path:
    """Chromium draws the page headless to a PNG; bounded in time, every process reaped."""
    shot = work / "shot.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={work / 'profile'}", f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
        page.as_uri(),
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-c", SUBREAPER, str(SCREENSHOT_SECONDS), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=SCREENSHOT_SECONDS + 15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group leader is not reaped yet: its id is ours
        process.communicate(timeout=10)
        pytest.fail(f"chromium did not finish a screenshot in {SCREENSHOT_SECONDS + 15:g}s")
    log = output.decode(errors="replace")[-2000:]
    assert process.returncode == 0, f"chromium exited with {process.returncode}:\n{log}"
    assert shot.exists(), f"chromium wrote no screenshot:\n{log}"
    return shot


def png_pixels(data: bytes) -> tuple[int, int, set[tuple[int, ...]]]:
    """Width, height and the distinct colours of an 8-bit, non-interlaced RGB(A) PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, pos = {}, 8
    idat = bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IDAT":
            idat += body
        else:
            chunks[kind] = body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG: depth {depth}, colour {colour}"
    channels = 3 if colour == 2 else 4
    rows = unfilter(zlib.decompress(bytes(idat)), width * channels, height, channels)
    colours = {tuple(row[i : i + 3]) for row in rows for i in range(0, len(row), channels)}
    return width, height, colours


def unfilter(raw: bytes, stride: int, height: int, bpp: int) -> list[bytes]:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth)."""
    rows, previous, pos = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return rows


@pytest.mark.e2e
def test_chromium_draws_the_page_with_its_failure_highlighted(run_scenario, tmp_path):
    browser = chromium()
    result = run_scenario(app="app.variants.exit_skips_teardown:app", grace=2.0)
    assert result.failed == {"teardown-ran", "resources-closed"}, result.explain()
    page = tmp_path / "timeline.html"
    html.write_html(page, result.timeline, result.verdicts)
    shot = screenshot(browser, page, tmp_path)
    data = shot.read_bytes()
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot is too small to hold the page"
    width, height, colours = png_pixels(data)
    assert (width, height) == WINDOW
    assert len(colours) > 50, f"only {len(colours)} colours: the page looks blank"
    for colour, what in ((FAIL_BADGE, "the FAIL badge"), (WORKER_BAR, "a worker lane"), (OK_GREEN, "a request lane")):
        assert colour in colours, f"{what} (#{bytes(colour).hex()}) is not on the screenshot"


def test_a_coroutine_the_app_never_awaited_is_marked_and_escaped() -> None:
    journal = graceful().add(255, Kind.APP_UNAWAITED, coroutine="Db.<close>", where="app/main.py:9")
    text = html.render(journal.timeline(), journal.verdicts())
    assert Page(text).markers.count("unawaited") == 1
    assert "&lt;close&gt;() never awaited" in text and "<close>" not in text


def test_a_request_that_raised_says_what_and_where_escaped():
    journal = Journal().startup().signal(0)
    journal.request("r1", -100, 50, status=500, outcome="error")
    journal.events[-2].fields.update(error="KeyError: '<sku>'", raised_at="shop.py:9 in buy")  # its request.end
    result = RunResult.of(journal.exit(400).timeline().events)
    text = html.render(result.timeline, result.verdicts)
    page = Page(text)
    titles = page.lanes[("request", "r1")].titles
    assert any("raised KeyError: '<sku>' (at shop.py:9 in buy)" in title for title in titles), titles
    assert "<sku>" not in text  # escaped: the app's text is data, never markup
