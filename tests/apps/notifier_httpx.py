"""
A test app modelled on public FastAPI services that call another service through one shared
`httpx.AsyncClient`, not on drainspec's reference app: nothing here imports drainspec.

The "other service" is a tiny HTTP server on 127.0.0.1 that the lifespan starts in a thread
(`/price` answers after `delay` seconds, `/notify` takes a notification).

- the client (`base_url` the upstream) opens in the lifespan and is closed (`aclose`) at its end;
- `GET /quote?seconds=S` asks the upstream for a price that takes S seconds to come;
- `POST /notify/{notice_id}?seconds=S` answers at once and sends the notification S seconds
  later in a BackgroundTask, which the server waits for before the lifespan teardown.

`NOTIFIER_CLOSE_FIRST=1` is the mistake: notifications are sent by `asyncio.create_task`
("so the response is not held up"), and the teardown closes the client first and only then
waits for the pending sends, which then fail on the closed client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, Request


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        time.sleep(float(query.get("delay", ["0"])[0]))
        self._answer({"price": 42})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer({"ok": True})

    def _answer(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    # verify=False: the upstream is plain HTTP, and loading the CA bundle for a TLS context it would
    # never use blocks the loop 100 to 250 ms at startup on a busy machine, which loop-not-blocked
    # rightly fails (seen once with two CPU hogs): not the mistake this app is about.
    upstream_url = f"http://127.0.0.1:{upstream.server_address[1]}"
    client = httpx.AsyncClient(base_url=upstream_url, timeout=10, verify=False)
    app.state.client = client
    app.state.pending = set()
    try:
        yield
    finally:
        if os.environ.get("NOTIFIER_CLOSE_FIRST"):
            await client.aclose()  # the mistake: closed while sends are still pending
            await asyncio.gather(*app.state.pending, return_exceptions=True)
        else:
            await client.aclose()
        await asyncio.to_thread(upstream.shutdown)  # it waits for serve_forever: not on the loop
        upstream.server_close()


app = FastAPI(lifespan=lifespan)


def client_of(request: Request) -> httpx.AsyncClient:
    return request.app.state.client  # type: ignore[no-any-return]


@app.get("/quote")
async def quote(request: Request, seconds: float = 0.0) -> dict[str, Any]:
    response = await client_of(request).get("/price", params={"delay": seconds})
    return {"price": response.json()["price"]}


async def send_notice(client: httpx.AsyncClient, notice_id: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    response = await client.post("/notify", json={"id": notice_id})
    response.raise_for_status()


@app.post("/notify/{notice_id}", status_code=202)
async def notify(notice_id: str, request: Request, background: BackgroundTasks, seconds: float = 0.5) -> dict:
    client = client_of(request)
    if os.environ.get("NOTIFIER_CLOSE_FIRST"):
        task = asyncio.create_task(send_notice(client, notice_id, seconds))
        request.app.state.pending.add(task)
        task.add_done_callback(request.app.state.pending.discard)
    else:
        background.add_task(send_notice, client, notice_id, seconds)
    return {"id": notice_id}
