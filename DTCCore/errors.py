"""User-facing errors of the engine.

A :class:`DTCError` is a mistake the user can fix (bad file, wrong option, unwritable folder). Its
message is one line that names the problem and the fix; the CLI prints it as ``error: <message>``
and exits with :data:`EXIT_USER_ERROR`, without a traceback. Anything else is a bug.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2  # CLI exit status for a DTCError (argparse uses 2 for usage errors too)
EXIT_CANCELLED = 3  # CLI exit status when a run was cancelled (SIGINT/SIGTERM) after saving a checkpoint


class DTCError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class CancelledError(DTCError):
    """Training was cancelled; a resumable checkpoint was written first."""
