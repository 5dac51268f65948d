"""
Secrets never reach a report: environment values and header values whose names look secret
(`*KEY*`, `*SECRET*`, `*TOKEN*`, `*PASSWORD*`, `Authorization`, cookies), and the password
inside any URL (`postgresql://user:password@host/db`), are replaced before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE", re.I)
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@\s/]+)(?=@)", re.I)


def is_secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def redact_text(text: str) -> str:
    """A value with every URL password masked."""
    return URL_PASSWORD.sub(lambda match: match["head"] + MASK, text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Secret-looking names keep their name and lose their value; URLs lose their password."""
    return {name: MASK if is_secret_name(name) else redact_text(str(value)) for name, value in env.items()}


def redact_headers(headers: Iterable[str]) -> list[str]:
    """`Name: value` lines, with secret-looking values masked."""
    redacted = []
    for line in headers:
        name, sep, value = str(line).partition(":")
        redacted.append(f"{name}: {MASK}" if sep and is_secret_name(name) else redact_text(str(line)))
    return redacted
