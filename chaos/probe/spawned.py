"""
The main module of each process an app's own script spawns (`multiprocessing`'s spawn: uvicorn's
workers and its reloader's server, granian's workers), in place of the script.

Python re-runs the parent's main module in every spawned child, as `__mp_main__`, before
anything else, so that what the parent pickled by reference resolves there. For an app's own
script that means the app's imports, and the engines and clients they create, run before the
child loads the probe, unseen. `chaos.probe.script` names this module as the children's main
instead (and the script in `DRAINSPEC_SCRIPT_MAIN`): the probe's hooks go in first, then the
script runs as Python would have run it, into this module, whose namespace is then the
children's `__main__`. What the re-run opens and the child never uses (an engine the script's
own module creates, made again beside the app module's) is journaled as such (`main_rerun`) and
not judged.
"""

from __future__ import annotations

import os
import runpy

from chaos.environment import SCRIPT_MAIN_ENV
from chaos.probe import resources
from chaos.probe.loader import prepare

prepare()
_how, _, _main = os.environ.get(SCRIPT_MAIN_ENV, "").partition(":")
resources.rerunning_main = True  # an engine the script's own module makes is made again, unused
try:
    if _how == "path":
        globals().update(runpy.run_path(_main, run_name="__mp_main__"))
    elif _how == "name":
        globals().update(runpy.run_module(_main, run_name="__mp_main__"))
finally:
    resources.rerunning_main = False
