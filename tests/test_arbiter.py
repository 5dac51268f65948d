"""What a server's log says of its workers' deaths (`chaos.arbiter`)."""

from __future__ import annotations

from pathlib import Path

from chaos import arbiter
from chaos.target import Orphan

GUNICORN_27 = (
    b"[2026-12-04 13:52:29 +0000] [412] [INFO] Handling signal: term\n"
    b"[2026-12-04 13:52:30 +0000] [412] [ERROR] Worker (pid:415) was sent SIGKILL! Perhaps out of memory?\n"
    b"[2026-12-04 13:52:30 +0000] [412] [ERROR] Worker (pid:415) was sent SIGTERM!\n"
    b"[2026-12-04 13:52:30 +0000] [412] [INFO] Worker (pid:416) was sent SIGTERM!\n"
    b"[2026-12-04 13:52:30 +0000] [412] [INFO] Shutting down: Master\n"
)


def test_the_arbiters_first_account_of_each_worker_below_the_server(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_bytes(GUNICORN_27)
    assert arbiter.deaths_in_log(log, [415, 416]) == [Orphan(415, "SIGKILL", None), Orphan(416, "SIGTERM", None)]


def test_a_pid_never_below_the_server_is_not_accounted_for(tmp_path: Path):
    """The log is the app's output too: it cannot speak for a process drainspec never saw."""
    log = tmp_path / "server.log"
    log.write_bytes(GUNICORN_27)
    assert arbiter.deaths_in_log(log, [416]) == [Orphan(416, "SIGTERM", None)]


def test_only_the_logs_end_is_read(tmp_path: Path):
    log = tmp_path / "server.log"
    log.write_bytes(GUNICORN_27 + b"x" * arbiter.LOG_TAIL_BYTES)
    assert arbiter.deaths_in_log(log, [415, 416]) == []


def test_a_missing_log_tells_nothing(tmp_path: Path):
    assert arbiter.deaths_in_log(tmp_path / "absent.log", [415]) == []
