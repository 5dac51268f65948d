"""drainspec: graceful-shutdown verification for ASGI services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chaos.probe import record

__all__ = ["record"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`chaos.record` is the probe's, imported on first use: `import chaos.anything` stays light
    (the guardian, the CLI before its server is spawned) and does not load the probe and asyncio."""
    if name == "record":
        from chaos.probe import record

        return record
    raise AttributeError(f"module 'chaos' has no attribute {name!r}")
