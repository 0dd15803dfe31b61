"""A labeled target set in its official layout: its classes and its split lists.

    data = labeled_set("ucf101", "/data/ucf")        # <root>/UCF-101/, <root>/ucfTrainTestlist/
    data = labeled_set("hmdb51", "/data/hmdb")       # <root>/hmdb51/, <root>/testTrainMulti_7030_splits/
    data.class_names(); data.split(1, "train"); data.split(1, "test")

Every set of `videodata.sets.SETS` (ucf101, hmdb51, ssv2, diving48) reads this way. The synthetic
set writes any of their layouts (SyntheticConfig.layout), so the same object reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videodata.errors import VideoDataError
from videodata.records import VideoRecord
from videodata.sets import SETS, TargetSet


@dataclass(frozen=True)
class LabeledData:
    style: str              # a key of videodata.sets.SETS
    video_root: Path
    lists_dir: Path
    fingerprint: str

    @property
    def target(self) -> TargetSet:
        return SETS[self.style]

    def class_names(self) -> list[str]:
        return self.target.read_class_names(self.lists_dir)

    def split(self, split: int, subset: str) -> list[VideoRecord]:
        return self.target.load(self.video_root, self.lists_dir, split, subset)


def labeled_set(style: str, root: str | Path, fingerprint: str | None = None) -> LabeledData:
    """The set under `root` in `style`'s layout; VideoDataError saying what is expected when absent."""
    if style not in SETS:
        raise VideoDataError(f"unknown labeled-set layout {style!r}; choose one of {sorted(SETS)}")
    target, root = SETS[style], Path(root)
    target.check_root(root)
    return LabeledData(style, target.video_root(root), target.lists_dir(root), fingerprint or style)
