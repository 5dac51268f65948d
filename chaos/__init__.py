"""drainspec: graceful-shutdown verification for ASGI services."""

from chaos.probe import record

__all__ = ["record"]
__version__ = "0.1.0"
