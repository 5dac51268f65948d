"""
The router journals its own decision for every connection it accepts, and the verdict
`no-refused-while-routed` judges each request by that decision, not by when the client sent it.
"""

from __future__ import annotations

import asyncio

import httpx

from chaos.journal import JournalWriter, Kind, read_journal
from chaos.judge.verdict import Status, VerdictName
from chaos.k8s.router import Router, request_id_of
from tests.journals import HARNESS, Journal, ns

ROUTED = VerdictName.NO_REFUSED_WHILE_ROUTED


def decision(journal: Journal, ms: float, conn: int, what: str, request_id: str, accepted: float) -> Journal:
    journal.add(ms, Kind.ROUTER_DECISION, HARNESS, conn=conn, decision=what, endpoint=None if what == "no-endpoint"
                else "pod", terminating=True, accepted=ns(accepted), client_port=40000 + conn)  # fmt: skip
    return journal.add(ms + 0.1, Kind.ROUTER_REQUEST, HARNESS, conn=conn, id=request_id)


def test_a_request_the_router_refused_after_removal_is_not_blamed_on_the_pod():
    """Sent 1 ms before the removal, accepted 1 ms after it: the router refused it, not the pod."""
    journal = Journal().run_start().pod_deleted(0).router_removed(1000)
    journal.client("s1", 100, sent=90)  # routed to the pod and served
    decision(journal, 91, 1, "routed", "s1", accepted=91)
    journal.client("s2", 1002, "reset", sent=999)
    decision(journal, 1001, 2, "no-endpoint", "s2", accepted=1001)
    verdict = journal.verdict(ROUTED)
    assert verdict.status == Status.PASS, verdict
    assert "1 more refused by the router after it removed the endpoint" in verdict.summary


def test_a_request_routed_to_the_terminating_pod_that_failed_counts():
    """Sent before the deletion's removal... and accepted while routed: the pod's failure, whenever sent."""
    journal = Journal().run_start().pod_deleted(0).router_removed(1000)
    journal.client("s1", 1100, "reset", sent=998)
    decision(journal, 999, 1, "routed", "s1", accepted=999)
    journal.client("s2", 1003, "reset", sent=1001)  # sent after removal, yet routed: still the pod's
    decision(journal, 1002, 2, "reset", "s2", accepted=1002)
    verdict = journal.verdict(ROUTED)
    assert verdict.status == Status.FAIL, verdict
    assert verdict.summary.startswith("2 of 2 requests failed")
    assert {item.request for item in verdict.evidence} == {"s1", "s2"}


def test_requests_accepted_before_the_deletion_are_not_judged_here():
    journal = Journal().run_start().pod_deleted(0).router_removed(1000)
    journal.client("s1", 500, "reset", sent=-10)
    decision(journal, -9, 1, "routed", "s1", accepted=-9)
    assert journal.verdict(ROUTED).status == Status.NOT_APPLICABLE


def test_the_request_id_is_read_from_the_head():
    head = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Drainspec-Id: s14\r\n\r\nbody"
    assert request_id_of(head) == "s14"
    assert request_id_of(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert request_id_of(b"") is None


async def _serve_ok() -> tuple[asyncio.Server, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


def test_the_router_journals_each_decision_with_the_request_it_carried(tmp_path):
    path = tmp_path / "journal.jsonl"

    async def scenario() -> None:
        journal = JournalWriter(path)
        upstream, port = await _serve_ok()
        router = Router(journal, propagation=0.0)
        await router.start()
        router.add("pod", port)
        url = f"http://127.0.0.1:{router.port}/"
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            ok = await client.get(url, headers={"x-drainspec-id": "s1"})
            router.terminate("pod")
            await asyncio.sleep(0.05)  # the removal after a propagation of 0
            try:
                await client.get(url, headers={"x-drainspec-id": "s2"})
                refused = False
            except httpx.HTTPError:
                refused = True
        await router.close()
        upstream.close()
        journal.close()
        assert ok.status_code == 200 and refused

    asyncio.run(scenario())
    events = read_journal(path)
    decisions = {e.get("conn"): e for e in events if e.kind == Kind.ROUTER_DECISION}
    carried = {e.get("id"): e.get("conn") for e in events if e.kind == Kind.ROUTER_REQUEST}
    assert decisions[carried["s1"]].get("decision") == "routed"
    assert decisions[carried["s1"]].get("endpoint") == "pod"
    assert decisions[carried["s2"]].get("decision") == "no-endpoint"
    removed = next(e.t for e in events if e.kind == Kind.ROUTER_REMOVED)
    assert decisions[carried["s2"]].get("accepted") > removed
    assert all(0 < d.get("client_port") < 65536 for d in decisions.values())
