"""The one base class for errors a user can fix (a bad path, value, file or config key).

Every command-line entry point (`runkit.cli.run`) prints such an error as one line on stderr,
`error: <message>`, and exits with status 2; any other exception is a bug and keeps its traceback.
Packages derive their own error types from it (VideoDataError, SweepError, ExportError, ...).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; its message names the input and what is expected."""


def yaml_problem(exc: Exception) -> str:
    """A YAML parse error as one line: what is wrong and where (`line L, column C`), no traceback."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
