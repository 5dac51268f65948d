"""
The ingress proxy's parts that need no proxy running: its defaults and overrides, the config it
generates, and how its logs are read into the journal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.errors import UsageError
from chaos.journal import Kind
from chaos.k8s.ingress import NGINX_DEFAULTS, haproxy_config, nginx_config, parse_options, read_nginx_logs


def test_defaults_are_those_of_ingress_nginx() -> None:
    options = parse_options("nginx", [])
    assert options["upstream-keepalive-connections"] == "320"
    assert options["upstream-keepalive-timeout"] == "60"
    assert options["upstream-keepalive-requests"] == "10000"
    assert options["proxy-next-upstream"] == "error timeout"


def test_an_option_overrides_its_default_and_only_known_keys_are_taken() -> None:
    options = parse_options("nginx", ["upstream-keepalive-timeout=5"])
    assert options["upstream-keepalive-timeout"] == "5"
    with pytest.raises(UsageError, match="upstream-keepalive-timeout"):
        parse_options("nginx", ["no-such-key=1"])
    with pytest.raises(UsageError, match="may hold"):
        parse_options("nginx", ["proxy-next-upstream=error; evil"])
    with pytest.raises(UsageError, match="needs --ingress"):
        parse_options("builtin", ["retries=1"])


def test_the_nginx_config_has_the_pool_the_retries_and_loopback_only(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, 8080, [9001, 9002], NGINX_DEFAULTS)
    assert "listen 127.0.0.1:8080;" in text
    assert "server 127.0.0.1:9001 max_fails=0;" in text and "server 127.0.0.1:9002 max_fails=0;" in text
    assert "keepalive 320;" in text and "keepalive_timeout 60s;" in text and "keepalive_requests 10000;" in text
    assert "proxy_next_upstream error timeout;" in text
    assert 'proxy_set_header Connection "";' in text  # upstream keep-alive needs it
    assert str(tmp_path / "access.log") in text


def test_without_endpoints_nginx_answers_503_as_the_default_backend(tmp_path: Path) -> None:
    text = nginx_config(tmp_path, 8080, [], NGINX_DEFAULTS)
    assert "return 503;" in text and "upstream pods" not in text


def test_the_haproxy_config_binds_loopback(tmp_path: Path) -> None:
    text = haproxy_config(tmp_path, 8080, [9001], parse_options("haproxy", []))
    assert "bind 127.0.0.1:8080" in text and "server pod9001 127.0.0.1:9001" in text
    assert "timeout connect 5s" in text and "timeout server 50s" in text


ERROR = (
    '2026/11/25 13:49:35 [error] 16282#16282: *{conn} {text}, client: 127.0.0.1, server: , request: "GET /readyz '
    'HTTP/1.1", upstream: "http://127.0.0.1:{port}/readyz", host: "127.0.0.1:53643"'
)


def _access(**fields: str) -> str:
    base = {
        "msec": "1000.250",
        "id": "s1",
        "request": "GET /readyz HTTP/1.1",
        "status": "200",
        "upstream_status": "200",
        "upstream_addr": "127.0.0.1:9001",
        "upstream_connect_time": "0.000",
        "connection": "7",
        "connection_requests": "1",
    }
    return json.dumps({**base, **fields})


def test_logs_name_the_pod_the_status_and_the_error_of_each_attempt(tmp_path: Path) -> None:
    (tmp_path / "error.log").write_text(
        "\n".join(
            [
                "2026/11/25 13:49:35 [notice] 1#1: start worker processes",
                ERROR.format(
                    conn=7, text="connect() failed (111: Connection refused) while connecting to upstream", port=9001
                ),
                ERROR.format(
                    conn=8,
                    text="upstream prematurely closed connection while reading response header from upstream",
                    port=9001,
                ),
            ]
        )
        + "\n"
    )
    (tmp_path / "access.log").write_text(
        "\n".join(
            [
                _access(
                    id="s1",
                    status="200",
                    upstream_status="502, 200",
                    upstream_addr="127.0.0.1:9001, 127.0.0.1:9002",
                    upstream_connect_time="-, 0.000",
                ),
                _access(id="s2", status="502", upstream_status="502", connection="8"),
                _access(
                    id="s3",
                    status="503",
                    upstream_status="",
                    upstream_addr="",
                    upstream_connect_time="",
                    connection="9",
                ),
                "not json",
            ]
        )
        + "\n"
    )
    names = {"127.0.0.1:9001": "web-old1", "127.0.0.1:9002": "web-new1"}
    events = read_nginx_logs(tmp_path, names, wall_offset_ns=0, pid=42)
    assert [e.kind for e in events] == [Kind.PROXY_REQUEST] * 3
    retried, failed, unrouted = events
    assert [a["pod"] for a in retried.get("attempts")] == ["web-old1", "web-new1"]
    assert "Connection refused" in retried.get("attempts")[0]["error"]
    assert "error" not in retried.get("attempts")[1]
    assert failed.get("status") == 502 and "prematurely closed" in failed.get("attempts")[0]["error"]
    assert unrouted.get("attempts") == [] and unrouted.get("status") == 503
    assert retried.t == 1000_250_000_000


def test_logs_that_are_missing_give_no_events(tmp_path: Path) -> None:
    assert read_nginx_logs(tmp_path, {}, wall_offset_ns=0, pid=1) == []
