"""The one error type a run raises for problems the user can fix."""

from __future__ import annotations


class RunError(ValueError):
    """An expected failure of a run (bad input, locked folder, diverged loss, ...).

    The command-line tool prints ``str(error)`` and ``hint`` on one line each and exits with
    status 2, without a traceback.

    Args:
        message: what went wrong, naming the file or value concerned.
        hint: what to do about it (optional).
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint
