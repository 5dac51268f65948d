"""
Every error drainspec raises on purpose, under one root that `chaos.cli.main` turns into one
line on stderr and exit code 2 (bad input or an environment that cannot run the check).

    DrainspecError
    ├── UsageError        a command-line value that cannot be used
    ├── SetupError        the run cannot start or finish: bad input, a server that never got
    │                     ready, a tool missing from this machine
    ├── ManifestError     a manifest that cannot be read or replayed
    └── JournalError      a journal that is missing, or corrupt before its last line

Anything else that escapes is a bug in drainspec itself (exit 3). Messages say what was wrong,
quote the value, and say what to do next.
"""

from __future__ import annotations

# What each exit code means, the same for every command (`chaos.outcome` decides 0, 1 and 2
# for a run's evidence; `chaos.cli.main` gives 2 for these errors and 3 for a crash).
EXIT_PASSED = 0  # every verdict passed, on complete evidence
EXIT_FAILED = 1  # a verdict failed
EXIT_BAD_INPUT = 2  # bad input, an unusable environment, or incomplete evidence
EXIT_CRASHED = 3  # drainspec itself crashed


class DrainspecError(Exception):
    """Bad input or an unusable environment: one line for the user, exit 2."""

    def __str__(self) -> str:
        # One line, whatever the input quoted in the message holds (a container named "a\nb").
        return one_line(super().__str__())


class UsageError(DrainspecError):
    """A command-line value that cannot be used."""


class SetupError(DrainspecError):
    """The run cannot start or finish: bad input or an environment that cannot run the check."""


class ManifestError(DrainspecError):
    """The manifest cannot be read or replayed; the message says what to change."""


class JournalError(DrainspecError):
    """The journal cannot be read: missing, or corrupt before its last line."""


def exception_line(text: str) -> str:
    """
    The line of a traceback that names the exception: the first after the last frame (frames are
    indented), on one line. The traceback's last line is not it when the message spans lines:
    SQLAlchemy's ends with "(Background on this error at: ...)". Text that is no traceback gives
    its first line; no text at all, "?".
    """
    lines = [line.rstrip() for line in str(text).strip().splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line[:1].isspace()]
    after = lines[frames[-1] + 1 :] if frames else lines
    line = after[0].strip() if after else "?"
    return one_line(line)


def failure_line(text: str) -> str:
    """A failure's message as one line: its exception, and where it was raised when it is a traceback."""
    where = raised_at(text)
    return exception_line(text) + (f" (raised at {where})" if where else "")


def raised_at(text: str) -> str | None:
    """
    Where a traceback's exception was raised, from its last frame: `app/db.py:41 in close`; None
    for text that is no traceback.
    """
    import re  # here: only a failed lifespan's message is read for it

    frames = re.findall(r'^\s*File "([^"]+)", line (\d+), in (.+)$', str(text), flags=re.MULTILINE)
    if not frames:
        return None
    path, line, name = frames[-1]
    return one_line(f"{path}:{line} in {name.strip()}")


def message_line(text: str) -> str:
    """
    A message written for a terminal, as one line: its line breaks and indents become single
    spaces, as a reader would join them ("Form data requires python-multipart. You can install
    it with: pip install python-multipart"), and any other control is shown escaped.
    """
    return one_line(" ".join(str(text).split()))


def capped(text: str, limit: int) -> str:
    """`text` at most `limit` characters long, an ellipsis saying where it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """Text as one line: a value quoted from a file may hold line breaks or controls, shown escaped."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
