"""
What the supported releases do differently at shutdown, as strict expected failures for `make compat`.

`tests/test_e2e_servers.py` pins what each server does on the newest releases and Python 3.11
(`make test`). Older supported releases, and newer Pythons, do some things differently; drainspec
still runs them and judges them correctly (its verdicts say what happened), but the pinned fact
is not that release's fact. Each difference below was measured on `compat/lowest.txt` and names
the condition under which it holds. The mark is a strict xfail: when a release stops differing,
the test passes, the xfail turns into a failure, and the entry here must go.

Loaded with `-p compat.known_differences` by `compat/run` only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from chaos.servers import at_least, installed_version


def older_than(distribution: str, version: str) -> Callable[[], bool]:
    def check() -> bool:
        found = installed_version(distribution)
        return found is not None and not at_least(found, version)

    return check


def python_at_least(*version: int) -> Callable[[], bool]:
    return lambda: sys.version_info[: len(version)] >= version


@dataclass(frozen=True)
class Difference:
    test: str  # a node id relative to the rootdir
    applies: Callable[[], bool]
    reason: str


SERVERS = "tests/test_e2e_servers.py::"

DIFFERENCES = (
    Difference(
        SERVERS + "test_uvicorn_exit_code_depends_on_the_signal_not_the_drain[INT]",
        older_than("uvicorn", "0.30.3"),
        "uvicorn < 0.30.3 exits 1 on SIGINT after a complete drain (0 from 0.30.3)",
    ),
    Difference(
        SERVERS + "test_uvicorn_http_implementations_differ_only_in_the_close_header[httptools]",
        older_than("uvicorn", "0.53"),
        "uvicorn < 0.53 with httptools sends no `Connection: close` on responses finished during the drain",
    ),
    Difference(
        SERVERS + "test_each_server_as_shipped[granian]",
        older_than("granian", "2.1"),
        "granian 2.0 does not drain: in-flight requests are disconnected at the signal (2.1 drains them)",
    ),
    Difference(
        SERVERS + "test_each_servers_drain_bound[granian-kill-timeout]",
        older_than("granian", "2.1"),
        "granian 2.0 does not drain, so its kill timeout never fires and teardown runs at once",
    ),
    Difference(
        SERVERS + "test_each_servers_drain_bound[hypercorn-graceful-timeout]",
        python_at_least(3, 12, 1),
        "hypercorn's --graceful-timeout is not enforced on Python >= 3.12.1 while a connection is open "
        "(server.wait_closed() waits for it first): the requests complete",
    ),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test whose pinned fact does not hold for the installed releases."""
    for item in items:
        for difference in DIFFERENCES:
            if item.nodeid == difference.test and difference.applies():
                item.add_marker(pytest.mark.xfail(reason=difference.reason, strict=True))
