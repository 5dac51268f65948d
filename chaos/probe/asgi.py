"""
The import string every server is launched on: `chaos.probe.asgi:app`, the app named by
`DRAINSPEC_APP` wrapped in the probe (`chaos.probe.loader`).
"""

from __future__ import annotations

from chaos.probe.loader import wrap_from_environment

app = wrap_from_environment()
