"""What an import string names, told by its signature alone (`chaos.probe.shapes`): nothing is called."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from fastapi import FastAPI

from chaos.probe.shapes import is_factory, not_asgi


async def asgi_app(scope: Any, receive: Any, send: Any) -> None: ...


async def any_args(*args: Any) -> None: ...


def create_app() -> FastAPI:
    return FastAPI()


def create_app_with_defaults(debug: bool = False) -> FastAPI:
    return FastAPI(debug=debug)


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    return []


class App:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


class Builder:
    """A class called with no arguments makes the app: a factory too."""


class OddSignature:
    """`inspect.signature` raises TypeError on it: neither check may crash on that."""

    __signature__ = "not a signature"

    def __call__(self, *args: Any) -> None: ...


@pytest.mark.parametrize(
    ("app", "factory"),
    [
        pytest.param(FastAPI(), False, id="fastapi-instance"),
        pytest.param(asgi_app, False, id="async-function"),
        pytest.param(any_args, False, id="async-function-of-any-arguments"),
        pytest.param(App(), False, id="instance-with-async-call"),
        pytest.param(create_app, True, id="factory"),
        pytest.param(create_app_with_defaults, True, id="factory-with-defaults"),
        pytest.param(functools.partial(create_app_with_defaults, debug=True), True, id="partial-factory"),
        pytest.param(Builder, True, id="class"),
        pytest.param(wsgi_app, False, id="wsgi-app"),
        pytest.param(len, False, id="builtin"),
        pytest.param(OddSignature(), False, id="signature-unreadable"),
    ],
)
def test_a_factory_is_told_by_its_signature(app: object, factory: bool) -> None:
    assert is_factory(app) is factory


@pytest.mark.parametrize(
    ("app", "says"),
    [
        pytest.param(FastAPI(), None, id="fastapi-instance"),
        pytest.param(asgi_app, None, id="async-function"),
        pytest.param(any_args, None, id="any-arguments"),
        pytest.param(len, "is not an ASGI app: it takes (obj), not (scope, receive, send)", id="one-argument"),
        pytest.param(
            wsgi_app,
            "is not an ASGI app: it takes (environ, start_response), not (scope, receive, send) (a WSGI app?",
            id="wsgi-app",
        ),
        pytest.param(OddSignature(), None, id="signature-unreadable-left-to-the-server"),
    ],
)
def test_an_app_a_server_cannot_call_is_named_before_it_is_served(app: object, says: str | None) -> None:
    problem = not_asgi(app)
    assert problem is None if says is None else says in str(problem)
