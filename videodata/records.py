"""The record of one video and the helpers every labeled set's list reader shares.

`VideoRecord` is what every list reader returns (`videodata.sets`, `videodata.folder`) and what
caches, datasets, manifests and the leakage audit consume; `read_lines` reads a list file with
one clear error; `locate` joins listed relative paths to the folder holding the videos.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from videodata.errors import MissingVideosError, SplitFileError

_NAME = re.compile(r"_g(\d+)_c(\d+)\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class VideoRecord:
    """One video. `label` is 0-based (-1 when unlabeled); `group` is the set's group id (UCF's gXX,
    HMDB51's source movie, ...; see each module of `videodata.sets`), `clip` its clip number (-1 if none)."""
    path: str
    relpath: str
    label: int
    class_name: str
    group: int
    clip: int


def parse_group_clip(name: str) -> tuple[int, int]:
    """(group, clip) from a UCF-style file name `v_<Class>_gXX_cYY.<ext>`, or (-1, -1)."""
    match = _NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)


def read_lines(path: Path) -> list[str]:
    """A split file's lines (UTF-8, BOM and CRLF tolerated); SplitFileError naming a missing or
    non-text file."""
    path = Path(path)
    if not path.is_file():
        raise SplitFileError(path, "split file not found" if path.parent.is_dir()
                             else f"split file not found (folder {path.parent} does not exist)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SplitFileError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    return text.splitlines()  # handles the official CRLF endings


def read_json(path: Path):
    """A JSON list file's content (Something-Something v2's, Diving48's); SplitFileError naming
    the file when it is missing or not JSON."""
    if not path.is_file():
        raise SplitFileError(path, "list file not found" if path.parent.is_dir()
                             else f"list file not found (folder {path.parent} does not exist)")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SplitFileError(path, f"not a JSON file ({exc})") from None


def locate(listed: list[VideoRecord], video_root: str | os.PathLike, list_file: str | os.PathLike,
           missing: str, what: str = "") -> list[VideoRecord]:
    """`listed` records (relative paths) with their full path under `video_root`, in list order.

    missing="error" raises MissingVideosError (count + first names) when listed files are absent;
    missing="skip" drops them with a warning giving the count. `list_file` names the list(s).
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    root = Path(video_root)
    records: list[VideoRecord] = []
    absent: list[str] = []
    for rec in listed:
        full = root.joinpath(*rec.relpath.split("/"))
        if full.is_file():
            records.append(replace(rec, path=str(full)))
        else:
            absent.append(rec.relpath)
    if absent:
        if missing == "error":
            raise MissingVideosError(list_file, root, absent, len(listed))
        warnings.warn(f"skipping {len(absent)} of {len(listed)} {what + ' ' if what else ''}videos listed in "
                      f"{list_file}: not found under {root} (first: {', '.join(absent[:3])})", stacklevel=3)
    return records
