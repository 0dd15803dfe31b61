"""How every command-line entry point reports a user's mistake: one line, exit status 2.

    def main(argv=None) -> int:
        ...
    if __name__ == "__main__":
        sys.exit(runkit.cli.run(main))

A `runkit.errors.UserError` (or argparse's own usage error) ends in `error: <message>` on stderr
and exit status 2, with no traceback; so does an OSError that is about the machine, not the code
(no permission, a read-only file system, a full disk or quota, a file where a folder should
be), naming the file; `--debug` on the command line or `VGANBENCH_DEBUG=1` shows
the traceback too. Anything else is a bug: its traceback is printed as usual.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, Sequence

from runkit.errors import UserError

DEBUG_ENV = "VGANBENCH_DEBUG"
# OSErrors a user fixes (a path, a permission, disk space), reported as one line like a UserError
_MACHINE_ERRNOS = {errno.EACCES: "no permission to write or read",
                   errno.EPERM: "operation not permitted on",
                   errno.EROFS: "read-only file system at",
                   errno.ENOSPC: "no space left on the device holding",
                   errno.EDQUOT: "disk quota exceeded writing",
                   errno.ENOTDIR: "a part of the path is a file, not a folder:"}


def debugging(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv


def one_line(message: str) -> str:
    """A message folded onto one line (multi-line library messages keep their first lines' sense)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def fail(message: str) -> int:
    print(f"error: {one_line(message)}", file=sys.stderr)
    return 2


def run(main: Callable[[], int | None], argv: Sequence[str] | None = None) -> int:
    """Call `main()`; turn a UserError into one `error:` line and exit status 2."""
    try:
        return int(main() or 0)
    except UserError as exc:
        if debugging(argv):
            raise
        return fail(str(exc))
    except OSError as exc:
        if exc.errno not in _MACHINE_ERRNOS or debugging(argv):
            raise
        where = exc.filename if exc.filename is not None else "(no file named)"
        return fail(f"{_MACHINE_ERRNOS[exc.errno]} {where} ({exc.strerror}); what was written "
                    f"before stays, and rerunning resumes")


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are UserErrors (one `error:` line, exit status 2)
    instead of a usage dump; `--help` is unchanged."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see --help)")


def comma_list(kind: type, what: str) -> Callable[[str], tuple]:
    """An argparse type for `1,2,3`-style lists whose error says what was expected."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}") from None
    parse.__name__ = what
    return parse
