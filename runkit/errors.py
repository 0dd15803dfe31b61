"""The one base class for errors a user can fix (a bad path, value, file or config key).

Every command-line entry point (`runkit.cli.run`) prints such an error as one line on stderr,
`error: <message>`, and exits with status 2; any other exception is a bug and keeps its traceback.
Packages derive their own error types from it (VideoDataError, SweepError, ExportError, ...).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; its message names the input and what is expected."""
