"""`python -m chaos`: the `drainspec` command, for environments whose scripts directory is not on PATH."""

import sys

from chaos.cli import main

sys.exit(main())
