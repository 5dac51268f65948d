"""
A replay runs a manifest's container on this machine: whatever the command binds, and wherever
a probe or hook sends a request, happens here. Kubernetes puts the pod behind its own network
namespace; a replay has only 127.0.0.1. So:

    binds      after `manifest.localize` has bound the server to 127.0.0.1, `keep_loopback`
               rewrites what would still listen on every interface (`-b0.0.0.0:8000` written
               without a space, `0.0.0.0` or `::` as a word, `python -m http.server`, which
               binds every interface by default). What it cannot see is caught once the pod
               listens (`chaos.target.check_loopback_only`), and the replay stops there.
    requests   readiness, steady-load and preStop `httpGet` paths always go to the pod on
               127.0.0.1 (`pod_url`): the path is checked and put into the URL as a path, so
               `@192.0.2.2:9999/x` is a strange path on loopback, never another host.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import httpx

from chaos.errors import ManifestError
from chaos.k8s.manifest import SERVER_NAMES, SHELLS, HttpGetHook
from chaos.k8s.plan import Replay
from chaos.servers import HOST
from chaos.validate import validate_http_path

ANY_ADDRESS_WORD = re.compile(r"^(?P<option>-[^=\s]*=)?(?:0\.0\.0\.0|::|\[::\])(?P<port>:\d+)?$")
"""A word that binds every interface: an address alone, with a port, or as an option's value."""
ATTACHED_BIND = re.compile(r"^-b(?P<address>\S*[:.]\S*)$")
"""gunicorn's and hypercorn's `-b` with its value attached (`-b0.0.0.0:8000`): localize misses it."""
SCRIPT_ATTACHED_BIND = re.compile(r"(?<!\S)-b(?=\S*[:.])\S+")
SCRIPT_ANY_ADDRESS = re.compile(r"(?<![\w.:\[])(?:0\.0\.0\.0|\[::\])(?=:\d|\s|$|['\"])")


def keep_loopback(argv: Sequence[str]) -> list[str]:
    """
    The localized argv with every all-interfaces bind turned into 127.0.0.1: a replay must
    never listen on the network. Only what binds is rewritten; the rest stays as written.
    """
    words = list(argv)
    script_at = _script_index(words)
    if script_at is not None:
        words[script_at] = _keep_loopback_script(words[script_at])
        return words
    server = any(Path(word).name in SERVER_NAMES or word in SERVER_NAMES for word in words)
    out: list[str] = []
    for word in words:
        if server and ATTACHED_BIND.match(word):
            continue  # the server's own bind words (127.0.0.1) come from localize
        out.append(_loopback_word(word))
    if _runs_http_server(out) and not any(word in ("--bind", "-b") or word.startswith("--bind=") for word in out):
        out += ["--bind", HOST]  # http.server listens on every interface unless told
    return out


def _loopback_word(word: str) -> str:
    """`0.0.0.0`, `::`, `[::]:8000` or `--host=0.0.0.0` as 127.0.0.1 (with the same port, if any)."""
    match = ANY_ADDRESS_WORD.match(word)
    if match is None:
        return word
    return f"{match['option'] or ''}{HOST}{match['port'] or ''}"


def _keep_loopback_script(script: str) -> str:
    if any(name in script for name in SERVER_NAMES):
        script = SCRIPT_ATTACHED_BIND.sub("", script)
    return SCRIPT_ANY_ADDRESS.sub(HOST, script)


def _script_index(words: Sequence[str]) -> int | None:
    """Where a `sh -c SCRIPT` (after an init, if any) keeps its script."""
    for n, word in enumerate(words):
        if Path(word).name in SHELLS:
            rest = words[n + 1 :]
            for m, flag in enumerate(rest):
                if flag.startswith("-") and "c" in flag.lstrip("-") and m + 1 < len(rest):
                    return n + 1 + m + 1
            return None
    return None


def _runs_http_server(words: Sequence[str]) -> bool:
    return any(word == "-m" and n + 1 < len(words) and words[n + 1] == "http.server" for n, word in enumerate(words))


def pod_path(path: str | None, *, where: str) -> str:
    """
    A manifest path the way the kubelet reads it (a missing leading `/` is added, as Go's
    url.URL does), checked (`chaos.validate.validate_http_path`): a `ManifestError` otherwise.
    """
    text = path or "/"
    if not text.startswith("/"):
        text = "/" + text
    try:
        validate_http_path(text, where=where)
    except ValueError as exc:
        raise ManifestError(f"{exc}; fix it in the manifest") from None
    return text


def pod_url(port: int, path: str) -> httpx.URL:
    """`http://127.0.0.1:PORT/path`, built as a URL with a path, never by joining strings."""
    ascii_path = "".join(char if ord(char) < 0x80 else quote(char) for char in path)
    url = httpx.URL(scheme="http", host=HOST, port=port, raw_path=ascii_path.encode("ascii"))
    if url.host != HOST or (url.port or 80) != port:  # pragma: no cover - httpx keeps them; the promise
        raise ManifestError(f"the path {path!r} would leave 127.0.0.1:{port}; fix it in the manifest")
    return url


def checked_paths(plan: Replay) -> str:
    """
    Every path the replay will request, checked before anything starts (`loopback.pod_path`):
    the preStop `httpGet` path, and the steady-load path (the readiness probe's unless given).
    Returns the steady-load path, as the kubelet would send it.
    """
    hook = plan.container.prestop
    if isinstance(hook, HttpGetHook):
        pod_path(hook.path, where="lifecycle.preStop.httpGet.path")
    where = "--steady-path" if plan.options.steady_path else "readinessProbe.httpGet.path"
    return pod_path(plan.steady_path, where=where)
