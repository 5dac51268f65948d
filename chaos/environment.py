"""
What a run tells the probe inside each server, through the server's environment: the names both
sides read, in one table.

Apart from `chaos.probe`, which loads asyncio: a run fills these in before its server is
spawned, and spawns it before the rest of drainspec loads (`chaos.runner`).
"""

from __future__ import annotations

JOURNAL_ENV = "DRAINSPEC_JOURNAL"  # the run's journal; each server process appends to a segment beside it
APP_ENV = "DRAINSPEC_APP"  # the import string of the app `chaos.probe.asgi` wraps
PORT_ENV = "DRAINSPEC_PORT"  # where an app's own script must listen (`chaos.probe.script`)
SCRIPT_MAIN_ENV = "DRAINSPEC_SCRIPT_MAIN"  # the script a spawned child re-runs (`chaos.probe.spawned`)
STALL_ENV = "DRAINSPEC_STALL_MS"  # how long the event loop may stall before the watchdog journals it
TEARDOWN_DELAY_ENV = "DRAINSPEC_TEARDOWN_DELAY"  # the `teardown-delay` fault: seconds added to the lifespan shutdown
INSTRUMENT_ENV = "DRAINSPEC_INSTRUMENT"  # "0": no resource instrumentation (`chaos.probe.resources`)
