"""
What a container image runs when its manifest does not say: the ENTRYPOINT, CMD, ENV and
STOPSIGNAL of the Dockerfile it was built from.

Most Deployments leave `command:` out and run the image's own entrypoint, which drainspec cannot
read from a registry offline; the Dockerfile beside the manifest says the same thing. It is read
as Docker builds it: the last stage (or `target`), following `FROM <an earlier stage>` through
the file; exec form (a JSON list) as written, shell form through the stage's `SHELL` (`/bin/sh -c`
by default); an ENTRYPOINT set in a stage drops the CMD it inherited. A stage built on an image
from a registry inherits what that image sets, which is not in the file: its ENTRYPOINT is taken
as none (the official Python images set none) and said so, and its CMD as unknown.

Variables are substituted where Docker substitutes them (ENV, ARG defaults, WORKDIR, COPY and
ADD, STOPSIGNAL, FROM), with the ENV a stage inherited through `FROM <an earlier stage>` and its own
ARGs (an ENV over an ARG of the same name); CMD and ENTRYPOINT are left to the shell, as Docker
does. `dockerfile-parse` splits the file into instructions (continuations, comments, the `escape`
directive) and does the substitution itself (`$NAME`, `${NAME}`; `${NAME:-word}` and
`${NAME:+word}` are resolved here first); the stages are followed here, where its own per-line
environment stops at each `FROM`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from chaos.errors import ManifestError
from chaos.scenario import parse_signal
from chaos.validate import read_text

MAX_DOCKERFILE_BYTES = 1_000_000
DEFAULT_SHELL = ("/bin/sh", "-c")
DOCKERFILE_NAMES = ("Dockerfile", "Containerfile")
HOST_SEARCH_PATHS = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH")  # what a base image sets and an ENV extends


@dataclass(frozen=True)
class ImageConfig:
    """
    What the image sets, as far as its Dockerfile shows. `entrypoint` and `cmd` are None when
    they come from a base image the file does not hold (`base` names it).
    """

    source: str
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str | None = None
    base: str | None = None  # the registry image the final stage is built on
    # (path in the image, path in the build context) of each COPY or ADD from the context
    copies: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"  # the last WORKDIR: where the command runs

    def in_workdir(self, word: str) -> str:
        """A path the command names, as the image resolves it: relative ones from its WORKDIR."""
        return str(PurePosixPath(self.workdir) / word)

    def workdir_copies(self) -> list[tuple[str, str]]:
        """(path below the WORKDIR, path in the build context) of each copy into the WORKDIR."""
        root = PurePosixPath(self.workdir)
        copies = []
        for dest, src in self.copies:
            path = PurePosixPath(dest)
            if path == root or root in path.parents:
                copies.append((str(path.relative_to(root)), src))
        return copies

    def rearranges(self) -> bool:
        """
        The WORKDIR does not hold the build context's files at their own paths (`COPY src .`):
        the command cannot run in the directory drainspec runs in, but in one laid out the same.
        """
        return any(PurePosixPath(rel) != PurePosixPath(src) for rel, src in self.workdir_copies())

    def local_path(self, path: str) -> str | None:
        """
        Where a file the image holds at `path` comes from in the build context (taken to be the
        directory drainspec runs in): the last COPY that put it there, or None.
        """
        for dest, src in reversed(self.copies):
            if path == dest:
                return src
            if path.startswith(dest.rstrip("/") + "/"):
                return str(PurePosixPath(src) / path[len(dest.rstrip("/")) + 1 :])
        return None


@dataclass(frozen=True)
class _Stage:
    name: str | None
    config: ImageConfig
    shell: tuple[str, ...] = DEFAULT_SHELL
    cmd_set_here: bool = False
    workdir: str = "/"
    args: Mapping[str, str] = field(default_factory=dict)  # a stage's ARGs end with it

    def expand(self, text: str) -> str:
        """`text` with the stage's variables substituted and its quotes consumed, as Docker reads a word."""
        return str(self._splitter(text).dequote())

    def split(self, text: str) -> tuple[str, ...]:
        """`text`'s words, substituted and unquoted (a shell-form COPY's sources and destination)."""
        return tuple(self._splitter(text).split())

    def _splitter(self, text: str) -> Any:
        from dockerfile_parse.util import WordSplitter

        return WordSplitter(self.with_defaults(text), args=dict(self.args), envs=dict(self.config.env))

    def with_defaults(self, text: str, under: Mapping[str, str] | None = None) -> str:
        """`text` with its `${NAME:-word}` forms resolved by the stage's variables (over `under`)."""
        return with_defaults(text, {**(under or {}), **self.args, **self.config.env})


_MODIFIED = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):?(?P<how>[-+])(?P<word>[^}]*)\}")


def with_defaults(text: str, variables: Mapping[str, str]) -> str:
    """
    `${NAME:-word}` (NAME, or word when it is unset or empty) and `${NAME:+word}` (word when NAME
    is set) resolved, as Docker does; `dockerfile-parse` substitutes only `$NAME` and `${NAME}`.
    """

    def resolve(match: re.Match[str]) -> str:
        value = variables.get(match["name"], "")
        if match["how"] == "-":
            return value or match["word"]
        return match["word"] if value else ""

    return _MODIFIED.sub(resolve, text)


def dockerfiles_here() -> list[str]:
    """The Dockerfiles in the directory drainspec runs in, or one level below (`container/Containerfile`)."""
    here = [name for name in DOCKERFILE_NAMES if Path(name).is_file()]
    below = sorted(str(path) for name in DOCKERFILE_NAMES for path in Path().glob(f"*/{name}") if path.is_file())
    return here + below


def load_dockerfile(path: Path, *, target: str | None = None) -> ImageConfig:
    """The image config of `path`'s last stage (or the stage named `target`)."""
    text = read_text(path, limit=MAX_DOCKERFILE_BYTES, what="Dockerfile", error=ManifestError)
    return parse_dockerfile(text, source=str(path), target=target)


def parse_dockerfile(text: str, *, source: str = "Dockerfile", target: str | None = None) -> ImageConfig:
    from dockerfile_parse import DockerfileParser  # here: only a replay without `command:` reads one

    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[_Stage] = []
    top = _Stage(None, ImageConfig(source=source))  # what comes before the first FROM: its ARGs
    for instruction in parser.structure:
        kind, value = instruction["instruction"], instruction["value"].strip()
        line = f"{source}:{instruction['startline'] + 1}"
        if kind == "FROM":
            stages.append(_from(top.expand(value), stages, source))
            continue
        if kind == "COMMENT":
            continue
        if kind == "ARG":
            if stages:
                stages[-1] = replace(stages[-1], args={**stages[-1].args, **_args(value, stages[-1], top.args)})
            else:  # a build argument of the FROM lines, and the default of a stage's ARG of that name
                top = replace(top, args={**top.args, **_args(value, top, {})})
            continue
        if not stages:
            raise ManifestError(f"{line}: {kind} before any FROM; is it a Dockerfile?")
        stage = stages[-1]
        config = stage.config
        if kind == "ENTRYPOINT":
            entrypoint = _command(value, stage.shell)
            cmd = config.cmd if stage.cmd_set_here else ()  # an ENTRYPOINT drops the CMD it inherited
            stages[-1] = replace(stage, config=replace(config, entrypoint=entrypoint, cmd=cmd))
        elif kind == "CMD":
            stages[-1] = replace(stage, config=replace(config, cmd=_command(value, stage.shell)), cmd_set_here=True)
        elif kind == "SHELL":
            stages[-1] = replace(stage, shell=_shell(value, line))
        elif kind == "STOPSIGNAL":
            signal = stage.expand(value)
            try:
                parse_signal(signal)
            except ValueError as exc:
                raise ManifestError(f"{line}: STOPSIGNAL: {exc}") from None
            stages[-1] = replace(stage, config=replace(config, stop_signal=signal))
        elif kind == "WORKDIR":
            stages[-1] = replace(stage, workdir=str(PurePosixPath(stage.workdir) / stage.expand(value)))
        elif kind in ("COPY", "ADD") and (copied := _copied(value, stage)):
            stages[-1] = replace(stage, config=replace(config, copies=(*config.copies, *copied)))
        elif kind == "ENV":
            stages[-1] = replace(stage, config=replace(config, env={**config.env, **_env(value, stage, line)}))
    if not stages:
        raise ManifestError(f"{source}: no FROM line; is it a Dockerfile?")
    stage = _target(stages, target, source)
    return replace(stage.config, workdir=stage.workdir)


def _from(value: str, stages: list[_Stage], source: str) -> _Stage:
    """A new stage: `FROM [--platform=...] IMAGE [AS NAME]`, built on an earlier stage or an image."""
    words = [word for word in value.split() if not word.startswith("--")]
    if not words:
        raise ManifestError(f"{source}: a FROM line names no image")
    image = words[0]
    name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    for stage in reversed(stages):
        if stage.name is not None and stage.name.lower() == image.lower():
            return _Stage(name, stage.config, stage.shell, workdir=stage.workdir)
    return _Stage(name, ImageConfig(source=source, base=image))


def _args(value: str, stage: _Stage, defaults: Mapping[str, str]) -> dict[str, str]:
    """
    The names an ARG declares and their values: its own default, else the one an ARG before the
    first FROM gave (`defaults`), else empty (a `--build-arg` is the build's, not the file's).
    """
    from dockerfile_parse.util import WordSplitter

    declared = {}
    for word in WordSplitter(value).split(dequote=False):
        name, has_default, default = word.partition("=")
        declared[name] = stage.expand(default) if has_default else defaults.get(name, "")
    return declared


def _env(value: str, stage: _Stage, line: str) -> dict[str, str]:
    """
    An ENV's pairs (`K=V ...`, or the older `K V`), substituted with what the stage held before it.
    A search path the file extends without setting it first (`ENV PATH="/opt/venv/bin:$PATH"`)
    is its base image's, which the replay's host stands in for: drainspec's own value is taken,
    so that the replayed command still finds the host's tools. Any other variable the file never
    set reads empty, as it would in a build without it: a value from drainspec's environment
    must not travel into the pod's environment and the reports that show it.
    """
    from dockerfile_parse.util import get_key_val_dictionary

    host = {name: os.environ[name] for name in HOST_SEARCH_PATHS if name in os.environ}
    known = {**host, **stage.config.env}
    try:
        pairs = get_key_val_dictionary(
            stage.with_defaults(value, host), env_replace=True, args=dict(stage.args), envs=known
        )
    except (ValueError, IndexError) as exc:
        raise ManifestError(f"{line}: ENV {value!r} cannot be read ({exc}); write it as ENV NAME=value") from None
    return {str(key): str(val) for key, val in pairs.items()}


def _copied(value: str, stage: _Stage) -> tuple[tuple[str, str], ...]:
    """
    The (image path, context path) pairs of a COPY or ADD from the build context: none from
    another stage or image (`--from`), a URL or a heredoc.
    """
    workdir = stage.workdir
    exec_form = _json_words(value)
    words = stage.split(value) if exec_form is None else tuple(stage.expand(word) for word in exec_form)
    flags = [word for word in words if word.startswith("--")]
    paths = [word for word in words if not word.startswith("--")]
    if any(flag.startswith("--from") for flag in flags) or len(paths) < 2:
        return ()
    *sources, dest = paths
    if any("://" in src or src.startswith("<<") for src in sources):
        return ()
    target = PurePosixPath(workdir) / dest
    into_directory = dest.endswith("/") or dest in (".", "..") or len(sources) > 1
    pairs = []
    for src in sources:
        if any(char in src for char in "*?["):
            continue  # a pattern: which files it copied is the build's to know
        if Path(src).is_dir():  # a directory's contents, not the directory itself
            pairs.append((str(target), src))
        elif into_directory:
            pairs.append((str(target / PurePosixPath(src).name), src))
        else:
            pairs.append((str(target), src))
    return tuple(pairs)


def _target(stages: list[_Stage], target: str | None, source: str) -> _Stage:
    if target is None:
        return stages[-1]
    for stage in stages:
        if stage.name is not None and stage.name.lower() == target.lower():
            return stage
    named = ", ".join(stage.name for stage in stages if stage.name) or "none"
    raise ManifestError(f"{source} has no stage {target!r}; its named stages: {named}")


def _command(value: str, shell: tuple[str, ...]) -> tuple[str, ...]:
    """Exec form (a JSON list of strings) as written; anything else is shell form, as Docker reads it."""
    exec_form = _json_words(value)
    if exec_form is not None:
        return exec_form
    return (*shell, value) if value else ()


def _shell(value: str, line: str) -> tuple[str, ...]:
    words = _json_words(value)
    if not words:
        raise ManifestError(f'{line}: SHELL must be a JSON list, e.g. SHELL ["/bin/bash", "-c"]')
    return words


def _json_words(value: str) -> tuple[str, ...] | None:
    try:
        words: Any = json.loads(value)
    except ValueError:
        return None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        return None
    return tuple(words)


def assemble_workdir(image: ImageConfig, into: Path) -> None:
    """
    Lay out in `into` what the image's WORKDIR holds from the build context (the directory
    drainspec runs in), each file a link to the checkout's own, copied in the Dockerfile's order
    so that a later COPY overrides an earlier one. Nothing in the checkout is written.
    """
    for rel, src in image.workdir_copies():
        source = Path(src).resolve()
        if not source.exists():
            continue  # a file the build makes (or a .dockerignore'd one): not the replay's to invent
        target = into / rel
        if source.is_dir():  # a directory's contents, not the directory
            _real_directory(target, into)
            for entry in sorted(source.iterdir()):
                _place(target / entry.name, entry, into)
        else:
            _place(target, source, into)


def _place(path: Path, source: Path, root: Path) -> None:
    _real_directory(path.parent, root)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        if source.is_dir():  # a directory over one already laid out: their contents merge
            for entry in sorted(source.iterdir()):
                _place(path / entry.name, entry, root)
            return
        shutil.rmtree(path)
    path.symlink_to(source)


def _real_directory(directory: Path, root: Path) -> None:
    """Every directory from `root` down to `directory` made real: one laid out as a link is opened up."""
    current = root
    for part in directory.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            linked = current.resolve()
            current.unlink()
            current.mkdir()
            if linked.is_dir():
                for entry in sorted(linked.iterdir()):
                    (current / entry.name).symlink_to(entry)
        elif not current.exists():
            current.mkdir()
