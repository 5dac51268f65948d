"""
drainspec as a user installs it: the wheel built from the sdist, in a fresh venv with nothing of
this repository on the path, beside a service's own pinned requirements.

drainspec is installed into other people's environments, so its requirements must be what
`chaos/` imports and no more (the reference app's FastAPI, SQLAlchemy and aiosqlite stay out),
with ranges wide enough to resolve next to old pins. The README's CI job is run as written,
steps read from the README itself, so the example cannot drift from what works.

The end-to-end test reaches the package index through pip (its cache makes a second run fast);
`make test-install` runs it alone. The unit tests at the end keep the declared lower bounds,
`compat/lowest.txt` (what `make compat` tests) and `chaos/servers.py` in agreement.
"""

from __future__ import annotations

import email.parser
import os
import re
import shlex
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from chaos.servers import SERVERS
from tests.conftest import ROOT

# The reference app's stack: `pip install drainspec` must pull none of it.
NOT_REQUIRED = {"fastapi", "sqlalchemy", "aiosqlite", "gunicorn", "uvicorn-worker", "hypercorn", "granian"}

# A service's pinned requirements that look like they conflict with a tool built on FastAPI:
# an old FastAPI on pydantic 2.5, SQLAlchemy 1.4 holding aiosqlite below 0.18, gunicorn 23.0
# (no `--no-control-socket`), and drainspec's own requirements at old releases.
REQUIREMENTS = """\
fastapi==0.104.1
pydantic==2.5.*
SQLAlchemy==1.4.52
aiosqlite<0.18
gunicorn==23.0.0
uvicorn-worker==0.3.0
uvicorn==0.30.6
httpx==0.25.2
pytest==7.4.4
psutil==6.0.0
PyYAML==6.0.1
"""

# The service: one slow endpoint and a lifespan, as the README's examples assume (`mypkg.main:app`).
SERVICE = """\
import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/slow")
async def slow(seconds: float = 1.0):
    await asyncio.sleep(seconds)
    return {"slept": seconds}
"""

# No framework at all: what a bare `pip install drainspec` must be able to drive with uvicorn.
PLAIN_APP = """\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""

QUICK = ["--requests", "2", "--request-seconds", "0.5", "--background", "1", "--background-seconds", "0.5"]


class Venv:
    """A fresh venv (no system site-packages) and the environment a user's shell would give it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        # Nothing of this test run leaks in: not this venv, not this repository on the path.
        drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTEST_", "COV_", "DRAINSPEC_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        self.env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(self, argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)

    def pip(self, *args: str, cwd: Path) -> None:
        result = self.run([str(self.bin / "python"), "-m", "pip", "install", "--quiet", *args], cwd)
        assert result.returncode == 0, f"pip install {' '.join(args)} failed:\n{result.stdout}{result.stderr}"

    def installed(self, cwd: Path) -> dict[str, str]:
        result = self.run([str(self.bin / "python"), "-m", "pip", "list", "--format=freeze"], cwd)
        pairs = (line.split("==") for line in result.stdout.splitlines() if "==" in line)
        return {name.lower().replace("_", "-"): version for name, version in pairs}


def build(tmp_path: Path) -> tuple[Path, Path]:
    """The sdist, and the wheel `python -m build` makes from it (so a file missing from the sdist fails)."""
    dist = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (sdist,) = dist.glob("drainspec-*.tar.gz")
    (wheel,) = dist.glob("drainspec-*.whl")
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return sdist, wheel


def unconditional_requirements(wheel: Path) -> set[str]:
    """The names the wheel requires with no extra named: what `pip install drainspec` pulls."""
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(metadata).decode())
        names = {name for name in archive.namelist() if not name.startswith("drainspec-")}
    assert {name.split("/")[0] for name in names} == {"chaos"}, sorted(names)  # no app/, no tests/
    requirements = [Requirement(line) for line in message.get_all("Requires-Dist") or []]
    return {r.name.lower() for r in requirements if r.marker is None or "extra" not in str(r.marker)}


def readme_block(language: str, containing: str) -> str:
    """The README's code block in `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    (block,) = [block for block in blocks if containing in block]
    return block


def ci_job_steps() -> list[str]:
    """The `run:` steps of the README's GitHub Actions job, in order."""
    job = yaml.safe_load(readme_block("yaml", "runs-on"))
    (steps,) = [job["steps"] for job in job["jobs"].values()]
    return [step["run"] for step in steps if "run" in step]


def as_user_would_run(step: str, venv: Venv, wheel: Path) -> list[str]:
    """A README step's argv in the venv; `drainspec` as a pip requirement is the wheel just built."""
    argv = shlex.split(step, comments=True)
    if argv[:2] == ["pip", "install"]:
        return [str(venv.bin / "python"), "-m", "pip", *[str(wheel) if a == "drainspec" else a for a in argv[1:]]]
    assert argv[0] in {"drainspec", "pytest"}, f"a README step this test does not know how to run: {step}"
    return [str(venv.bin / argv[0]), *argv[1:]]


@pytest.mark.e2e
@pytest.mark.install
@pytest.mark.timeout(600)
def test_the_wheel_installs_beside_pinned_requirements_and_runs_as_the_readme_says(tmp_path):
    sdist, wheel = build(tmp_path)
    required = unconditional_requirements(wheel)
    assert not required & NOT_REQUIRED, sorted(required)

    service = tmp_path / "service"
    (service / "mypkg").mkdir(parents=True)
    (service / "mypkg" / "__init__.py").write_text("")
    (service / "mypkg" / "main.py").write_text(SERVICE)
    (service / "plainapp.py").write_text(PLAIN_APP)
    (service / "requirements.txt").write_text(REQUIREMENTS)
    (service / "tests").mkdir()
    (service / "tests" / "test_shutdown.py").write_text(readme_block("python", "def test_shutdown_is_graceful"))
    venv = Venv(tmp_path / "venv")

    # `pip install drainspec` alone: nothing of the reference app, and it runs a bare ASGI app on uvicorn.
    venv.pip(str(wheel), cwd=service)
    installed = venv.installed(service)
    assert not set(installed) & NOT_REQUIRED, sorted(installed)
    plain = venv.run([str(venv.bin / "drainspec"), "run", "--app", "plainapp:app", *QUICK], service, 120)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "graceful shutdown verified" in plain.stdout
    module = venv.run([str(venv.bin / "python"), "-m", "chaos", "--version"], service, 60)
    assert module.returncode == 0 and module.stdout.startswith("drainspec "), module.stdout + module.stderr

    # The README's CI job, step by step, with the service's pins beside drainspec.
    steps = ci_job_steps()
    assert any("--junit" in step for step in steps), steps
    for step in steps:
        result = venv.run(as_user_would_run(step, venv, wheel), service)
        assert result.returncode == 0, f"README step `{step}` failed:\n{result.stdout}{result.stderr}"
    installed = venv.installed(service)
    assert installed["gunicorn"] == "23.0.0" and installed["aiosqlite"].startswith("0.17"), installed
    assert installed["pydantic"].startswith("2.5."), installed
    junits = list(service.glob("*.xml"))
    assert junits, "the README's drainspec step wrote no JUnit file"
    for junit in junits:
        root = ET.parse(junit).getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        assert suite is not None and suite.get("failures") == "0" and int(suite.get("tests", "0")) > 0

    # gunicorn 23.0 (older than `--no-control-socket`) runs the service through drainspec.
    gunicorn = venv.run(
        [str(venv.bin / "drainspec"), "run", "--app", "mypkg.main:app", "--server", "gunicorn", *QUICK],
        service,
        120,
    )
    assert gunicorn.returncode == 0, gunicorn.stdout + gunicorn.stderr
    assert "graceful shutdown verified" in gunicorn.stdout
    assert sdist.stat().st_size > 0


# --- the declared bounds agree ------------------------------------------------------------------


EXTRAS = ("gunicorn", "hypercorn", "granian", "websocket")  # drainspec's own; not `reference`, not `dev`


def declared() -> dict[str, list[Requirement]]:
    """pyproject's requirements by name: the dependencies and the server and websocket extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lines = project["dependencies"] + [
        line for name in ("gunicorn", "hypercorn", "granian", "websocket") for line in extras[name]
    ]
    found: dict[str, list[Requirement]] = {}
    for line in lines:
        requirement = Requirement(line)
        found.setdefault(requirement.name.lower(), []).append(requirement)
    return found


def lowest_pins() -> list[Requirement]:
    text = (ROOT / "compat" / "lowest.txt").read_text()
    return [Requirement(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def lower_bound(requirement: Requirement) -> Version:
    (bound,) = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return bound


def test_compat_pins_exactly_the_declared_lower_bounds():
    """`make compat` tests what pyproject promises: one `==` pin per `>=` bound, per Python."""
    requirements = declared()
    pins = lowest_pins()
    assert {pin.name.lower() for pin in pins} == set(requirements)
    for pin in pins:
        (spec,) = pin.specifier
        matching = [r for r in requirements[pin.name.lower()] if str(r.marker) == str(pin.marker)]
        assert [lower_bound(r) for r in matching] == [Version(spec.version)], f"{pin} vs {matching}"


def test_the_servers_minimums_are_the_declared_ones():
    """The one-line refusal of a too-old server names the same release pip would accept."""
    requirements = declared()
    for spec in SERVERS.values():
        for needed in spec.requires:
            (declared_bound,) = {lower_bound(r) for r in requirements[needed.distribution]}
            assert Version(needed.minimum) == declared_bound, f"{spec.name}: {needed} vs pyproject's {declared_bound}"


def test_the_reference_app_is_not_a_requirement():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {Requirement(line).name.lower() for line in project["dependencies"]}
    assert not names & NOT_REQUIRED, names
