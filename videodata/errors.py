"""Errors raised by the data package. Every message names the file and the problem, so a bad
video surfaces as one readable line (also from inside a DataLoader worker), never as an opaque
FFmpeg or index error mid-training."""
from __future__ import annotations

import os

from runkit.errors import UserError


class VideoDataError(UserError):
    """Base class for every error this package raises about its input data (a user error: the
    command-line entry points print it as one line)."""


class VideoDecodeError(VideoDataError):
    """A video file cannot be opened or decoded (empty, truncated, not a video, no video stream...)."""

    def __init__(self, path: str | os.PathLike | None, reason: str | None = None):
        if reason is None:
            # One preformatted message: how a DataLoader re-raises a worker's exception in the
            # main process (`type(exc)(text with the worker's traceback)`), keeping the type.
            self.path, self.reason = None, str(path)
            super().__init__(self.reason)
            return
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path!r}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions back to the main process: keep (path, reason).
        return (type(self), (self.path, self.reason))


class SplitFileError(VideoDataError):
    """A split list or class index is missing or malformed; names the file and the line number."""

    def __init__(self, path: str | os.PathLike, reason: str | None = None, line: int | None = None):
        if reason is None:  # one preformatted message (DataLoader re-raise), see VideoDecodeError
            self.path, self.reason, self.line = None, str(path), None
            super().__init__(self.reason)
            return
        self.path = os.fspath(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.line))


class MissingVideosError(VideoDataError):
    """Videos named in a split list are absent from the video folder."""

    def __init__(self, list_file: str | os.PathLike, video_root: str | os.PathLike,
                 missing: list[str], total: int):
        self.list_file = os.fspath(list_file)
        self.video_root = os.fspath(video_root)
        self.missing = list(missing)
        self.total = total
        shown = ", ".join(self.missing[:5]) + (", ..." if len(self.missing) > 5 else "")
        super().__init__(
            f"{len(self.missing)} of {total} videos listed in {self.list_file} are missing under "
            f"{self.video_root} (first: {shown}); pass missing='skip' to use the ones present")

    def __reduce__(self):
        return (type(self), (self.list_file, self.video_root, self.missing, self.total))
