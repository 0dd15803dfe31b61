"""A labeled set in UCF101's or HMDB51's official layout: its classes and its split lists.

    data = labeled_set("ucf101", "/data/ucf")        # <root>/UCF-101/, <root>/ucfTrainTestlist/
    data = labeled_set("hmdb51", "/data/hmdb")       # <root>/hmdb51/, <root>/testTrainMulti_7030_splits/
    data.class_names(); data.split(1, "train"); data.split(1, "test")

The synthetic set writes either layout (SyntheticConfig.layout), so the same object reads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videodata import hmdb51, ucf101
from videodata.errors import VideoDataError

LAYOUTS = {"ucf101": ("UCF-101", "ucfTrainTestlist"), "hmdb51": ("hmdb51", "testTrainMulti_7030_splits")}


@dataclass(frozen=True)
class LabeledData:
    style: str              # "ucf101" | "hmdb51"
    video_root: Path
    lists_dir: Path
    fingerprint: str

    def class_names(self) -> list[str]:
        return hmdb51.read_class_names(self.lists_dir) if self.style == "hmdb51" else ucf101.read_class_index(self.lists_dir)

    def split(self, split: int, subset: str) -> list[ucf101.VideoRecord]:
        module = hmdb51 if self.style == "hmdb51" else ucf101
        return module.load_split(self.video_root, self.lists_dir, split, subset)


def labeled_set(style: str, root: str | Path, fingerprint: str | None = None) -> LabeledData:
    """The set under `root` in `style`'s layout; VideoDataError saying what is expected when absent."""
    if style not in LAYOUTS:
        raise VideoDataError(f"unknown labeled-set layout {style!r}; choose one of {sorted(LAYOUTS)}")
    videos, lists = LAYOUTS[style]
    root = Path(root)
    if not (root / lists).is_dir():
        raise VideoDataError(f"{root}: no {style} split lists at {root / lists} (expected <root>/{videos}/ and "
                             f"<root>/{lists}/)")
    return LabeledData(style, root / videos, root / lists, fingerprint or style)
