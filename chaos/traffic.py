"""
Client load, and what each request saw.

Every request carries an `x-drainspec-id` header, so the probe journals it under the same id
and the report can put the client's view beside the server's. Each request writes one
`client.request` event when it ends, with its send time and one `Outcome`.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from chaos.journal import JournalWriter, Kind
from chaos.probe import REQUEST_ID_HEADER


class Outcome(StrEnum):
    """What one request saw, from the client side."""

    OK = "ok"  # a response below 500 with its whole body
    SERVER_ERROR = "server-error"  # a 5xx response
    REFUSED = "refused"  # the TCP connect was refused: nobody listening
    DISCONNECTED = "disconnected"  # connected, then closed without any response
    RESET = "reset"  # the connection was reset
    TRUNCATED = "truncated"  # the response started, then the body was cut off
    TIMEOUT = "timeout"  # no answer in time (e.g. accepted by the kernel, never served)
    ERROR = "error"  # anything else


@dataclass(frozen=True)
class RequestSpec:
    """One request to make: `METHOD /path?query`, with `{seconds}` and `{id}` filled in."""

    method: str
    path: str

    @classmethod
    def parse(cls, text: str) -> RequestSpec:
        method, _, path = text.strip().rpartition(" ")
        method = method.strip().upper() or "GET"
        if not path.startswith("/"):
            raise ValueError(f"request path {text!r} must start with '/', e.g. 'GET /slow'")
        return cls(method=method, path=path)

    def render(self, *, seconds: float, request_id: str) -> RequestSpec:
        return RequestSpec(self.method, self.path.format(seconds=seconds, id=request_id))


def new_client(timeout: float) -> httpx.AsyncClient:
    """A client that opens a new connection per request, as independent users would."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


async def perform(
    client: httpx.AsyncClient,
    base_url: str,
    spec: RequestSpec,
    request_id: str,
    journal: JournalWriter,
    *,
    role: str,
) -> Outcome:
    """Make one request and journal what the client saw; never raises for a network failure."""
    fields: dict[str, Any] = {"id": request_id, "role": role, "method": spec.method}
    fields["path"] = spec.path
    fields["sent"] = time.monotonic_ns()
    headers = {REQUEST_ID_HEADER.decode(): request_id}
    outcome = Outcome.ERROR
    try:
        async with client.stream(spec.method, base_url + spec.path, headers=headers) as response:
            fields["status"] = response.status_code
            fields["connection_close"] = response.headers.get("connection", "").lower() == "close"
            try:
                body = await response.aread()
            except httpx.TimeoutException:
                outcome = Outcome.TIMEOUT
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                outcome = Outcome.TRUNCATED
                fields["error"] = _describe(exc)
            else:
                fields["bytes"] = len(body)
                outcome = Outcome.OK if response.status_code < 500 else Outcome.SERVER_ERROR
    except httpx.ConnectError as exc:
        outcome = Outcome.REFUSED if _is_refused(exc) else Outcome.ERROR
        fields["error"] = _describe(exc)
    except httpx.TimeoutException as exc:
        outcome = Outcome.TIMEOUT
        fields["error"] = _describe(exc)
    except httpx.RemoteProtocolError as exc:
        outcome = Outcome.DISCONNECTED
        fields["error"] = _describe(exc)
    except httpx.ReadError as exc:
        outcome = Outcome.RESET
        fields["error"] = _describe(exc)
    except httpx.HTTPError as exc:
        fields["error"] = _describe(exc)
    journal.write(Kind.CLIENT_REQUEST, outcome=outcome.value, **fields)
    return outcome


def _is_refused(exc: BaseException) -> bool:
    while exc is not None:
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return True
        if "refused" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
