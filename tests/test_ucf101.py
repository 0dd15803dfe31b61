"""UCF101 split lists: the real official lists in ../shared/data, and small hand-made ones."""
from __future__ import annotations

import warnings

import pytest

from videodata.errors import MissingVideosError
from videodata.sets.ucf101 import load_split, parse_group_clip, read_class_names, read_split

COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}


def test_class_index(ucf_lists):
    classes = read_class_names(ucf_lists)
    assert len(classes) == 101
    assert classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    assert "HandstandPushups" in classes


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_split_counts_and_groups(ucf_lists, split):
    train = read_split(ucf_lists, split, "train")
    test = read_split(ucf_lists, split, "test")
    assert (len(train), len(test)) == COUNTS[split]
    assert not {r.relpath for r in train} & {r.relpath for r in test}
    assert len(train) + len(test) == 13320
    test_groups = set(range(7 * (split - 1) + 1, 7 * split + 1))
    assert {r.group for r in test} == test_groups
    assert not {r.group for r in train} & test_groups
    labels = {r.label for r in train + test}
    assert labels == set(range(101))
    per_class = {}
    for r in train:
        per_class[r.label] = per_class.get(r.label, 0) + 1
    if split == 1:
        assert min(per_class.values()) == 72 and max(per_class.values()) == 121


def test_labels_from_folder_and_classind(ucf_lists):
    classes = read_class_names(ucf_lists)
    test = read_split(ucf_lists, 1, "test")          # test lines carry no label
    for rec in test:
        assert classes[rec.label] == rec.class_name == rec.relpath.split("/")[0]
    quirk = [r for r in test if r.class_name == "HandstandPushups"]
    assert quirk and all("v_HandStandPushups_" in r.relpath for r in quirk)
    first = read_split(ucf_lists, 1, "train")[0]
    assert (first.relpath, first.label, first.group, first.clip) == \
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0, 8, 1)


def test_real_videos_present(ucf_videos, ucf_lists):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = load_split(ucf_videos, ucf_lists, 1, "train", missing="skip")
        test = load_split(ucf_videos, ucf_lists, 1, "test", missing="skip")
    assert (len(train), len(test)) == (3, 28)            # SOURCES.md: 3 train, 28 test in split 1
    assert any("skipping 9534 of 9537" in str(w.message) for w in caught)
    assert {r.group for r in train} == {11, 14, 16}
    for rec in train + test:
        assert rec.path.endswith(rec.relpath) and rec.label >= 0
    with pytest.warns(UserWarning, match="skipping"):
        sizes = {k: tuple(len(load_split(ucf_videos, ucf_lists, k, s, missing="skip"))
                          for s in ("train", "test")) for k in (2, 3)}
    assert sizes == {2: (29, 2), 3: (30, 1)}


def test_missing_videos_error(ucf_videos, ucf_lists):
    with pytest.raises(MissingVideosError) as info:
        load_split(ucf_videos, ucf_lists, 1, "test")
    msg = str(info.value)
    assert "3755 of 3783" in msg and "testlist01.txt" in msg
    assert "v_ApplyEyeMakeup_g01_c06.avi" in msg and "missing='skip'" in msg


def test_parse_group_clip():
    assert parse_group_clip("v_HandStandPushups_g07_c04.avi") == (7, 4)
    assert parse_group_clip("clip.mp4") == (-1, -1)


def test_small_lists_crlf(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 Alpha\r\n2 Beta\r\n")
    (lists / "trainlist01.txt").write_bytes(b"Beta/v_Beta_g08_c02.avi 2\r\nAlpha/v_Alpha_g09_c01.avi 1\r\n\r\n")
    (lists / "testlist01.txt").write_bytes(b"Alpha/v_Alpha_g01_c03.avi\r\n")
    videos = tmp_path / "UCF-101"
    for rel in ("Beta/v_Beta_g08_c02.avi", "Alpha/v_Alpha_g09_c01.avi", "Alpha/v_Alpha_g01_c03.avi"):
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"x")
    train = load_split(videos, lists, 1, "train")
    assert [(r.class_name, r.label, r.group, r.clip) for r in train] == [("Beta", 1, 8, 2), ("Alpha", 0, 9, 1)]
    assert load_split(videos, lists, 1, "test")[0].label == 0
    with pytest.raises(ValueError):
        load_split(videos, lists, 4, "train")


def test_dataset_over_real_split(ucf_videos, ucf_lists):
    import torch

    from videodata.datasets import UCF101Videos
    with pytest.warns(UserWarning, match="skipping"):
        recs = load_split(ucf_videos, ucf_lists, 1, "train", missing="skip")
    first = UCF101Videos(recs, 8, 16)
    x, y = first[0]
    assert x.shape == (3, 8, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() <= x.max() <= 1
    assert y == recs[0].label
    torch.manual_seed(0)
    a = UCF101Videos(recs, 8, 16, sampling="random")[1][0]
    torch.manual_seed(0)
    assert torch.equal(a, UCF101Videos(recs, 8, 16, sampling="random")[1][0])
    clips, _ = UCF101Videos(recs, 4, 16, sampling="uniform", num_clips=3)[2]
    assert clips.shape == (3, 3, 4, 16, 16)
    with pytest.raises(ValueError):
        UCF101Videos(recs, 4, 16, sampling="first", num_clips=3)
