"""Unlabeled videos for pretraining: every video under a folder tree, or the paths in a list file.

Hidden files and folders (names starting with '.') are skipped: they include the temp files of
atomic writes still in progress. The result is sorted by relative path, so it is deterministic.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from videodata.errors import VideoDataError
from videodata.records import VideoRecord, parse_group_clip

VIDEO_EXTENSIONS = frozenset({
    ".avi", ".mp4", ".mkv", ".webm", ".mov", ".flv", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp",
    ".ogv", ".ts", ".mts", ".m2ts", ".vob", ".asf", ".gif"})


def is_video_name(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS and not Path(name).name.startswith(".")


def _record(path: Path, relpath: str) -> VideoRecord:
    group, clip = parse_group_clip(path.name)
    return VideoRecord(str(path), relpath, -1, "", group, clip)


def _scan(root: Path) -> list[VideoRecord]:
    found: list[VideoRecord] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_video_name(name):
                path = Path(dirpath) / name
                found.append(_record(path, path.relative_to(root).as_posix()))
    if not found:
        raise VideoDataError(f"no video files under {root} (looked for "
                             f"{', '.join(sorted(VIDEO_EXTENSIONS))})")
    return found


def _read_list(list_file: Path, missing: str) -> list[VideoRecord]:
    try:
        lines = list_file.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise VideoDataError(f"{list_file}: not a text file list of videos ({exc.reason})") from None
    found: list[VideoRecord] = []
    absent: list[str] = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        # Relative entries are relative to the list's own folder, not to the working directory.
        path = Path(entry) if os.path.isabs(entry) else list_file.parent / entry
        if path.is_file():
            found.append(_record(path, entry))
        else:
            absent.append(entry)
    if absent:
        shown = ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else "")
        if missing == "error":
            raise VideoDataError(f"{list_file}: {len(absent)} listed videos not found (first: {shown}); "
                                 f"pass missing='skip' to use the ones present")
        warnings.warn(f"{list_file}: skipping {len(absent)} listed videos not found ({shown})",
                      stacklevel=3)
    if not found:
        raise VideoDataError(f"{list_file}: lists no existing video")
    return found


def list_videos(root_or_filelist: str | os.PathLike, missing: str = "error") -> list[VideoRecord]:
    """Records (label -1) for a folder tree of videos or a text file with one path per line."""
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    source = Path(root_or_filelist)
    if source.is_dir():
        records = _scan(source)
    elif source.is_file():
        records = _read_list(source, missing)
    else:
        raise VideoDataError(f"{source}: no such folder or file list")
    return sorted(records, key=lambda r: r.relpath)
