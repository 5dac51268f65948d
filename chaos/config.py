"""
Scenario files: what CI runs with no flags.

`drainspec run` (and `chaos`, `matrix`) read their options from `drainspec.toml`, or from the
`[tool.drainspec]` table of `pyproject.toml`, in the directory they run in. Keys are the long
options without their dashes (`request-path`, `request_seconds`, `header`, ...); the top table
holds the defaults, each `[tool.drainspec.scenarios.NAME]` table a named scenario on top of
them, chosen with `--scenario NAME`. Flags given on the command line override the file.

    [tool.drainspec]
    app = "myservice.main:app"
    grace = 10
    header = ["Authorization: Bearer ${DRAINSPEC_TOKEN}"]   # ${VAR}: from the environment

    [tool.drainspec.scenarios.signup]
    background-path = "POST /users?welcome_seconds={seconds}"
    json = '{"email": "{id}@example.com"}'
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chaos.errors import UsageError

FILE_NAMES = ("drainspec.toml", "pyproject.toml")
MAX_FILE_BYTES = 1_000_000
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def find_config(directory: Path) -> Path | None:
    """`drainspec.toml`, else a `pyproject.toml` with a `[tool.drainspec]` table, else None."""
    own = directory / "drainspec.toml"
    if own.is_file():
        return own
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file() and "tool" in (table := _read(pyproject)) and "drainspec" in table["tool"]:
        return pyproject
    return None


def load_options(path: Path | None, scenario: str | None) -> tuple[dict[str, Any], Path | None]:
    """
    The options of the chosen scenario, as argparse destinations (`request_path`), and the file
    they came from. No file and no `--scenario`: no options. A `--scenario` that the file does
    not name is a `UsageError` listing the names it does.
    """
    source = path if path is not None else find_config(Path.cwd())
    if source is None:
        if scenario is not None:
            raise UsageError(f"--scenario {scenario}: no drainspec.toml or [tool.drainspec] in pyproject.toml here")
        return {}, None
    if path is not None and not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    table = _read(source)
    if source.name == "pyproject.toml" or "tool" in table:
        table = table.get("tool", {}).get("drainspec", {})
    if not isinstance(table, dict):
        raise UsageError(f"{source}: [tool.drainspec] must be a table")
    named = table.get("scenarios", {})
    if not isinstance(named, dict):
        raise UsageError(f"{source}: 'scenarios' must be a table of named scenarios")
    options = {key: value for key, value in table.items() if key != "scenarios"}
    if scenario is not None:
        if scenario not in named:
            choices = ", ".join(sorted(named)) or "none"
            raise UsageError(f"{source}: no scenario {scenario!r}; its scenarios: {choices}")
        chosen = named[scenario]
        if not isinstance(chosen, dict):
            raise UsageError(f"{source}: scenarios.{scenario} must be a table")
        options.update(chosen)
    return {_dest(key): _expand(value, source, key) for key, value in options.items()}, source


def _read(path: Path) -> dict[str, Any]:
    import tomllib  # here: most runs have no scenario file, and its parser is 4 ms to import

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"{path}: larger than {MAX_FILE_BYTES} bytes; is it a configuration file?")
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None


def _dest(key: str) -> str:
    renamed = {"json": "json_body", "server-args": "server_arg", "faults": "fault", "headers": "header"}
    return renamed.get(key, key).replace("-", "_")


def _expand(value: Any, source: Path, key: str) -> Any:
    """`${VAR}` from the environment (a secret stays out of the file); env tables to KEY=VALUE."""
    if isinstance(value, str):
        return ENV_REFERENCE.sub(lambda match: _environment(match[1], source, key), value)
    if isinstance(value, list):
        return [_expand(item, source, key) for item in value]
    if isinstance(value, dict) and key == "env":
        return [f"{name}={_expand(str(item), source, key)}" for name, item in value.items()]
    if isinstance(value, dict):
        raise UsageError(f"{source}: {key} must be a value or a list, not a table")
    return value


def _environment(name: str, source: Path, key: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise UsageError(f"{source}: {key} refers to ${{{name}}}, which is not set in the environment")
    return value


def apply(parser_defaults: Mapping[str, Any], known: set[str], source: Path | None) -> dict[str, Any]:
    """The options checked against what the command takes; an unknown key names the file."""
    unknown = sorted(set(parser_defaults) - known)
    if unknown:
        raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)}; use the long options of drainspec run")
    return dict(parser_defaults)
