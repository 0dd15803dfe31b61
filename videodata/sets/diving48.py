"""Diving48 (V2 labels): the official JSON lists over a flat folder of `.mp4` videos.

Layout (as the official files unpack):

    <root>/rgb/<vid_name>.mp4
    <root>/Diving48_vocab.json       [["Back", "15som", "05Twis", "FREE"], ...]: one entry per class
    <root>/Diving48_V2_train.json    [{"vid_name": "-mmq0PT-u8k_00155", "label": 0,
    <root>/Diving48_V2_test.json       "start_frame": 0, "end_frame": 45}, ...]

A class name is its four vocabulary parts (takeoff, somersault, twist, flight position) joined by
"_" ("Back_15som_05Twis_FREE"); position in the vocabulary = label. The videos of rgb/ are already
trimmed to the dive, so start_frame / end_frame are checked but not used. One split: train / test.

Groups: the source video. A vid_name is `<YouTube id>_<clip number>`; the part before the LAST "_"
names the competition video the dive was cut from (YouTube ids may themselves contain "_" and
"-"). `group` is that source's 0-based position among the sorted distinct sources of both lists,
so dives from one broadcast (same pool, camera, divers) stay together in validation folds.
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
VOCAB, TRAIN, TEST = "Diving48_vocab.json", "Diving48_V2_train.json", "Diving48_V2_test.json"
LIST_OF = {"train": TRAIN, "test": TEST}
EXTENSION = ".mp4"


def source_of(vid_name: str) -> str:
    """The source (YouTube) video of a clip: "-mmq0PT-u8k_00155" -> "-mmq0PT-u8k" (no "_": the name)."""
    return vid_name.rsplit("_", 1)[0] if "_" in vid_name else vid_name


def clip_of(vid_name: str) -> int:
    tail = vid_name.rsplit("_", 1)[-1]
    return int(tail) if "_" in vid_name and tail.isdigit() else -1


def read_class_names(lists_dir: str | os.PathLike) -> list[str]:
    """Class names ("<takeoff>_<somersault>_<twist>_<flight>") in vocabulary order; position = label."""
    path = Path(lists_dir) / VOCAB
    vocab = read_json(path)
    if not isinstance(vocab, list) or not vocab:
        raise SplitFileError(path, "expected a non-empty list of [takeoff, somersault, twist, flight]")
    names = []
    for at, parts in enumerate(vocab):
        if not isinstance(parts, list) or len(parts) != 4 or not all(isinstance(p, str) and p for p in parts):
            raise SplitFileError(path, f"entry {at}: expected [takeoff, somersault, twist, flight], got {parts!r}")
        names.append("_".join(parts))
    if len(set(names)) != len(names):
        raise SplitFileError(path, "a class is listed twice")
    return names


def _entries(lists_dir: Path, subset: str, num_classes: int) -> list[tuple[str, int]]:
    path = lists_dir / LIST_OF[subset]
    entries = read_json(path)
    if not isinstance(entries, list):
        raise SplitFileError(path, "expected a list of {\"vid_name\", \"label\", \"start_frame\", \"end_frame\"}")
    out, seen = [], set()
    for at, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("vid_name"), str) or not e["vid_name"]:
            raise SplitFileError(path, f"entry {at}: expected an object with a \"vid_name\", got {e!r:.80}")
        name, label = e["vid_name"], e.get("label")
        if "/" in name or "\\" in name:
            raise SplitFileError(path, f"entry {at}: vid_name {name!r} is a path, expected a bare name")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
            raise SplitFileError(path, f"entry {at} ({name}): label {label!r} is not in 0 .. {num_classes - 1} "
                                       f"({VOCAB} lists {num_classes} classes)")
        start, end = e.get("start_frame", 0), e.get("end_frame", 0)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
            raise SplitFileError(path, f"entry {at} ({name}): start_frame {start!r} / end_frame {end!r} are not "
                                       f"0 <= start <= end")
        if name in seen:
            raise SplitFileError(path, f"entry {at}: {name!r} is listed twice")
        seen.add(name)
        out.append((name, label))
    if not out:
        raise SplitFileError(path, "no videos listed")
    return out


def read_split(lists_dir: str | os.PathLike, split: int = 1, subset: str = "train") -> list[VideoRecord]:
    """The entries of the train or test list, in list order, without touching the videos:
    `path` = `relpath` = `<vid_name>.mp4`; both lists are read (groups number their sources)."""
    check_split_subset("Diving48", SPLITS, split, subset)
    lists_dir = Path(lists_dir)
    classes = read_class_names(lists_dir)
    sides = {side: _entries(lists_dir, side, len(classes)) for side in LIST_OF}
    sources = sorted({source_of(name) for entries in sides.values() for name, _ in entries})
    group_of = {source: i for i, source in enumerate(sources)}
    return [VideoRecord(f"{name}{EXTENSION}", f"{name}{EXTENSION}", label, classes[label],
                        group_of[source_of(name)], clip_of(name)) for name, label in sides[subset]]


def load_split(video_root: str | os.PathLike, lists_dir: str | os.PathLike, split: int = 1,
               subset: str = "train", missing: str = "error") -> list[VideoRecord]:
    listed = read_split(lists_dir, split, subset)
    return locate(listed, video_root, Path(lists_dir) / LIST_OF[subset], missing, what=subset)


# ----------------------------------------------------------------------------- synthetic twin

SYNTHETIC_VOCAB = tuple((takeoff, som, twist, flight) for takeoff, som, twist, flight in (
    ("Back", "15som", "05Twis", "FREE"), ("Back", "15som", "15Twis", "FREE"), ("Back", "15som", "25Twis", "FREE"),
    ("Back", "15som", "NoTwis", "PIKE"), ("Back", "15som", "NoTwis", "TUCK"), ("Back", "25som", "15Twis", "PIKE"),
    ("Back", "25som", "25Twis", "PIKE"), ("Back", "25som", "NoTwis", "PIKE"), ("Back", "25som", "NoTwis", "TUCK"),
    ("Back", "2som", "15Twis", "FREE"), ("Back", "2som", "25Twis", "FREE"), ("Back", "35som", "NoTwis", "PIKE"),
    ("Back", "35som", "NoTwis", "TUCK"), ("Back", "3som", "NoTwis", "PIKE")))
SYNTHETIC_CLASSES = tuple("_".join(parts) for parts in SYNTHETIC_VOCAB)


def synthetic_file(class_name: str, label: int, group: int, clip: int) -> str:
    """`<source>_<nnnnn>.mp4`: the source ("Yt_<group>", with a "_" as YouTube ids may have) is
    shared by every class's dives of one group, as one broadcast holds many dives."""
    return f"Yt_{group:02d}_{label:02d}{clip:03d}{EXTENSION}"


def write_synthetic_lists(lists_dir: Path, class_names: Sequence[str], records: Sequence[VideoRecord],
                          is_test: Callable[[int, int], bool]) -> None:
    """Diving48_vocab.json and the V2 train / test lists (split 1's sides)."""
    def entry(r: VideoRecord) -> dict:
        return {"vid_name": r.relpath[: -len(EXTENSION)], "label": r.label, "start_frame": 0, "end_frame": 0}

    atomic_write_json(lists_dir / VOCAB, [list(SYNTHETIC_VOCAB[SYNTHETIC_CLASSES.index(n)]) for n in class_names])
    atomic_write_json(lists_dir / TRAIN, [entry(r) for r in records if not is_test(1, r.group)])
    atomic_write_json(lists_dir / TEST, [entry(r) for r in records if is_test(1, r.group)])


SET = TargetSet(
    name="diving48", title="Diving48", videos="rgb", lists="",
    holds="rgb/<vid_name>.mp4, Diving48_vocab.json and Diving48_V2_{train,test}.json", splits=SPLITS,
    groups="the source (YouTube) video: the vid_name before its last '_'",
    read_class_names=read_class_names, load=load_split, synthetic_file=synthetic_file,
    write_synthetic_lists=write_synthetic_lists, synthetic_classes=SYNTHETIC_CLASSES,
    list_files=(VOCAB, TRAIN, TEST))
