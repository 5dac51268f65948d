"""What an image runs, read from its Dockerfile (`chaos.k8s.image`), and how a manifest without `command:` takes it."""

from __future__ import annotations

import re

import pytest

from chaos.errors import ManifestError
from chaos.k8s.image import ImageConfig, assemble_workdir, parse_dockerfile
from chaos.k8s.manifest import parse_manifest, select_container, with_image

UVICORN = '["uvicorn", "app.main:app", "--port", "8000"]'


@pytest.mark.parametrize(
    ("text", "entrypoint", "cmd"),
    [
        pytest.param(
            f"FROM python:3.12\nCMD {UVICORN}\n", None, ("uvicorn", "app.main:app", "--port", "8000"), id="exec"
        ),
        pytest.param(
            "FROM python:3.12\nCMD uvicorn app.main:app --port $PORT\n",
            None,
            ("/bin/sh", "-c", "uvicorn app.main:app --port $PORT"),
            id="shell-form",
        ),
        pytest.param(
            'FROM python:3.12\nSHELL ["/bin/bash", "-euc"]\nENTRYPOINT exec uvicorn app.main:app\n',
            ("/bin/bash", "-euc", "exec uvicorn app.main:app"),
            (),
            id="shell-form-through-SHELL",
        ),
        pytest.param(
            "FROM python:3.12\nCMD [uvicorn, app.main:app]\n",
            None,
            ("/bin/sh", "-c", "[uvicorn, app.main:app]"),
            id="not-JSON-is-shell-form",
        ),
        pytest.param(
            'FROM python:3.12\nCMD ["uvicorn", \\\n     "app.main:app"]\n',
            None,
            ("uvicorn", "app.main:app"),
            id="continued",
        ),
        pytest.param(
            f'FROM python:3.12 AS base\nCMD {UVICORN}\nFROM base\nENTRYPOINT ["tini", "--"]\n',
            ("tini", "--"),
            (),
            id="an-entrypoint-drops-the-inherited-cmd",
        ),
        pytest.param(
            f'FROM python:3.12\nCMD {UVICORN}\nENTRYPOINT ["tini", "--"]\n',
            ("tini", "--"),
            ("uvicorn", "app.main:app", "--port", "8000"),
            id="a-cmd-of-the-same-stage-stays",
        ),
        pytest.param(
            f'FROM python:3.12 AS build\nCMD ["build"]\nFROM python:3.12-slim\nCMD {UVICORN}\n',
            None,
            ("uvicorn", "app.main:app", "--port", "8000"),
            id="the-last-stage",
        ),
        pytest.param(
            f'FROM python:3.12 AS base\nENTRYPOINT ["/entrypoint.sh"]\nFROM base AS final\nCMD {UVICORN}\n',
            ("/entrypoint.sh",),
            ("uvicorn", "app.main:app", "--port", "8000"),
            id="through-an-earlier-stage",
        ),
        pytest.param("FROM python:3.12\nRUN true\n", None, None, id="all-from-the-base-image"),
    ],
)
def test_entrypoint_and_cmd_read_as_docker_builds_them(
    text: str, entrypoint: tuple[str, ...] | None, cmd: tuple[str, ...] | None
) -> None:
    image = parse_dockerfile(text)
    assert (image.entrypoint, image.cmd) == (entrypoint, cmd)


def test_env_stop_signal_and_base_follow_the_stages() -> None:
    image = parse_dockerfile(
        "ARG PY=3.12\nFROM python:${PY}-slim AS base\nENV A=1 B=two\nSTOPSIGNAL SIGINT\n"
        'FROM base AS final\nENV B=three\nCMD ["x"]\n'
    )
    assert image.env == {"A": "1", "B": "three"}
    assert image.stop_signal == "SIGINT"
    assert image.base == "python:3.12-slim"
    assert parse_dockerfile('FROM base:1 AS b\nCMD ["b"]\nFROM other:2\n', target="b").cmd == ("b",)


def test_copies_say_where_an_image_file_comes_from(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    image = parse_dockerfile(
        "FROM python:3.12\nWORKDIR /app\nCOPY . .\nCOPY --chmod=755 container/entrypoint.sh /entrypoint.sh\n"
        "COPY requirements.txt boot.sh ./bin/\nCOPY src /srv\nCOPY --from=build /wheels /wheels\n"
        "ADD https://example.com/x.sh /x.sh\n"
    )
    assert image.local_path("/entrypoint.sh") == "container/entrypoint.sh"
    assert image.local_path("/app/app/main.py") == "app/main.py"
    assert image.local_path("/app/bin/boot.sh") == "boot.sh"
    assert image.local_path("/srv/main.py") == "src/main.py"
    assert image.local_path("/wheels/a.whl") is None
    assert image.local_path("/x.sh") is None


def test_variables_are_substituted_where_docker_substitutes_them(tmp_path, monkeypatch) -> None:
    """The layout of a multi-stage build that names its directories once: `WORKDIR $APP_HOME`."""
    monkeypatch.chdir(tmp_path)
    image = parse_dockerfile(
        "ARG PY=3.12\nARG SIG=SIGINT\nFROM python:${PY}-slim AS base\nARG SIG\nARG OWN=x\n"
        "ENV APP_HOME=/srv/app PORT=8000\nENV URL=http://0.0.0.0:$PORT\nWORKDIR $APP_HOME\nSTOPSIGNAL $SIG\n"
        'FROM base AS runtime\nARG PORT=9\nCOPY app "${APP_HOME}/app"\nCOPY ["boot.sh", "$APP_HOME/bin/"]\n'
        "COPY main.py '$APP_HOME'\nENV FROM_ARG=[$OWN] SEEN=$PORT\nCMD uvicorn app.main:app --port $PORT\n"
    )
    assert image.base == "python:3.12-slim"
    assert image.workdir == "/srv/app"
    assert image.stop_signal == "SIGINT"  # a stage's ARG without a default takes the one before FROM
    assert image.env["URL"] == "http://0.0.0.0:8000"
    assert image.env["FROM_ARG"] == "[]"  # an ARG ends with its stage
    assert image.env["SEEN"] == "8000"  # an ENV over an ARG of the same name
    assert image.local_path("/srv/app/app/main.py") == "app/main.py"
    assert image.local_path("/srv/app/bin/boot.sh") == "boot.sh"
    assert image.local_path("/srv/app/$APP_HOME") == "main.py"  # single quotes keep a word as written
    assert image.cmd == ("/bin/sh", "-c", "uvicorn app.main:app --port $PORT")  # the shell's to expand


def test_a_search_path_the_file_extends_is_the_hosts_and_nothing_else(monkeypatch) -> None:
    """`$PATH` in an ENV is the base image's, which the replay's host stands in for; a secret in
    drainspec's own environment is not carried into the pod's (and the reports)."""
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin")
    monkeypatch.setenv("API_TOKEN", "hunter2")
    image = parse_dockerfile(
        'FROM python:3.12-slim\nENV PATH="/opt/venv/bin:$PATH" GREETING="token=$API_TOKEN" OTHER=${API_TOKEN:-none}\n'
    )
    assert image.env["PATH"] == "/opt/venv/bin:/usr/local/bin:/usr/bin"
    assert image.env["GREETING"] == "token=" and image.env["OTHER"] == "none"


def test_a_default_or_alternative_value_is_resolved(monkeypatch) -> None:
    monkeypatch.delenv("PORT", raising=False)
    image = parse_dockerfile(
        "FROM python:3.12\nARG ROOT\nENV PORT=${PORT:-8000} SET=${PORT:+yes}\nENV AGAIN=${PORT:+yes}\n"
        "WORKDIR ${ROOT:-/srv}/app\n"
    )
    assert image.env == {"PORT": "8000", "SET": "", "AGAIN": "yes"}  # an ENV reads what came before it
    assert image.workdir == "/srv/app"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("RUN true\n", "before any FROM", id="no-from"),
        pytest.param("# nothing\n", "no FROM line", id="empty"),
        pytest.param("FROM python:3.12\nSTOPSIGNAL SIGNOPE\n", "STOPSIGNAL: unknown signal", id="bad-stop-signal"),
        pytest.param("FROM python:3.12\nSHELL /bin/bash\n", "SHELL must be a JSON list", id="bad-shell"),
        pytest.param("FROM python:3.12\nENV A=1 B\n", "ENV 'A=1 B' cannot be read", id="bad-env"),
    ],
)
def test_a_bad_dockerfile_is_a_manifest_error(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_dockerfile(text)


def _container(fields: str) -> tuple:
    pod = parse_manifest(f"kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: web, {fields}}}]}}\n")
    return pod, select_container(pod, None)


IMAGE = ImageConfig(
    source="Dockerfile",
    entrypoint=("/entrypoint.sh",),
    cmd=("uvicorn", "app.main:app"),
    env={"PORT": "8000", "MODE": "image"},
    stop_signal="SIGINT",
)


@pytest.mark.parametrize(
    ("fields", "argv"),
    [
        pytest.param("image: x", ("/entrypoint.sh", "uvicorn", "app.main:app"), id="entrypoint-and-cmd"),
        pytest.param(
            "image: x, args: [gunicorn, app.main:app]", ("/entrypoint.sh", "gunicorn", "app.main:app"), id="args"
        ),
        pytest.param("image: x, command: [hypercorn, app.main:app]", ("hypercorn", "app.main:app"), id="command"),
        pytest.param("image: x, command: [hypercorn], args: [app.main:app]", ("hypercorn", "app.main:app"), id="both"),
    ],
)
def test_the_kubelet_rules_for_command_and_args(fields: str, argv: tuple[str, ...]) -> None:
    pod, container = _container(fields)
    resolved, _ = with_image(pod, container, IMAGE)
    assert resolved.argv == argv


def test_the_image_env_lies_under_the_manifests_and_its_stop_signal_under_lifecycle() -> None:
    pod, container = _container("image: x, env: [{name: MODE, value: manifest}]")
    resolved, _ = with_image(pod, container, IMAGE)
    assert resolved.env == {"PORT": "8000", "MODE": "manifest"}
    assert resolved.signal == "SIGINT"
    pod, container = _container("image: x, lifecycle: {stopSignal: SIGTERM}")
    assert with_image(pod, container, IMAGE)[0].signal == "SIGTERM"
    pod, container = _container("command: [uvicorn, app.main:app]")
    assert with_image(pod, container, None)[0].signal == "TERM"


def test_an_entrypoint_taken_from_a_base_image_is_said() -> None:
    pod, container = _container("image: x")
    resolved, notes = with_image(pod, container, parse_dockerfile(f"FROM python:3.12-slim\nCMD {UVICORN}\n"))
    assert resolved.argv == ("uvicorn", "app.main:app", "--port", "8000")
    assert any("taken as none from its base image python:3.12-slim" in note for note in notes)


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        pytest.param(None, "pass the Dockerfile the image is built from (--dockerfile PATH)", id="no-dockerfile"),
        pytest.param("FROM python:3.12\nRUN true\n", "sets neither ENTRYPOINT nor CMD", id="nothing-in-the-file"),
    ],
)
def test_a_container_without_command_needs_what_its_image_runs(
    dockerfile: str | None, message: str, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pod, container = _container("image: x")
    with pytest.raises(ManifestError, match=re.escape(message)):
        with_image(pod, container, parse_dockerfile(dockerfile) if dockerfile else None)


def test_the_error_names_a_dockerfile_it_sees(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "container").mkdir()
    (tmp_path / "container" / "Containerfile").write_text("FROM python:3.12\n")
    pod, container = _container("image: x")
    with pytest.raises(ManifestError, match=r"--dockerfile container/Containerfile\)"):
        with_image(pod, container, None)


def test_a_sidecar_without_command_does_not_stop_the_replay_of_the_app() -> None:
    pod = parse_manifest(
        "kind: Pod\nspec: {containers: [{name: proxy, image: envoy}, {name: web, command: [uvicorn, app.main:app]}]}\n"
    )
    resolved, notes = with_image(pod, select_container(pod, "web"), None)
    assert resolved.argv == ("uvicorn", "app.main:app") and notes == []


def test_an_image_file_the_command_names_runs_from_the_build_context(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "container").mkdir()
    (tmp_path / "container" / "entrypoint.sh").write_text("#!/bin/sh\nexec uvicorn app.main:app\n")
    image = parse_dockerfile(
        'FROM python:3.12\nCOPY container/entrypoint.sh /entrypoint.sh\nENTRYPOINT ["/entrypoint.sh"]\n'
    )
    pod, container = _container("image: x")
    resolved, notes = with_image(pod, container, image)
    assert resolved.argv == (str(tmp_path / "container" / "entrypoint.sh"),)
    assert "/entrypoint.sh in the image is container/entrypoint.sh here" in notes[-1]


def test_a_relative_path_is_the_workdirs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "start.sh").write_text("#!/bin/sh\nexec uvicorn main:app\n")
    image = parse_dockerfile('FROM python:3.12\nWORKDIR /app\nCOPY scripts/start.sh .\nCMD ["./start.sh"]\n')
    pod, container = _container("image: x")
    assert with_image(pod, container, image)[0].argv == (str(tmp_path / "scripts" / "start.sh"),)


def test_a_workdir_that_rearranges_the_checkout_is_laid_out_with_links(tmp_path, monkeypatch) -> None:
    context, into = tmp_path / "context", tmp_path / "workdir"
    (context / "src" / "pkg").mkdir(parents=True)
    (context / "src" / "app.py").write_text("app = 1\n")
    (context / "src" / "pkg" / "a.py").write_text("")
    (context / "extra").mkdir()
    (context / "extra" / "b.py").write_text("")
    (context / "boot.sh").write_text("")
    into.mkdir()
    monkeypatch.chdir(context)
    image = parse_dockerfile(
        "FROM python:3.12\nWORKDIR /app\nCOPY boot.sh .\nCOPY src .\nCOPY extra pkg/\nCOPY --from=x /w /app/w\n"
    )
    assert image.rearranges()
    assemble_workdir(image, into)
    assert (into / "app.py").resolve() == (context / "src" / "app.py").resolve()
    assert (into / "boot.sh").is_symlink()
    assert not (into / "pkg").is_symlink()  # opened up: a later COPY adds to it
    assert {p.name for p in (into / "pkg").iterdir()} == {"a.py", "b.py"}
    assert not (context / "src" / "pkg" / "b.py").exists()  # nothing in the checkout is written
    assert not parse_dockerfile("FROM python:3.12\nWORKDIR /app\nCOPY . .\nCOPY app app\n").rearranges()


@pytest.mark.parametrize(
    ("dockerfile", "advice"),
    [
        pytest.param(
            'FROM python:3.12\nCMD ["/bin/sh", "-c", "alembic upgrade head && uvicorn app:app"]\n',
            'use the exec form in Dockerfile (CMD ["uvicorn", ...])',
            id="the-dockerfiles-cmd",
        ),
        pytest.param(None, "use the exec form (command: [uvicorn, ...])", id="the-manifests-command"),
    ],
)
def test_a_shell_wrapper_is_told_where_its_exec_form_goes(dockerfile: str | None, advice: str) -> None:
    from chaos.k8s.findings import static_findings

    command = "" if dockerfile else ", command: [sh, -c, 'alembic upgrade head && uvicorn app:app']"
    pod, container = _container(f"image: x{command}")
    resolved, _ = with_image(pod, container, parse_dockerfile(dockerfile) if dockerfile else None)
    found = {f.code: f for f in static_findings(pod, resolved)}
    assert advice in found["shell-wrapper"].recommendation
