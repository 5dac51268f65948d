"""
A test app modelled on public FastAPI services that keep their data with peewee (sync endpoints,
run in the server's thread pool), not on drainspec's reference app: nothing here imports
drainspec.

- the database (`TODOS_DB`, an SQLite file) is connected in the lifespan, which makes the
  table, and closed at its end;
- `GET /todos?seconds=S` counts the todos, holds its thread S seconds, and counts the done ones;
- `POST /todos/{todo_id}?done_seconds=S` writes the todo, answers, and marks it done S seconds
  later in a BackgroundTask (a sync function: the thread pool again).

Each request and task opens its connection and closes it (`connection_context()`), as peewee's
guide does: peewee keeps one connection per thread, and the lifespan's `close()` closes only the
connection of the thread it runs on.

`TODOS_PER_THREAD=1` is the mistake: the queries rely on peewee's autoconnect, so each pool
thread opens a connection of its own on its first query and nothing ever closes it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import peewee
from fastapi import BackgroundTasks, FastAPI

db = peewee.SqliteDatabase(None)


class Todo(peewee.Model):
    id = peewee.CharField(primary_key=True)
    done = peewee.BooleanField(default=False)

    class Meta:
        database = db


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    db.init(os.environ["TODOS_DB"])
    db.connect()
    db.create_tables([Todo])
    try:
        yield
    finally:
        db.close()


app = FastAPI(lifespan=lifespan)


def connection() -> contextlib.AbstractContextManager[Any]:
    """This thread's connection, opened and closed around the work (none: the mistake's autoconnect)."""
    if os.environ.get("TODOS_PER_THREAD"):
        return contextlib.nullcontext()
    return db.connection_context()


@app.get("/todos")
def todos(seconds: float = 0.0) -> dict[str, int]:
    with connection():
        count = Todo.select().count()
        time.sleep(seconds)
        done = Todo.select().where(Todo.done).count()
    return {"todos": count, "done": done}


def finish(todo_id: str, seconds: float) -> None:
    time.sleep(seconds)
    with connection():
        Todo.update(done=True).where(Todo.id == todo_id).execute()


@app.post("/todos/{todo_id}", status_code=201)
def add(todo_id: str, background: BackgroundTasks, done_seconds: float = 0.5) -> dict[str, str]:
    with connection():
        Todo.insert(id=todo_id).on_conflict_ignore().execute()
    background.add_task(finish, todo_id, done_seconds)
    return {"id": todo_id}
