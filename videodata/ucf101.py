"""UCF101 split lists: the official `ucfTrainTestlist/` files over a `UCF-101/<Class>/` tree.

Format quirks handled here (FACTS.md, "UCF101"): lines end with CRLF; train lines carry a 1-based
label, test lines none; the label always comes from classInd via the class FOLDER, because one
class's folder and file names disagree in case (`HandstandPushups/v_HandStandPushups_...`).
Membership is "listed in the split file" (and present on disk when `missing="skip"`), which is
exactly what torchvision.datasets.UCF101 selects.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from videodata.errors import MissingVideosError, SplitFileError

SPLITS = (1, 2, 3)
_NAME = re.compile(r"_g(\d+)_c(\d+)\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class VideoRecord:
    """One video. `label` is 0-based (-1 when unlabeled); group/clip are UCF's gXX/cYY (-1 if none)."""
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
    if not path.is_file():
        raise SplitFileError(path, "split file not found" if path.parent.is_dir()
                             else f"split file not found (folder {path.parent} does not exist)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SplitFileError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    return text.splitlines()  # handles the official CRLF endings


def read_class_index(lists_dir: str | os.PathLike) -> list[str]:
    """Class names ordered by their classInd index; position = 0-based label."""
    path = Path(lists_dir) / "classInd.txt"
    names: list[str] = []
    for lineno, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise SplitFileError(path, f"expected '<index> <ClassName>', got {line.strip()!r}", lineno)
        index, name = int(parts[0]), parts[1]
        if index != len(names) + 1:
            raise SplitFileError(path, f"class indices must run 1, 2, 3, ...: expected "
                                       f"{len(names) + 1}, got {index}", lineno)
        if name in names:
            raise SplitFileError(path, f"class {name!r} listed twice", lineno)
        names.append(name)
    if not names:
        raise SplitFileError(path, "no classes listed")
    return names


def split_file(lists_dir: str | os.PathLike, split: int, subset: str) -> Path:
    if split not in SPLITS:
        raise ValueError(f"UCF101 split must be one of {SPLITS}, got {split!r}")
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    return Path(lists_dir) / f"{subset}list{split:02d}.txt"


def read_split(lists_dir: str | os.PathLike, split: int, subset: str = "train") -> list[VideoRecord]:
    """Parse one official split list without touching the videos: records whose `path` is the
    relative path as listed (`load_split` joins it to the video folder)."""
    classes = read_class_index(lists_dir)
    label_of = {name: i for i, name in enumerate(classes)}
    path = split_file(lists_dir, split, subset)
    records: list[VideoRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].lstrip("-").isdigit()):
            raise SplitFileError(path, f"expected '<Class>/<file> [label]', got {line.strip()!r}", lineno)
        relpath = parts[0].replace("\\", "/")
        folder, _, name = relpath.partition("/")
        if not folder or not name or "/" in name:
            raise SplitFileError(path, f"expected '<Class>/<file>', got {parts[0]!r}", lineno)
        if folder not in label_of:
            raise SplitFileError(path, f"class {folder!r} is not in {Path(lists_dir) / 'classInd.txt'}",
                                 lineno)
        label = label_of[folder]
        if len(parts) == 2 and int(parts[1]) - 1 != label:
            raise SplitFileError(path, f"label {parts[1]} disagrees with classInd, which gives "
                                       f"{folder!r} index {label + 1}", lineno)
        if relpath in seen:
            raise SplitFileError(path, f"{relpath!r} is listed twice", lineno)
        seen.add(relpath)
        group, clip = parse_group_clip(name)
        if group < 0:
            raise SplitFileError(path, f"file name {name!r} does not look like v_<Class>_gXX_cYY.<ext>",
                                 lineno)
        records.append(VideoRecord(relpath, relpath, label, folder, group, clip))
    if not records:  # an empty list would give NaN accuracies an hour later
        raise SplitFileError(path, "no videos listed")
    return records


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


def load_split(video_root: str | os.PathLike, lists_dir: str | os.PathLike, split: int,
               subset: str = "train", missing: str = "error") -> list[VideoRecord]:
    """The videos of one side of one official split, in list order, with full paths.

    missing="error" raises MissingVideosError (count + first names) when listed files are absent
    from `video_root`; missing="skip" drops them with a warning giving the count.
    """
    listed = read_split(lists_dir, split, subset)
    return locate(listed, video_root, split_file(lists_dir, split, subset), missing)
