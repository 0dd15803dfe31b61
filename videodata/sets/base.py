"""The interface every labeled target set implements: `TargetSet`, one per module of `videodata.sets`.

A set is described by data and a few functions of its module:
- layout: `videos` (the folder under the set's root holding the videos) and `lists` (the folder
  holding its official list files; "" = the root itself), `list_files` when the lists are named
  files rather than a folder of their own, and `holds` (the layout in words, for messages);
- `splits`: the official splits (folds), and `test_list`: how a split's evaluation list is made
  when it is not an official test list (empty: it is the official test list);
- `read_class_names(lists_dir)`: class names, position = 0-based label;
- `load(video_root, lists_dir, split, subset, missing)`: the `VideoRecord`s of one side
  ("train" | "test") of one split, with full paths (`load_split` takes the set's root instead);
- groups: every record's `group` keeps videos that share actors and scenes together (validation
  folds are group-disjoint, `transfer.subsets`); `groups` says what a group is, and `name_groups`
  whether the leakage audit can also flag pool videos by a UCF-style group in their file name;
- its synthetic twin (`videodata.synthetic`, layout=<name>): `synthetic_classes` (None: the
  generator's motion names), `synthetic_file(class_name, label, group, clip)` (a video's path
  under `videos`, its extension choosing the container) and `write_synthetic_lists(lists_dir,
  class_names, records, is_test)` (the official list formats; `is_test(split, group)`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from videodata.errors import VideoDataError
from videodata.records import VideoRecord


@dataclass(frozen=True)
class TargetSet:
    name: str                       # registry key: --data, data.audit.target, SyntheticConfig.layout
    title: str                      # for people: "UCF101"
    videos: str
    lists: str
    holds: str                      # "UCF-101/ and ucfTrainTestlist/": the root's layout in words
    splits: tuple[int, ...]
    groups: str                     # what a record's group is
    read_class_names: Callable[[str | os.PathLike], list[str]]
    load: Callable[..., list[VideoRecord]]
    synthetic_file: Callable[[str, int, int, int], str]
    write_synthetic_lists: Callable[[Path, Sequence[str], Sequence[VideoRecord], Callable[[int, int], bool]], None]
    synthetic_classes: tuple[str, ...] | None = None
    list_files: tuple[str, ...] = ()
    name_groups: bool = False
    test_list: str = ""

    def video_root(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.videos

    def lists_dir(self, root: str | os.PathLike) -> Path:
        return Path(root) / self.lists if self.lists else Path(root)

    def check_root(self, root: str | os.PathLike) -> None:
        """VideoDataError saying what is expected when `root` does not hold the set's lists."""
        root, lists = Path(root), self.lists_dir(root)
        if not self.list_files:
            if not lists.is_dir():
                raise VideoDataError(f"{root}: no {self.name} split lists at {lists} (expected "
                                     f"<root>/{self.videos}/ and <root>/{self.lists}/)")
            return
        absent = [lists / f for f in self.list_files if not (lists / f).is_file()]
        if absent:
            where = f"<root>/{self.lists}/" if self.lists else "<root>/"
            raise VideoDataError(f"{root}: no {self.name} split lists at {absent[0]} (expected <root>/{self.videos}/ "
                                 f"and {', '.join(where + f for f in self.list_files)})")

    def class_names(self, root: str | os.PathLike) -> list[str]:
        return self.read_class_names(self.lists_dir(root))

    def load_split(self, root: str | os.PathLike, split: int, subset: str = "train",
                   missing: str = "error") -> list[VideoRecord]:
        """One side ("train" | "test") of one official split of the set under `root`."""
        return self.load(self.video_root(root), self.lists_dir(root), split, subset, missing)


def check_split_subset(title: str, splits: tuple[int, ...], split: int, subset: str) -> None:
    if split not in splits:
        raise ValueError(f"{title} split must be one of {splits}, got {split!r}")
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
