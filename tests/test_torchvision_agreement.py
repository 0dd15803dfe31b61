"""Split membership agrees exactly with torchvision.datasets.UCF101 on the same folder.

torchvision decodes every video's timestamps (VideoClips, through torchcodec) when the dataset is
built, so the tree is tiny: real file names from the official lists, written as 3-frame AVIs.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from _videos import block_frames, write_video
from videodata.sets.ucf101 import load_split, read_split

CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")   # HandstandPushups: the case quirk
GROUPS = (1, 10, 17, 24)   # test side of split 1, 2, 3, and train in every split


def _tree(root: Path, ucf_lists: Path) -> list[str]:
    every = {r.relpath: r for r in read_split(ucf_lists, 1, "train") + read_split(ucf_lists, 1, "test")}
    chosen = []
    for cls in CLASSES:
        for g in GROUPS:
            chosen.append(min(rel for rel, r in every.items() if r.class_name == cls and r.group == g))
    template = write_video(root.parent / "template.avi", block_frames(3, 32, 32))
    for rel in chosen + ["YoYo/v_YoYo_g99_c01.avi"]:        # the last one is in no list
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, root / rel)
    return chosen


def test_split_membership_matches_torchvision(tmp_path, ucf_lists):
    pytest.importorskip("torchcodec", reason="torchvision's UCF101 decodes through torchcodec: "
                                             "pip install torchcodec (0.17.0 works with torch 2.14.1)")
    from torchvision.datasets import UCF101

    root = tmp_path / "UCF-101"
    chosen = _tree(root, ucf_lists)
    for split in (1, 2, 3):
        for subset in ("train", "test"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours = {r.relpath for r in load_split(root, ucf_lists, split, subset, missing="skip")}
                theirs_ds = UCF101(str(root), str(ucf_lists), frames_per_clip=1, fold=split,
                                   train=subset == "train", num_workers=0)
            theirs = {Path(p).relative_to(root).as_posix() for p in theirs_ds.video_clips.video_paths}
            assert ours == theirs, (split, subset)
            assert ours and ours <= set(chosen)
        # Each chosen group is on the test side of exactly the split the UCF protocol says.
        with pytest.warns(UserWarning, match="skipping"):
            test = load_split(root, ucf_lists, split, "test", missing="skip")
        test_groups = {r.group for r in test}
        assert test_groups == {GROUPS[split - 1]}
