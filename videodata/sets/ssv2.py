"""Something-Something v2: the official JSON label and list files over a flat folder of `.webm` videos.

Layout (as the official download unpacks):

    <root>/20bn-something-something-v2/<id>.webm
    <root>/labels/labels.json        {"<class name>": "<label id>", ...}: 174 templates, ids "0".."173"
    <root>/labels/train.json         [{"id": "78687", "label": "holding potato next to vicks vaporub bottle",
    <root>/labels/validation.json      "template": "Holding [something] next to [something]",
                                       "placeholders": ["potato", "vicks vaporub bottle"]}, ...]
    <root>/labels/test.json          [{"id": "1420"}, ...]: no labels

The class of a video is its `template` with the brackets removed ("Holding something next to
something"), the key of labels.json; its label is that key's id. (`label` is the filled-in
caption, not the class.)

No public test labels: the evaluation ("test") side of the one split is the official VALIDATION
list (validation.json), as in every SSv2 transfer result; test.json is never read. The sweep
records this in its test manifest (`# source=`) and the report says it.

Groups: one per video (`group` = the numeric video id). SSv2 publishes no actor or source ids;
each video is a separate crowd-sourced recording, so there is no grouping to keep together.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from runkit.atomic import atomic_write_json
from videodata.errors import SplitFileError
from videodata.records import VideoRecord, locate, read_json
from videodata.sets.base import TargetSet, check_split_subset

SPLITS = (1,)
LABELS, TRAIN, VALIDATION, TEST = "labels.json", "train.json", "validation.json", "test.json"
LIST_OF = {"train": TRAIN, "test": VALIDATION}  # no public test labels: validation is the test list
EXTENSION = ".webm"


def class_of(template: str) -> str:
    """The class of a template: "Putting [something] on [something]" -> "Putting something on something"."""
    return template.replace("[", "").replace("]", "")


def read_class_names(lists_dir: str | os.PathLike) -> list[str]:
    """Class names (templates without brackets) ordered by their labels.json id; position = label."""
    path = Path(lists_dir) / LABELS
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise SplitFileError(path, "expected a non-empty object {\"<class>\": \"<id>\", ...}")
    by_id: dict[int, str] = {}
    for name, index in data.items():
        if not str(index).isdigit():
            raise SplitFileError(path, f"class {name!r}: id {index!r} is not a number")
        if int(index) in by_id:
            raise SplitFileError(path, f"id {index} is given to {by_id[int(index)]!r} and {name!r}")
        by_id[int(index)] = name
    if sorted(by_id) != list(range(len(by_id))):
        raise SplitFileError(path, f"ids must run 0 .. {len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def read_split(lists_dir: str | os.PathLike, split: int = 1, subset: str = "train") -> list[VideoRecord]:
    """The entries of train.json ("train") or validation.json ("test"), in list order, without
    touching the videos: `path` = `relpath` = `<id>.webm`."""
    check_split_subset("Something-Something v2", SPLITS, split, subset)
    classes = read_class_names(lists_dir)
    label_of = {name: i for i, name in enumerate(classes)}
    path = Path(lists_dir) / LIST_OF[subset]
    entries = read_json(path)
    if not isinstance(entries, list):
        raise SplitFileError(path, "expected a list of {\"id\", \"label\", \"template\", \"placeholders\"}")
    records: list[VideoRecord] = []
    seen: set[str] = set()
    for at, entry in enumerate(entries):
        where = f"entry {at}"
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise SplitFileError(path, f"{where}: expected an object with \"id\" and \"template\", got {entry!r:.80}")
        vid = str(entry["id"])
        if not vid.isdigit():
            raise SplitFileError(path, f"{where}: id {vid!r} is not a number")
        if vid in seen:
            raise SplitFileError(path, f"{where}: video {vid} is listed twice")
        seen.add(vid)
        name = class_of(str(entry["template"]))
        if name not in label_of:
            raise SplitFileError(path, f"{where}: class {name!r} (template {entry['template']!r}) is not in "
                                       f"{Path(lists_dir) / LABELS}")
        relpath = f"{vid}{EXTENSION}"
        records.append(VideoRecord(relpath, relpath, label_of[name], name, int(vid), -1))
    if not records:
        raise SplitFileError(path, "no videos listed")
    return records


def load_split(video_root: str | os.PathLike, lists_dir: str | os.PathLike, split: int = 1,
               subset: str = "train", missing: str = "error") -> list[VideoRecord]:
    """One side of the split with full paths; "test" is the validation list (no public test labels)."""
    listed = read_split(lists_dir, split, subset)
    return locate(listed, video_root, Path(lists_dir) / LIST_OF[subset], missing, what=subset)


# ----------------------------------------------------------------------------- synthetic twin

SYNTHETIC_TEMPLATES = (
    "Moving [something] from right to left", "Moving [something] from left to right",
    "Moving [something] up", "Moving [something] down", "Pushing [something] up and to the left",
    "Pushing [something] up and to the right", "Pulling [something] down and to the left",
    "Pulling [something] down and to the right", "Shaking [something] sideways", "Shaking [something] up and down",
    "Zooming in on [something]", "Zooming out of [something]", "Turning [something] clockwise",
    "Turning [something] counterclockwise")
SYNTHETIC_CLASSES = tuple(class_of(t) for t in SYNTHETIC_TEMPLATES)


def synthetic_file(class_name: str, label: int, group: int, clip: int) -> str:
    """`<id>.webm`, the id unique per (class, group, clip); its group (one per video) comes from the id."""
    return f"{label + 1}{group:02d}{clip:03d}{EXTENSION}"


def write_synthetic_lists(lists_dir: Path, class_names: Sequence[str], records: Sequence[VideoRecord],
                          is_test: Callable[[int, int], bool]) -> None:
    """labels.json, train.json, validation.json (split 1's test side) and an empty test.json."""
    template = dict(zip(SYNTHETIC_CLASSES, SYNTHETIC_TEMPLATES))

    def entry(r: VideoRecord) -> dict:
        return {"id": r.relpath[: -len(EXTENSION)], "label": template[r.class_name].replace("[something]", "a shape"),
                "template": template[r.class_name], "placeholders": ["a shape"]}

    atomic_write_json(lists_dir / LABELS, {name: str(i) for i, name in enumerate(class_names)})
    atomic_write_json(lists_dir / TRAIN, [entry(r) for r in records if not is_test(1, r.group)])
    atomic_write_json(lists_dir / VALIDATION, [entry(r) for r in records if is_test(1, r.group)])
    atomic_write_json(lists_dir / TEST, [])


SET = TargetSet(
    name="ssv2", title="Something-Something v2", videos="20bn-something-something-v2", lists="labels",
    holds="20bn-something-something-v2/<id>.webm and labels/{labels,train,validation}.json", splits=SPLITS,
    groups="one per video (the video id): SSv2 publishes no actor or source ids",
    read_class_names=read_class_names, load=load_split, synthetic_file=synthetic_file,
    write_synthetic_lists=write_synthetic_lists, synthetic_classes=SYNTHETIC_CLASSES,
    list_files=(LABELS, TRAIN, VALIDATION),
    test_list="the official validation list (labels/validation.json): SSv2 publishes no test labels")
