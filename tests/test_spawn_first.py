"""
`drainspec run` spawns its server before the rest of drainspec loads (`chaos.runner`): what a user
waits on is the server's own boot, and asyncio, the client, the play, the judge and the reports
load while it runs. Checked on a real run: an audit hook inside the command notes, at the first
process it starts, which of those modules were already loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LOADED_AFTER_THE_SPAWN = (
    "asyncio",
    "psutil",
    "httpx",
    "rich",
    "chaos.play",
    "chaos.traffic",
    "chaos.probe",
    "chaos.outcome",
)

COMMAND_WITH_AN_AUDIT_HOOK = """
import json, sys
watched, path = json.loads(sys.argv[1]), sys.argv[2]
def hook(event, args):
    if event == "subprocess.Popen" and path:
        loaded = [name for name in watched if name in sys.modules]
        with open(path, "w") as seen:
            json.dump({"argv": [str(word) for word in args[1]], "loaded": loaded}, seen)
        globals()["path"] = None
sys.addaudithook(hook)
from chaos.cli import command
sys.argv = ["drainspec", *sys.argv[3:]]
sys.exit(command())
"""


@pytest.mark.e2e
def test_the_server_is_spawned_before_the_rest_of_drainspec_loads(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    args = ["run", "--app", "app.main:app", "--requests", "1", "--request-seconds", "0.2", "--background", "0"]
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_WITH_AN_AUDIT_HOOK, json.dumps(LOADED_AFTER_THE_SPAWN), str(seen), *args]
        + ["--grace", "5", "--quiet", "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    first = json.loads(seen.read_text())
    assert "uvicorn" in " ".join(first["argv"]), first["argv"]  # the first process started is the server
    assert first["loaded"] == [], f"loaded before the server was spawned: {first['loaded']}"


@pytest.mark.e2e
def test_a_bad_request_path_fails_before_anything_is_spawned(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    args = ["run", "--app", "app.main:app", "--request-path", "GET slow", "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-c", COMMAND_WITH_AN_AUDIT_HOOK, "[]", str(seen), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "must start with '/'" in done.stdout + done.stderr
    assert not seen.exists(), "a process was started for a run with bad input"
