"""HMDB51 split files: the official `<class>_test_split<k>.txt` files over a `<video_root>/<class>/` tree.

Official layout: 51 class folders of `.avi` clips, and one folder of split files, one per class and
fold k = 1, 2, 3, each line `<video file name> <id>` with id 1 = train, 2 = test, 0 = unused
(lines may end with a space; files may or may not end with a newline; LF or CRLF both parse).

Membership and labels follow torchvision.datasets.HMDB51 (torchvision 0.29, `_select_fold`):
a video is on side `subset` of fold k when a `*_test_split<k>.txt` line names it with id 1 (train)
or 2 (test), and its label is the class's index in sorted class-name order. On the official layout
(every class has a folder and three split files) both give the same videos and labels. They part
only off that layout, where this module is stricter or more stable:
- classes come from the split-file names, not from the folders on disk, so labels do not shift
  when a class folder is missing or a stray folder sits under the video root;
- a line names `<class>/<file>` (the class of its split file), not "this basename anywhere";
- a malformed line is a `SplitFileError` naming file and line (torchvision crashes on a blank
  line, silently ignores ids other than 1 and 2, and only looks at `.avi` files; here blank lines
  are skipped and any video extension of `videodata.folder.VIDEO_EXTENSIONS` is accepted).
Records come in torchvision's order: by label, then by file name.

Groups: HMDB51 names read `<source>_<class>_<tags>_<n>.avi` (e.g.
`April_09_brush_hair_u_nm_np1_ba_goo_0.avi`: source movie `April_09`, clip 0). Clips cut from one
source movie share actors and scenes, so anything that carves a validation set out of a training
side must keep each source whole. `VideoRecord.group` is the 0-based position of the record's
source (`source_of`) in the sorted list of distinct sources named anywhere in the folder's split
files (every class, all three folds, ids 0, 1 and 2). It depends only on the split files' content:
the same source gets the same group in every class, fold and subset, in every run and on every
machine (Python's code-point string order, no hashing salt, no locale).

Layout: `<root>/hmdb51/<class>/*.avi`, `<root>/testTrainMulti_7030_splits/`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from runkit.atomic import atomic_write_bytes
from videodata.errors import SplitFileError
from videodata.folder import is_video_name
from videodata.records import VideoRecord, locate, read_lines
from videodata.sets.base import TargetSet, check_split_subset

SPLITS = (1, 2, 3)
UNUSED, TRAIN, TEST = 0, 1, 2
_IDS = {"train": TRAIN, "test": TEST}
_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>\d+)\.txt$")
_LOOKS_LIKE_SPLIT_FILE = re.compile(r"test_split\d+\.txt$")
_CLIP = re.compile(r"_(\d+)$")


def split_file_name(class_name: str, split: int) -> str:
    """The official name of one class's split file: `<class>_test_split<k>.txt`."""
    return f"{class_name}_test_split{split}.txt"


def _check_split_subset(split: int, subset: str) -> None:
    check_split_subset("HMDB51", SPLITS, split, subset)


def _stem(file_name: str) -> str:
    return Path(file_name).stem


def source_of(file_name: str, class_name: str) -> str:
    """The source-movie part of an HMDB51 clip name.

    Rule: the part of the name (extension dropped) before the LAST `_<class_name>_`, compared
    case-insensitively, when that part is not empty: `April_09_brush_hair_u_nm_np1_ba_goo_0.avi`
    -> `April_09`. The last occurrence because a source may itself contain the class name
    (`how_to_brush_hair_brush_hair_h_nm_np1_fr_goo_0` -> `how_to_brush_hair`), whereas the tags
    after the class (`u`, `nm`, `np1`, `ba`, `goo`, clip number) are never a class name.
    Fallback, for names without `_<class_name>_` after a non-empty prefix: the name without its
    extension and its trailing `_<digits>` clip number (`clip_0007.avi` -> `clip`), so the
    numbered clips of one video still share a source.
    """
    stem = _stem(file_name)
    at = stem.lower().rfind(f"_{class_name.lower()}_")
    if at > 0:
        return stem[:at]
    return _CLIP.sub("", stem) or stem


def clip_of(file_name: str) -> int:
    """The trailing clip number of a name (`..._goo_3.avi` -> 3), or -1 when there is none."""
    match = _CLIP.search(_stem(file_name))
    return int(match.group(1)) if match else -1


def read_class_names(lists_dir: str | os.PathLike) -> list[str]:
    """Class names from the split-file names, sorted; position = 0-based label.

    Every class must have all three split files; a file named like a split file but not
    `<class>_test_split<1|2|3>.txt` is an error. Hidden files (atomic-write temp files) are skipped.
    """
    folder = Path(lists_dir)
    if not folder.is_dir():
        raise SplitFileError(folder, "HMDB51 split folder not found")
    have: dict[str, set[int]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        match = _SPLIT_FILE.match(entry.name)
        if match is None:
            if _LOOKS_LIKE_SPLIT_FILE.search(entry.name):
                raise SplitFileError(entry.path, "not named <class>_test_split<k>.txt")
            continue  # e.g. a README beside the split files
        split = int(match.group("k"))
        if split not in SPLITS:
            raise SplitFileError(entry.path, f"split number must be one of {SPLITS}, got {split}")
        have.setdefault(match.group("cls"), set()).add(split)
    if not have:
        raise SplitFileError(folder, "no HMDB51 split files (<class>_test_split<k>.txt) found")
    for name in sorted(have):
        for split in SPLITS:
            if split not in have[name]:
                raise SplitFileError(folder / split_file_name(name, split),
                                     f"split file not found: class {name!r} has split files "
                                     f"{sorted(have[name])} but every class needs {list(SPLITS)}")
    return sorted(have)


def _check_name(name: str) -> str | None:
    """Why `name` cannot be a video file name in a split file, or None when it can."""
    if "/" in name or "\\" in name:
        return f"expected a bare video file name, got the path {name!r}"
    if not is_video_name(name):
        return f"{name!r} is not a video file name"
    return None


def _parse_split_file(path: Path) -> list[tuple[int, str, int]]:
    """(line number, file name, id) for every non-blank line of one split file."""
    entries: list[tuple[int, str, int]] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise SplitFileError(path, f"expected '<video file> <id>', got {line.strip()!r}", lineno)
        name, tag = parts
        if not tag.isdigit() or int(tag) not in (UNUSED, TRAIN, TEST):
            raise SplitFileError(path, f"id must be 0 (unused), 1 (train) or 2 (test), got {tag!r}",
                                 lineno)
        problem = _check_name(name)
        if problem:
            raise SplitFileError(path, problem, lineno)
        if name in first_line:
            raise SplitFileError(path, f"{name!r} is listed twice (first on line {first_line[name]})",
                                 lineno)
        first_line[name] = lineno
        entries.append((lineno, name, int(tag)))
    return entries


def _read_all(lists_dir: str | os.PathLike) -> tuple[list[str], dict[tuple[str, int], list]]:
    """Class names and the parsed entries of every split file, keyed by (class, split)."""
    classes = read_class_names(lists_dir)
    folder = Path(lists_dir)
    parsed = {(name, k): _parse_split_file(folder / split_file_name(name, k))
              for name in classes for k in SPLITS}
    return classes, parsed


def source_groups(lists_dir: str | os.PathLike) -> dict[str, int]:
    """Source movie -> group id: its 0-based position among the sorted distinct sources named in
    all split files of the folder (every class, fold and id)."""
    _, parsed = _read_all(lists_dir)
    return _groups(parsed)


def _groups(parsed: Mapping[tuple[str, int], list]) -> dict[str, int]:
    sources = {source_of(name, cls) for (cls, _), entries in parsed.items() for _, name, _ in entries}
    return {source: i for i, source in enumerate(sorted(sources))}


def read_split(lists_dir: str | os.PathLike, split: int, subset: str = "train") -> list[VideoRecord]:
    """Parse the split files of fold `split` without touching the videos: the records with id 1
    (train) or 2 (test), `path` = `relpath` = `<class>/<file>` (`load_split` joins it to the video
    folder), ordered by label then file name. Every split file of the folder is checked."""
    _check_split_subset(split, subset)
    classes, parsed = _read_all(lists_dir)
    group_of = _groups(parsed)
    wanted = _IDS[subset]
    records: list[VideoRecord] = []
    for label, cls in enumerate(classes):
        names = sorted(name for _, name, tag in parsed[(cls, split)] if tag == wanted)
        for name in names:
            relpath = f"{cls}/{name}"
            records.append(VideoRecord(relpath, relpath, label, cls, group_of[source_of(name, cls)],
                                       clip_of(name)))
    if not records:  # an empty list would give NaN accuracies an hour later
        raise SplitFileError(Path(lists_dir) / split_file_name("*", split),
                             f"no videos with id {wanted} ({subset}) in split {split}")
    return records


def load_split(video_root: str | os.PathLike, lists_dir: str | os.PathLike, split: int,
               subset: str = "train", missing: str = "error") -> list[VideoRecord]:
    """The videos of one side of one official fold, with full paths (order of `read_split`);
    `missing` as in `videodata.records.locate` ("error" or "skip")."""
    listed = read_split(lists_dir, split, subset)
    return locate(listed, video_root, Path(lists_dir) / split_file_name("*", split), missing, what=subset)


def write_split_files(lists_dir: str | os.PathLike,
                      assignments: Mapping[str, Iterable[tuple[str, Sequence[int]]]]) -> list[Path]:
    """Write official-format split files, atomically: for each class, `<class>_test_split<k>.txt`
    for k = 1, 2, 3 with one line `<file> <id> ` (trailing space and LF, as in the official files)
    per `(file_name, [id_split1, id_split2, id_split3])`, in the order given.

    Ids are 0 (unused), 1 (train), 2 (test). Bad input is a ValueError before anything is written.
    Other files in `lists_dir` are left alone (`read_class_names` reads every split file there).
    Returns the written paths.
    """
    if not assignments:
        raise ValueError("assignments is empty: no class to write")
    checked: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for cls, items in assignments.items():
        if (not isinstance(cls, str) or not cls or cls.startswith(".")
                or any(c in "/\\" or c.isspace() for c in cls)):
            raise ValueError(f"class name {cls!r} cannot name a split file")
        rows: list[tuple[str, tuple[int, ...]]] = []
        seen: set[str] = set()
        for item in items:
            name, ids = item
            problem = _check_name(name) if isinstance(name, str) else f"{name!r} is not a string"
            if problem is None and any(c.isspace() for c in name):
                problem = f"{name!r} contains whitespace"
            if problem:
                raise ValueError(f"class {cls!r}: {problem}")
            if name in seen:
                raise ValueError(f"class {cls!r}: {name!r} is listed twice")
            seen.add(name)
            ids = tuple(ids)
            if len(ids) != len(SPLITS) or any(
                    isinstance(i, bool) or not isinstance(i, int) or i not in (UNUSED, TRAIN, TEST)
                    for i in ids):
                raise ValueError(f"class {cls!r}, {name!r}: expected one id in (0, 1, 2) per split "
                                 f"{SPLITS}, got {ids!r}")
            rows.append((name, ids))
        checked[cls] = rows
    folder = Path(lists_dir)
    written: list[Path] = []
    for cls, rows in checked.items():
        for i, split in enumerate(SPLITS):
            path = folder / split_file_name(cls, split)
            atomic_write_bytes(path, "".join(f"{name} {ids[i]} \n" for name, ids in rows).encode("utf-8"))
            written.append(path)
    return written


# ----------------------------------------------------------------------------- synthetic twin

# Class folders named like HMDB51's (its first classes in sorted order, so the label of class i is
# i); the generator's motion family i is class i. Each group is a "source movie".
SYNTHETIC_CLASSES = ("brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
                     "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing")


def synthetic_file(class_name: str, label: int, group: int, clip: int) -> str:
    """`<class>/<source>_<class>_f_cm_np1_fr_med_<n>.avi`, the source movie unique per (class, group)."""
    return f"{class_name}/Movie{label:02d}{group:02d}_{class_name}_f_cm_np1_fr_med_{clip - 1}.avi"


def write_synthetic_lists(lists_dir: Path, class_names: Sequence[str], records: Sequence[VideoRecord],
                          is_test: Callable[[int, int], bool]) -> None:
    """One split file per class and fold: id 1 train, 2 test."""
    assignments: dict[str, list] = {name: [] for name in class_names}
    for r in records:
        ids = [TEST if is_test(split, r.group) else TRAIN for split in SPLITS]
        assignments[r.class_name].append((r.relpath.rsplit("/", 1)[1], ids))
    write_split_files(lists_dir, assignments)


SET = TargetSet(
    name="hmdb51", title="HMDB51", videos="hmdb51", lists="testTrainMulti_7030_splits",
    holds="hmdb51/<class>/ and testTrainMulti_7030_splits/", splits=SPLITS,
    groups="the source movie of the clip's name (`source_of`), numbered over all split files",
    read_class_names=read_class_names, load=load_split, synthetic_file=synthetic_file,
    write_synthetic_lists=write_synthetic_lists, synthetic_classes=SYNTHETIC_CLASSES)
