"""
Scale: 1,000 requests in flight at the signal, every one accounted for on both sides (a client
record and a server-side start for each id), then the same with a SIGKILL mid-drain: the journal
must still parse whole and account for every request. Exits 1 if anything is missing.
"""

from __future__ import annotations

import resource
import sys
import time

from common import workdir

from chaos.journal import Kind
from chaos.runner import execute
from chaos.scenario import Scenario

REQUESTS = 1000


def account(faults: tuple[str, ...]) -> bool:
    scenario = Scenario(
        app="app.main:app", requests=REQUESTS, request_seconds=2.0, background=0, grace=30, faults=faults
    )
    with workdir() as path:
        started = time.perf_counter()
        events = execute(scenario, path / "run")
        took = time.perf_counter() - started
    wanted = {f"r{n}" for n in range(1, REQUESTS + 1)}
    client = {str(e.get("id")) for e in events if e.kind == Kind.CLIENT_REQUEST} & wanted
    server = {str(e.get("request")) for e in events if e.kind == Kind.REQUEST_START} & wanted
    outcomes: dict[str, int] = {}
    for event in events:
        if event.kind == Kind.CLIENT_REQUEST:
            outcomes[str(event.get("outcome"))] = outcomes.get(str(event.get("outcome")), 0) + 1
    label = "SIGKILL at +0.5 s" if faults else "SIGTERM, full drain"
    print(
        f"{label:<20} {took:6.2f} s  {len(events):6d} events  client {len(client)}/{REQUESTS}  "
        f"server {len(server)}/{REQUESTS}  outcomes {outcomes}"
    )
    return client == wanted and server == wanted


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    ok = account(()) and account(("sigkill@0.5",))
    print("every request accounted for" if ok else "MISSING requests")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
