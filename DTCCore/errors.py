"""User-facing errors of the engine.

A :class:`DTCError` is a mistake the user can fix (bad file, wrong option, unwritable folder). Its
message is one line that names the problem and the fix; the CLI prints it as ``error: <message>``
and exits with :data:`EXIT_USER_ERROR`, without a traceback. Anything else is a bug.
"""

from __future__ import annotations

from .protocol import EXIT_CANCELLED, EXIT_USER_ERROR  # noqa: F401  (the exit codes live in the protocol)


class DTCError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class CancelledError(DTCError):
    """Training was cancelled; a resumable checkpoint was written first."""
