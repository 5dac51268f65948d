"""
A test app modelled on public "RealWorld" FastAPI services (articles behind a token login), not
on drainspec's reference app: nothing here imports drainspec.

- `POST /api/articles` (JSON `{"article": {"title", "body"}}`, `Authorization: Token ...`)
  writes the article, answers 201, and queues a BackgroundTask that notifies the author's
  followers after `notify_seconds` (a row in `notifications`);
- `GET /api/articles/feed?seconds=S` holds a pool connection for S seconds;
- the pool (a SQLAlchemy async engine on SQLite in `DRAINSPEC_RUN_DIR`, or `ARTICLES_DB`) opens
  in the lifespan and is disposed at teardown.

`ARTICLES_FIRE_AND_FORGET=1` is the mistake: the article row is written by a bare
`asyncio.create_task` after the 201, which nothing waits for at shutdown, so a write the
client saw confirmed can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

TOKEN = "secret-token-for-tests"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS articles (slug TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notifications (slug TEXT NOT NULL, follower TEXT NOT NULL)",
)


def database_url() -> str:
    path = os.environ.get("ARTICLES_DB") or os.path.join(os.environ.get("DRAINSPEC_RUN_DIR", "."), "articles.db")
    return f"sqlite+aiosqlite:///{path}"


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(database_url(), pool_size=5)
    async with engine.begin() as conn:
        for statement in SCHEMA:
            await conn.execute(text(statement))
    app.state.engine = engine
    try:
        yield
    finally:
        await engine.dispose()


app = FastAPI(lifespan=lifespan)


class NewArticle(BaseModel):
    title: str
    body: str


class ArticleIn(BaseModel):
    article: NewArticle


def current_user(authorization: str = Header(default="")) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() not in ("token", "bearer") or token != TOKEN:
        raise HTTPException(status_code=401, detail="Unauthorized")
    return "jake"


def engine_of(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


async def notify_followers(engine: AsyncEngine, slug: str, seconds: float) -> None:
    await asyncio.sleep(seconds)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO notifications VALUES (:slug, 'celeb')"), {"slug": slug})


async def insert_article(engine: AsyncEngine, slug: str, article: NewArticle, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO articles VALUES (:slug, :title, :body)"),
            {"slug": slug, "title": article.title, "body": article.body},
        )


_pending: set[asyncio.Task[Any]] = set()


@app.post("/api/articles", status_code=201)
async def create_article(
    payload: ArticleIn,
    background: BackgroundTasks,
    request: Request,
    notify_seconds: float = 0.5,
    user: str = Depends(current_user),
) -> dict[str, Any]:
    engine = engine_of(request)
    slug = payload.article.title.lower().replace(" ", "-")
    if os.environ.get("ARTICLES_FIRE_AND_FORGET"):
        # The mistake: answer first, write later (after a slow moderation step), in a task nobody
        # waits for. The shutdown waits for the request and its BackgroundTask, not for this.
        moderation = 2 * notify_seconds + 1.0
        task = asyncio.create_task(insert_article(engine, slug, payload.article, delay=moderation))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
    else:
        await insert_article(engine, slug, payload.article)
    background.add_task(notify_followers, engine, slug, notify_seconds)
    return {"article": {"slug": slug, "title": payload.article.title, "author": user}}


@app.get("/api/articles/feed")
async def feed(request: Request, seconds: float = 0.0, user: str = Depends(current_user)) -> dict[str, Any]:
    async with engine_of(request).connect() as conn:
        await asyncio.sleep(seconds)
        rows = (await conn.execute(text("SELECT slug, title FROM articles"))).all()
    return {"articles": [{"slug": slug, "title": title} for slug, title in rows], "articlesCount": len(rows)}
