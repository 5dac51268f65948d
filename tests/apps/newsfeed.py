"""
A test app modelled on public FastAPI news aggregators that summarise articles with a
scraping library in a background task, not on drainspec's reference app: nothing here imports
drainspec.

- `POST /articles/{id}/summary` answers 202 and queues a BackgroundTask that downloads the
  article with a blocking HTTP call (urllib, as scraping libraries do) from an `async def`: the
  event loop is blocked inside the library, and the app's own line is `download`;
- `GET /feed?seconds=S` answers after S seconds and starts a fire-and-forget cache warm-up that
  raises once the app has begun its teardown (its error is what nobody sees without drainspec).

The "publisher" it downloads from is a tiny HTTP server on 127.0.0.1 started in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request

PUBLISHER_DELAY_SECONDS = 0.6


class Publisher(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(PUBLISHER_DELAY_SECONDS)
        body = b"<html><p>A long article.</p></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    publisher = ThreadingHTTPServer(("127.0.0.1", 0), Publisher)
    thread = threading.Thread(target=publisher.serve_forever, daemon=True)
    thread.start()
    app.state.publisher = f"http://127.0.0.1:{publisher.server_address[1]}"
    app.state.closing = asyncio.Event()
    app.state.warmers = set()
    try:
        yield
    finally:
        app.state.closing.set()
        await asyncio.sleep(0.05)  # closing the cache client: the warm-up task runs meanwhile
        publisher.shutdown()
        publisher.server_close()


app = FastAPI(lifespan=lifespan)


def download(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # blocking, inside the event loop
        return str(response.read().decode())


async def summarize(url: str) -> None:
    html = download(url)
    await asyncio.sleep(0)
    _ = html.split("<p>")


async def warm_cache(closing: asyncio.Event) -> None:
    await closing.wait()
    raise ConnectionError("the cache went away during shutdown")


@app.post("/articles/{article_id}/summary", status_code=202)
async def request_summary(article_id: str, background: BackgroundTasks, request: Request) -> dict[str, str]:
    background.add_task(summarize, f"{request.app.state.publisher}/{article_id}")
    return {"status": "queued"}


@app.get("/feed")
async def feed(request: Request, seconds: float = 0.0) -> dict[str, Any]:
    task = asyncio.create_task(warm_cache(request.app.state.closing))
    request.app.state.warmers.add(task)
    task.add_done_callback(request.app.state.warmers.discard)
    await asyncio.sleep(seconds)
    return {"items": []}
