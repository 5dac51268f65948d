"""
The server registry: each server's argv on the probe, drainspec's own flags gated by the
installed release, too-old or missing servers refused with the pip command, and the launcher,
the manifest reader and the matrix all reading the same table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chaos import matrix, target
from chaos.errors import SetupError
from chaos.k8s import manifest
from chaos.servers import HOST, PROBE_APP, SERVERS, installed_version, own_script, own_script_of, release, tls_option_in

PY = [sys.executable, "-m"]


@pytest.mark.parametrize(
    ("server", "version", "expected"),
    [
        pytest.param("uvicorn", "0.54.0", ["uvicorn", PROBE_APP, "--host", HOST, "--port", "8123"], id="uvicorn"),
        pytest.param(
            "gunicorn",
            "27.0.1",
            [
                "gunicorn",
                PROBE_APP,
                "--bind",
                f"{HOST}:8123",
                "--workers",
                "1",
                "--worker-class",
                "uvicorn_worker.UvicornWorker",
                "--no-control-socket",
            ],
            id="gunicorn",
        ),
        pytest.param(
            "hypercorn", "0.18.0", ["hypercorn", PROBE_APP, "--bind", f"{HOST}:8123", "--workers", "1"], id="hypercorn"
        ),
        pytest.param(
            "granian",
            "2.8.7",
            ["granian", "--interface", "asgi", "--host", HOST, "--port", "8123", "--workers", "1", PROBE_APP],
            id="granian",
        ),
    ],
)
def test_argv_on_the_probe(server, version, expected):
    assert SERVERS[server].argv(8123, version=version) == PY + expected


def test_extra_arguments_come_last_and_workers_are_filled_in():
    argv = SERVERS["hypercorn"].argv(8123, workers=3, extra=("--graceful-timeout", "1"), version="0.18.0")
    assert argv[-4:] == ["--workers", "3", "--graceful-timeout", "1"]


@pytest.mark.parametrize(("workers", "flag"), [(1, False), (2, True)], ids=["one-worker", "two-workers"])
def test_uvicorn_gets_workers_only_when_there_are_several(workers, flag):
    argv = SERVERS["uvicorn"].argv(8123, workers=workers, version="0.54.0")
    assert ("--workers" in argv) is flag


@pytest.mark.parametrize(
    ("version", "has_flag"),
    [
        pytest.param("23.0.0", False, id="23.0"),
        pytest.param("24.1.1", False, id="24.1"),
        pytest.param("25.0.0", False, id="25.0"),
        pytest.param("25.1.0", True, id="25.1-first-with-the-socket"),
        pytest.param("25.3.0", True, id="25.3"),
        pytest.param("27.0.1", True, id="27.0"),
    ],
)
def test_no_control_socket_only_where_gunicorn_accepts_it(version, has_flag):
    argv = SERVERS["gunicorn"].argv(8123, version=version)
    assert ("--no-control-socket" in argv) is has_flag
    assert "uvicorn_worker.UvicornWorker" in argv


@pytest.mark.parametrize(
    ("server", "version", "needed"),
    [
        pytest.param("uvicorn", "0.29.0", "uvicorn >= 0.30", id="uvicorn"),
        pytest.param("gunicorn", "22.0.0", "gunicorn >= 23", id="gunicorn"),
        pytest.param("hypercorn", "0.16.0", "hypercorn >= 0.17", id="hypercorn"),
        pytest.param("granian", "1.7.6", "granian >= 2.0", id="granian"),
    ],
)
def test_a_server_older_than_supported_is_one_line_with_the_fix(server, version, needed):
    with pytest.raises(SetupError) as caught:
        SERVERS[server].argv(8123, version=version)
    message = str(caught.value)
    assert needed in message and version in message and "pip install --upgrade" in message
    assert "\n" not in message


def versions(**found: str):
    """A seam for `ServerSpec.installed`: distribution -> version, None when absent."""
    return lambda distribution: found.get(distribution)


def test_gunicorn_needs_recent_uvicorn_workers():
    spec = SERVERS["gunicorn"]
    assert spec.installed(versions(gunicorn="25.3.0", **{"uvicorn-worker": "0.4.0"})) == "25.3.0"
    with pytest.raises(SetupError, match=r"uvicorn-worker 0\.2\.0 is older .* 'uvicorn-worker>=0\.3'"):
        spec.installed(versions(gunicorn="25.3.0", **{"uvicorn-worker": "0.2.0"}))
    needs = r"gunicorn needs uvicorn-worker; install it: pip install 'uvicorn-worker>=0\.3'"
    with pytest.raises(SetupError, match=needs):
        spec.installed(versions(gunicorn="25.3.0"))


@pytest.mark.parametrize(
    ("worker", "uvicorn", "refused"),
    [
        pytest.param("0.3.0", "0.35.0", False, id="old-worker-old-uvicorn"),
        pytest.param("0.3.0", "0.36.0", True, id="old-worker-new-uvicorn"),
        pytest.param("0.4.0", "0.55.0", False, id="new-worker-new-uvicorn"),
    ],
)
def test_uvicorn_worker_0_3_is_refused_beside_uvicorn_0_36(worker, uvicorn, refused):
    """uvicorn 0.36 replaced the loop setup uvicorn-worker 0.3 calls: its workers would fail to boot."""
    found = versions(gunicorn="23.0.0", uvicorn=uvicorn, **{"uvicorn-worker": worker})
    if not refused:
        assert SERVERS["gunicorn"].installed(found) == "23.0.0"
        return
    with pytest.raises(SetupError) as raised:
        SERVERS["gunicorn"].installed(found)
    assert str(raised.value) == (
        f"uvicorn-worker 0.3.0 does not run on uvicorn {uvicorn} (its workers fail to boot on uvicorn >= 0.36); "
        "upgrade it: pip install --upgrade 'uvicorn-worker>=0.4'"
    )


def test_a_missing_server_names_every_package_to_install():
    with pytest.raises(SetupError, match=r"not installed here; install it: pip install 'gunicorn>=23' 'uvicorn-worker"):
        SERVERS["gunicorn"].installed(versions())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("25.1", (25, 1), id="short"),
        pytest.param("25.1.0", (25, 1), id="trailing-zero"),
        pytest.param("0.30.0rc1", (0, 30), id="pre-release"),
        pytest.param("v2.0.0", (2,), id="v-prefix"),
    ],
)
def test_release_numbers(text, expected):
    assert release(text) == expected


def test_every_installed_server_is_supported():
    """What this environment holds is what drainspec claims to support."""
    for spec in SERVERS.values():
        if installed_version(spec.requires[0].distribution) is None:
            continue  # hypercorn and granian are optional extras
        version = spec.installed()
        assert spec.argv(8123, version=version) == target.server_argv(spec.name, 8123)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        pytest.param("uvicorn", ["--host", HOST, "--port", "4321"], id="uvicorn"),
        pytest.param("gunicorn", ["--bind", f"{HOST}:4321"], id="gunicorn"),
        pytest.param("hypercorn", ["--bind", f"{HOST}:4321"], id="hypercorn"),
        pytest.param("granian", ["--host", HOST, "--port", "4321"], id="granian"),
    ],
)
def test_bind_words_for_a_manifest_command(server, expected):
    assert SERVERS[server].bind_words(4321) == expected


def test_drain_bounds_and_advice():
    bounds = {name: (spec.drain_flag, spec.drain_bound) for name, spec in SERVERS.items()}
    assert bounds == {
        "uvicorn": ("--timeout-graceful-shutdown", None),
        "gunicorn": ("--graceful-timeout", 30.0),
        "hypercorn": ("--graceful-timeout", None),  # its 3 s default is not enforced on Python >= 3.12.1
        "granian": ("--workers-kill-timeout", None),
    }
    assert SERVERS["hypercorn"].drain_default == 3.0
    assert SERVERS["granian"].timeout_advice(0.4) == "bound it: granian --workers-kill-timeout 1"


def test_every_module_reads_the_one_registry():
    assert target.SERVERS is SERVERS
    assert frozenset(SERVERS) == manifest.SERVER_NAMES
    assert matrix.DEFAULT_KNOBS == {
        "uvicorn": ((), ("--timeout-graceful-shutdown", "1")),
        "gunicorn": ((), ("--graceful-timeout", "1")),
        "hypercorn": ((), ("--graceful-timeout", "1")),
        "granian": ((), ("--workers-kill-timeout", "1")),
    }


def test_unknown_server_lists_the_registry():
    with pytest.raises(SetupError, match="choose one of uvicorn, gunicorn, hypercorn, granian"):
        target.server_argv("daphne", 8123)


def test_the_installed_version_is_read_as_importlib_metadata_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the first `NAME-VERSION.dist-info` on the path, names compared as pip compares them."""
    import importlib.metadata

    for spec in SERVERS.values():
        for requirement in spec.requires:
            try:
                expected: str | None = importlib.metadata.version(requirement.distribution)
            except importlib.metadata.PackageNotFoundError:
                expected = None
            assert installed_version(requirement.distribution) == expected
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "My_Server-2.0.1.dist-info").mkdir(parents=True)
    (second / "my.server-1.0.dist-info").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "missing"), str(first), str(second)])
    assert installed_version("my-server") == "2.0.1"
    monkeypatch.setattr(sys, "path", [str(second), str(first)])
    assert installed_version("My.Server") == "1.0"
    assert installed_version("nothing-of-the-kind") is None


LAUNCH = ["-m", "chaos.probe.script"]


@pytest.fixture
def in_a_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding an app's own scripts (`main.py`, `app/main.py`, `run.py`), made the current one."""
    for name in ("main.py", "run.py", "app/main.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("words", "argv", "name"),
    [
        pytest.param(["python", "main.py"], ["python", *LAUNCH, "main.py"], "main.py", id="script"),
        pytest.param(["python3", "-m", "app.main"], ["python3", *LAUNCH, "-m", "app.main"], "app.main", id="module"),
        pytest.param(
            ["/usr/local/bin/python3.12", "-u", "-X", "dev", "app/main.py", "--debug"],
            ["/usr/local/bin/python3.12", "-u", "-X", "dev", *LAUNCH, "app/main.py", "--debug"],
            "app/main.py",
            id="interpreter-options-kept",
        ),
        pytest.param(["python", "-m", "uvicorn", "a:b"], None, None, id="a-server-module"),
        pytest.param(["python", "-m", "http.server", "8000"], None, None, id="not-the-apps-own-module"),
        pytest.param(["python", "elsewhere.py"], None, None, id="no-such-script-here"),
        pytest.param(["python", "-c", "import app"], None, None, id="inline-code"),
        pytest.param(["python"], None, None, id="no-script"),
        pytest.param(["python", "-m"], None, None, id="no-module"),
        pytest.param(["pythonista", "main.py"], None, None, id="not-an-interpreter"),
        pytest.param(["uvicorn", "main:app"], None, None, id="a-server"),
        # The FastAPI CLI hands uvicorn the app it finds, in-process: a script of the CLI's own.
        pytest.param(
            ["fastapi", "run", "app/main.py", "--port", "80"],
            [sys.executable, *LAUNCH, "-m", "fastapi", "run", "app/main.py", "--port", "80"],
            "app/main.py",
            id="fastapi-run",
        ),
        pytest.param(
            ["/usr/local/bin/fastapi", "dev", "--host", "0.0.0.0", "main.py"],
            [sys.executable, *LAUNCH, "-m", "fastapi", "dev", "--host", "0.0.0.0", "main.py"],
            "main.py",
            id="fastapi-dev-options-first",
        ),
        pytest.param(
            ["fastapi", "run", "--entrypoint", "app.main:api"],
            [sys.executable, *LAUNCH, "-m", "fastapi", "run", "--entrypoint", "app.main:api"],
            "app.main:api",
            id="fastapi-entrypoint",
        ),
        pytest.param(
            ["fastapi", "run"], [sys.executable, *LAUNCH, "-m", "fastapi", "run"], "fastapi run", id="fastapi-finds-it"
        ),
        pytest.param(
            ["python3", "-m", "fastapi", "run", "app/main.py"],
            ["python3", *LAUNCH, "-m", "fastapi", "run", "app/main.py"],
            "app/main.py",
            id="fastapi-as-a-module",
        ),
        pytest.param(["fastapi", "deploy"], None, None, id="fastapi-not-serving"),
        pytest.param(["python", "-m", "fastapi", "--version"], None, None, id="fastapi-module-not-serving"),
    ],
)
def test_a_command_that_starts_the_apps_own_script(words, argv, name, in_a_project):
    script = own_script(words)
    assert (script and script.argv, script and script.name) == (argv, name)


@pytest.mark.parametrize(
    ("command", "script"),
    [
        pytest.param("python main.py --debug", "main.py", id="script"),
        pytest.param("python run.py {app} --port {port}", None, id="placeholders-say-where-the-app-goes"),
        pytest.param("python 'main.py", None, id="unbalanced-quote"),
        pytest.param(None, None, id="no-command"),
    ],
)
def test_a_command_is_an_own_script_only_without_placeholders(command, script, in_a_project):
    found = own_script_of(command)
    assert (found and found.name) == script


def test_a_script_command_runs_through_the_launcher(in_a_project):
    argv = target.server_argv("uvicorn", 8123, command="python main.py", extra=["--verbose"])
    assert argv == ["python", *LAUNCH, "main.py", "--verbose"]


@pytest.mark.parametrize(
    ("server", "words"),
    [
        pytest.param("uvicorn", ["--ssl-certfile", "c.pem"], id="uvicorn"),
        pytest.param("gunicorn", ["--keyfile=k.pem"], id="gunicorn"),
        pytest.param("hypercorn", ["--certfile", "c.pem"], id="hypercorn"),
        pytest.param("granian", ["--ssl-certificate", "c.pem"], id="granian"),
    ],
)
def test_each_servers_tls_option_is_known(server, words):
    """A server told to speak HTTPS is refused before it starts: drainspec's requests are plain HTTP."""
    assert tls_option_in(["--workers", "2", *words]) == words[0].partition("=")[0]
    assert words[0].partition("=")[0] in SERVERS[server].tls_flags
    assert tls_option_in(["--workers", "2", "--timeout-keep-alive", "5"]) is None
