"""UCF101 split lists: the official `ucfTrainTestlist/` files over a `UCF-101/<Class>/` tree.

Format quirks handled here (seen in the official ucfTrainTestlist files): lines end with CRLF; train lines carry a 1-based
label, test lines none; the label always comes from classInd via the class FOLDER, because one
class's folder and file names disagree in case (`HandstandPushups/v_HandStandPushups_...`).
Membership is "listed in the split file" (and present on disk when `missing="skip"`), which is
exactly what torchvision.datasets.UCF101 selects.

Layout: `<root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`, `<root>/ucfTrainTestlist/`. Groups: the
gXX of the file name (25 groups; the clips of one group share actors and scenes; split k tests
groups 7(k-1)+1 .. 7k), so the leakage audit also flags pool videos by their names' groups.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from runkit.atomic import atomic_write_bytes
from videodata.errors import SplitFileError
from videodata.records import VideoRecord, locate, parse_group_clip, read_lines
from videodata.sets.base import TargetSet, check_split_subset

SPLITS = (1, 2, 3)


def read_class_names(lists_dir: str | os.PathLike) -> list[str]:
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
    check_split_subset("UCF101", SPLITS, split, subset)
    return Path(lists_dir) / f"{subset}list{split:02d}.txt"


def read_split(lists_dir: str | os.PathLike, split: int, subset: str = "train") -> list[VideoRecord]:
    """Parse one official split list without touching the videos: records whose `path` is the
    relative path as listed (`load_split` joins it to the video folder)."""
    classes = read_class_names(lists_dir)
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


def load_split(video_root: str | os.PathLike, lists_dir: str | os.PathLike, split: int,
               subset: str = "train", missing: str = "error") -> list[VideoRecord]:
    """The videos of one side of one official split, in list order, with full paths.

    missing="error" raises MissingVideosError (count + first names) when listed files are absent
    from `video_root`; missing="skip" drops them with a warning giving the count.
    """
    listed = read_split(lists_dir, split, subset)
    return locate(listed, video_root, split_file(lists_dir, split, subset), missing)


# ----------------------------------------------------------------------------- synthetic twin

def _crlf(lines: list[str]) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def synthetic_file(class_name: str, label: int, group: int, clip: int) -> str:
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def write_synthetic_lists(lists_dir: Path, class_names: Sequence[str], records: Sequence[VideoRecord],
                          is_test: Callable[[int, int], bool]) -> None:
    """classInd.txt, trainlist0k.txt (with 1-based labels), testlist0k.txt; CRLF as the official files."""
    atomic_write_bytes(lists_dir / "classInd.txt", _crlf([f"{i + 1} {n}" for i, n in enumerate(class_names)]))
    for split in SPLITS:
        train = [f"{r.relpath} {r.label + 1}" for r in records if not is_test(split, r.group)]
        test = [r.relpath for r in records if is_test(split, r.group)]
        atomic_write_bytes(lists_dir / f"trainlist0{split}.txt", _crlf(train))
        atomic_write_bytes(lists_dir / f"testlist0{split}.txt", _crlf(test))


SET = TargetSet(
    name="ucf101", title="UCF101", videos="UCF-101", lists="ucfTrainTestlist",
    holds="UCF-101/ and ucfTrainTestlist/", splits=SPLITS,
    groups="the gXX of v_<Class>_gXX_cYY (25 per class; split k tests groups 7(k-1)+1 .. 7k)",
    read_class_names=read_class_names, load=load_split, synthetic_file=synthetic_file,
    write_synthetic_lists=write_synthetic_lists, name_groups=True)
