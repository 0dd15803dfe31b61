"""HMDB51 split files: hand-written official-format files, errors, groups, and agreement with
torchvision.datasets.HMDB51 on a small tree of real encoded videos."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from _videos import index_frames, read_index, write_video
from videodata.errors import MissingVideosError, SplitFileError
from videodata.sets.hmdb51 import (SPLITS, clip_of, load_split, read_class_names, read_split, source_groups,
                              source_of, write_split_files)


def _write_lists(folder: Path, files: dict[str, dict[int, bytes]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for cls, by_split in files.items():
        for k, data in by_split.items():
            (folder / f"{cls}_test_split{k}.txt").write_bytes(data)
    return folder


def _hand_written(tmp_path: Path) -> Path:
    """Two classes in the three official file styles: LF + trailing space, CRLF, no final newline."""
    wave = {1: b"A_wave_f_cm_np1_fr_med_0.avi 1 \nA_wave_f_cm_np1_fr_med_1.avi 2 \n"
               b"B_wave_f_nm_np1_le_bad_0.avi 0 \n\n",
            2: b"B_wave_f_nm_np1_le_bad_0.avi 1\r\nA_wave_f_cm_np1_fr_med_0.avi 2\r\n"
               b"A_wave_f_cm_np1_fr_med_1.avi 1\r\n",
            3: b"A_wave_f_cm_np1_fr_med_0.avi 1\nA_wave_f_cm_np1_fr_med_1.avi 0\n"
               b"B_wave_f_nm_np1_le_bad_0.avi 2"}
    brush = {k: (f"Z_brush_hair_u_nm_np1_ba_goo_0.avi {1 if k != 2 else 2} \r\n"
                 f"A_brush_hair_h_nm_np1_le_goo_3.avi {2 if k != 2 else 1}").encode()
             for k in SPLITS}
    return _write_lists(tmp_path / "splits", {"wave": wave, "brush_hair": brush})


def test_hand_written_split_files(tmp_path):
    lists = _hand_written(tmp_path)
    (lists / "README.txt").write_text("not a split file\n")
    assert read_class_names(lists) == ["brush_hair", "wave"]
    train1 = read_split(lists, 1, "train")
    assert [(r.relpath, r.label, r.class_name, r.clip) for r in train1] == [
        ("brush_hair/Z_brush_hair_u_nm_np1_ba_goo_0.avi", 0, "brush_hair", 0),
        ("wave/A_wave_f_cm_np1_fr_med_0.avi", 1, "wave", 0)]
    assert all(r.path == r.relpath for r in train1)
    side = {(k, s): [r.relpath.split("/")[1] for r in read_split(lists, k, s)]
            for k in SPLITS for s in ("train", "test")}
    assert side[1, "test"] == ["A_brush_hair_h_nm_np1_le_goo_3.avi", "A_wave_f_cm_np1_fr_med_1.avi"]
    # CRLF, no trailing space; order is label then file name, not line order (B_ is listed first)
    assert side[2, "train"] == ["A_brush_hair_h_nm_np1_le_goo_3.avi", "A_wave_f_cm_np1_fr_med_1.avi",
                                "B_wave_f_nm_np1_le_bad_0.avi"]
    assert side[2, "test"] == ["Z_brush_hair_u_nm_np1_ba_goo_0.avi", "A_wave_f_cm_np1_fr_med_0.avi"]
    # no final newline; id 0 is on neither side
    assert side[3, "train"] == ["Z_brush_hair_u_nm_np1_ba_goo_0.avi", "A_wave_f_cm_np1_fr_med_0.avi"]
    assert side[3, "test"] == ["A_brush_hair_h_nm_np1_le_goo_3.avi", "B_wave_f_nm_np1_le_bad_0.avi"]
    for k in SPLITS:
        assert not set(side[k, "train"]) & set(side[k, "test"])
    with pytest.raises(ValueError):
        read_split(lists, 4, "train")
    with pytest.raises(ValueError):
        read_split(lists, 1, "val")


def test_class_names_need_all_three_split_files(tmp_path):
    lists = _hand_written(tmp_path)
    (lists / "wave_test_split2.txt").unlink()
    with pytest.raises(SplitFileError, match=r"wave_test_split2\.txt: split file not found") as info:
        read_class_names(lists)
    assert info.value.path.endswith("wave_test_split2.txt")
    with pytest.raises(SplitFileError, match="wave_test_split2"):
        read_split(lists, 1, "train")        # even when asking for another fold

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".wave_test_split1.txt.abc.tmp").write_text("")   # an atomic write in progress
    with pytest.raises(SplitFileError, match="no HMDB51 split files"):
        read_class_names(empty)
    with pytest.raises(SplitFileError, match="split folder not found"):
        read_class_names(tmp_path / "nowhere")

    odd = _hand_written(tmp_path / "odd")
    (odd / "wave_test_split4.txt").write_text("")
    with pytest.raises(SplitFileError, match=r"wave_test_split4\.txt: split number"):
        read_class_names(odd)
    (odd / "wave_test_split4.txt").unlink()
    (odd / "_test_split1.txt").write_text("")
    with pytest.raises(SplitFileError, match=r"_test_split1\.txt: not named"):
        read_class_names(odd)


@pytest.mark.parametrize("content, line, reason", [
    (b"A_wave_0.avi 1\nA_wave_1.avi 1 extra\n", 2, "expected '<video file> <id>'"),
    (b"A_wave_0.avi\n", 1, "expected '<video file> <id>'"),
    (b"A_wave_0.avi 1\r\n\r\nA_wave_1.avi 3\r\n", 3, "id must be 0 (unused), 1 (train) or 2 (test)"),
    (b"A_wave_0.avi -1\n", 1, "id must be"),
    (b"A_wave_0.avi train\n", 1, "id must be"),
    (b"A_wave_0.avi 1 \nA_wave_1.avi 2 \nA_wave_0.avi 2 \n", 3, "listed twice (first on line 1)"),
    (b"A_wave_0.avi 1\nnotes.txt 0", 2, "is not a video file name"),
    (b"wave/A_wave_0.avi 1\n", 1, "expected a bare video file name"),
])
def test_malformed_lines_name_file_and_line(tmp_path, content, line, reason):
    lists = _hand_written(tmp_path)
    bad = lists / "wave_test_split3.txt"
    bad.write_bytes(content)
    with pytest.raises(SplitFileError) as info:
        read_split(lists, 1, "test")
    err = info.value
    assert err.path == str(bad) and err.line == line
    assert str(err).startswith(f"{bad}:{line}: ") and reason in str(err)


def test_not_utf8_split_file(tmp_path):
    lists = _hand_written(tmp_path)
    (lists / "wave_test_split1.txt").write_bytes(b"\xff\xfe\x00bad 1\n")
    with pytest.raises(SplitFileError, match="wave_test_split1.txt: not a UTF-8 text file"):
        read_split(lists, 1)


def test_source_and_clip_rules():
    assert source_of("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "brush_hair") == "April_09"
    assert source_of("(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi", "cartwheel") == \
        "(Rad)Schlag_die_Bank!"
    assert source_of("Brushing_hair__the_right_way_brush_hair_u_nm_np1_fr_goo_2.avi", "brush_hair") == \
        "Brushing_hair__the_right_way"
    # the source itself contains the class name: the last occurrence is the class token
    assert source_of("how_to_brush_hair_brush_hair_h_nm_np1_fr_goo_0.avi", "brush_hair") == \
        "how_to_brush_hair"
    assert source_of("Catch_Me_If_You_Can_catch_f_cm_np1_fr_med_1.avi", "catch") == "Catch_Me_If_You_Can"
    assert source_of("Some_Movie_CATCH_f_cm_np1_fr_med_1.avi", "catch") == "Some_Movie"
    # sword vs sword_exercise: the class is matched whole
    assert source_of("Duel_sword_exercise_f_cm_np1_fr_med_0.avi", "sword_exercise") == "Duel"
    assert source_of("Duel_sword_f_cm_np2_fr_med_0.avi", "sword") == "Duel"
    # fallback: no `_<class>_` after a non-empty prefix -> name less extension and clip number
    assert source_of("clip_0007.avi", "wave") == "clip"
    assert source_of("wave_f_cm_np1_fr_med_3.avi", "wave") == "wave_f_cm_np1_fr_med"
    assert source_of("holiday.avi", "wave") == "holiday"
    assert source_of("_wave_3.avi", "wave") == "_wave"
    assert clip_of("April_09_brush_hair_u_nm_np1_ba_goo_12.avi") == 12
    assert clip_of("holiday.avi") == -1


def test_groups_follow_source_movies(tmp_path):
    names = {"brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
                            "April_09_brush_hair_u_nm_np1_ba_goo_1.avi",
                            "Brushing_hair_brush_hair_h_nm_np1_le_goo_0.avi"],
             "wave": ["April_09_wave_f_cm_np1_fr_med_0.avi", "Zoo_Trip_wave_u_cm_np1_fr_bad_2.avi",
                      "Zoo_Trip_wave_u_cm_np1_fr_bad_5.avi", "Beach_wave_f_nm_np1_ri_goo_0.avi"]}
    ids = [[1, 1, 2], [2, 1, 1], [0, 2, 1]]
    lists = tmp_path / "splits"
    write_split_files(lists, {cls: [(n, ids[i % 3]) for i, n in enumerate(files)]
                              for cls, files in names.items()})
    every = {}
    for k in SPLITS:
        for subset in ("train", "test"):
            for r in read_split(lists, k, subset):
                assert every.setdefault(r.relpath, r.group) == r.group   # same in every fold/side
    assert len(every) == 7
    source = {rel: source_of(rel.split("/")[1], rel.split("/")[0]) for rel in every}
    for a in every:
        for b in every:
            assert (every[a] == every[b]) == (source[a] == source[b]), (a, b)
    # April_09 gives clips to two classes: one group across classes
    assert every["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi"] == \
        every["wave/April_09_wave_f_cm_np1_fr_med_0.avi"]
    # the id is the position among sorted sources, so a copy elsewhere gets the same ids
    assert source_groups(lists) == {"April_09": 0, "Beach": 1, "Brushing_hair": 2, "Zoo_Trip": 3}
    copy = tmp_path / "copy"
    shutil.copytree(lists, copy)
    assert [(r.relpath, r.group) for r in read_split(copy, 2, "train")] == \
        [(r.relpath, r.group) for r in read_split(lists, 2, "train")]


def test_missing_videos_error_and_skip(tmp_path):
    lists = _hand_written(tmp_path)
    videos = tmp_path / "hmdb51"
    present = ["brush_hair/Z_brush_hair_u_nm_np1_ba_goo_0.avi", "wave/A_wave_f_cm_np1_fr_med_1.avi"]
    for rel in present:
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"x")
    (videos / "wave" / "A_wave_f_cm_np1_fr_med_0.avi").mkdir()     # a folder is not a video
    with pytest.raises(MissingVideosError) as info:
        load_split(videos, lists, 1, "train")
    msg = str(info.value)
    assert "1 of 2 videos listed in" in msg and "*_test_split1.txt" in msg
    assert "wave/A_wave_f_cm_np1_fr_med_0.avi" in msg and "missing='skip'" in msg
    with pytest.warns(UserWarning, match=r"skipping 1 of 2 train videos"):
        train = load_split(videos, lists, 1, "train", missing="skip")
    assert [r.relpath for r in train] == present[:1]
    assert train[0].path == str(videos / "brush_hair" / "Z_brush_hair_u_nm_np1_ba_goo_0.avi")
    with pytest.raises(MissingVideosError, match="1 of 2 videos"):
        load_split(videos, lists, 1, "test")
    with pytest.warns(UserWarning, match=r"skipping 1 of 2 test videos"):
        assert [r.relpath for r in load_split(videos, lists, 1, "test", missing="skip")] == present[1:]
    with pytest.raises(ValueError):
        load_split(videos, lists, 1, "train", missing="ignore")


def test_write_split_files_round_trip(tmp_path):
    assignments = {
        "shoot_bow": [("Archery_Day_shoot_bow_f_nm_np1_fr_goo_0.avi", [1, 2, 1]),
                      ("Archery_Day_shoot_bow_f_nm_np1_fr_goo_1.avi", [1, 2, 0]),
                      ("Robin_shoot_bow_u_cm_np1_le_med_0.avi", [2, 1, 2])],
        "draw_sword": [("Robin_draw_sword_f_cm_np1_ri_bad_0.avi", [2, 2, 1]),
                       ("Knights_draw_sword_f_cm_np1_ri_bad_4.avi", [1, 1, 2])],
    }
    lists = tmp_path / "splits"
    written = write_split_files(lists, assignments)
    assert sorted(p.name for p in written) == sorted(f"{c}_test_split{k}.txt"
                                                     for c in assignments for k in SPLITS)
    assert sorted(p.name for p in lists.iterdir()) == sorted(p.name for p in written)  # no temp files
    assert (lists / "draw_sword_test_split3.txt").read_bytes() == \
        b"Robin_draw_sword_f_cm_np1_ri_bad_0.avi 1 \nKnights_draw_sword_f_cm_np1_ri_bad_4.avi 2 \n"
    classes = read_class_names(lists)
    assert classes == ["draw_sword", "shoot_bow"]
    for k in SPLITS:
        for subset, tag in (("train", 1), ("test", 2)):
            expected = sorted((classes.index(c), name) for c, rows in assignments.items()
                              for name, ids in rows if ids[k - 1] == tag)
            got = [(r.label, r.relpath.split("/")[1]) for r in read_split(lists, k, subset)]
            assert got == expected, (k, subset)
    groups = {r.relpath: r.group
              for k in SPLITS for s in ("train", "test") for r in read_split(lists, k, s)}
    assert groups["shoot_bow/Robin_shoot_bow_u_cm_np1_le_med_0.avi"] == \
        groups["draw_sword/Robin_draw_sword_f_cm_np1_ri_bad_0.avi"]

    for bad in ({}, {"a/b": [("x_0.avi", [1, 1, 1])]}, {"wave": [("x_0.avi", [1, 1])]},
                {"wave": [("x_0.avi", [1, 3, 1])]}, {"wave": [("x_0.avi", [True, 1, 1])]},
                {"wave": [("x 0.avi", [1, 1, 1])]}, {"wave": [("x_0.txt", [1, 1, 1])]},
                {"wave": [("x_0.avi", [1, 1, 1]), ("x_0.avi", [2, 2, 2])]}):
        with pytest.raises(ValueError):
            write_split_files(tmp_path / "bad", bad)
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- torchvision agreement

CLASSES = ("wave", "brush_hair", "kick_ball")          # sorted order differs from this order
SOURCES = ("April_09", "Veoh_Alpha_Dog")
FRAMES = 4


def _tag(c: int, s: int, n: int, k: int) -> int:
    if n == 2 and (k + c) % 3 == 0:
        return 0
    return 1 if (s + k + c) % 2 == 0 else 2


def _agreement_tree(tmp_path: Path) -> tuple[Path, Path]:
    """3 classes x 2 sources x 3 clips of real 32x32 mpeg4 AVIs; the frames of the class with label
    L show the indices 10L .. 10L+3. Plus a video on disk that no split file lists and a listed one
    absent from disk.
    The split files use the three official styles (trailing space, CRLF, no final newline)."""
    root, lists = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    lists.mkdir()
    for c, cls in enumerate(CLASSES):
        label = sorted(CLASSES).index(cls)
        template = write_video(tmp_path / f"template_{c}.avi",
                               index_frames(10 * label + FRAMES, 32, 32)[10 * label:])
        rows = {k: [] for k in SPLITS}
        for s, src in enumerate(SOURCES):
            for n in range(3):
                name = f"{src}_{cls}_f_cm_np1_fr_med_{n}.avi"
                (root / cls).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(template, root / cls / name)
                for k in SPLITS:
                    rows[k].append(f"{name} {_tag(c, s, n, k)}")
        if cls == "wave":
            shutil.copyfile(template, root / cls / "Stray_wave_f_cm_np1_fr_med_0.avi")
        if cls == "brush_hair":
            for k in SPLITS:
                rows[k].append("Gone_brush_hair_u_nm_np1_ba_goo_0.avi 1")
        for k in SPLITS:
            text = ["\n".join(line + " " for line in rows[k]) + "\n",
                    "\r\n".join(rows[k]) + "\r\n",
                    "\n".join(rows[k])][c]
            (lists / f"{cls}_test_split{k}.txt").write_bytes(text.encode())
    return root, lists


def _ours(root: Path, lists: Path, k: int, subset: str) -> list[tuple[str, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # the absent "Gone_..." video
        return [(r.relpath, r.label) for r in load_split(root, lists, k, subset, missing="skip")]


def _theirs(ds, root: Path) -> list[tuple[str, int]]:
    """torchvision's selected videos with the label its __getitem__ returns, in dataset order."""
    paths = [ds.samples[i][0] for i in ds.indices]
    assert list(ds.video_clips.video_paths) == paths
    return [(Path(ds.samples[i][0]).relative_to(root).as_posix(), ds.samples[i][1]) for i in ds.indices]


def test_membership_and_labels_match_torchvision_without_decoding(tmp_path, monkeypatch):
    """torchvision's own HMDB51 constructor (find_classes, make_dataset, _select_fold, subset)
    with VideoClips' timestamp pass replaced by fake timestamps: no decoder needed, runs anywhere."""
    import torch
    from torchvision.datasets import HMDB51, video_utils

    if not hasattr(video_utils.VideoClips, "_compute_frame_pts"):
        pytest.skip("torchvision's VideoClips no longer has _compute_frame_pts to stand in for")

    def fake_frame_pts(self):
        self.video_pts = [torch.arange(FRAMES) for _ in self.video_paths]
        self.video_fps = [25.0 for _ in self.video_paths]

    def no_decoder():
        raise AssertionError("this test must not decode")

    monkeypatch.setattr(video_utils.VideoClips, "_compute_frame_pts", fake_frame_pts)
    monkeypatch.setattr(video_utils, "_get_torchcodec", no_decoder)
    root, lists = _agreement_tree(tmp_path)
    assert read_class_names(lists) == sorted(CLASSES)
    trains = set()
    for k in SPLITS:
        sides = {}
        for subset in ("train", "test"):
            ds = HMDB51(str(root), str(lists), frames_per_clip=1, fold=k, train=subset == "train",
                        num_workers=0)
            assert ds.classes == read_class_names(lists)
            ours = _ours(root, lists, k, subset)
            assert ours == _theirs(ds, root), (k, subset)     # same videos, labels and order
            sides[subset] = {rel for rel, _ in ours}
            assert sides[subset]
        assert not sides["train"] & sides["test"]
        assert len(sides["train"] | sides["test"]) < 3 * 2 * 3     # some id-0 clips are unused
        trains.add(frozenset(sides["train"]))
    assert len(trains) == 3                                         # the folds differ


def _torchcodec_problem(video: Path) -> str | None:
    try:
        import torchcodec.decoders

        torchcodec.decoders.VideoDecoder(str(video)).get_frames_at(indices=[0])
    except Exception as exc:  # ImportError, or FFmpeg libraries that will not load
        return f"torchvision's HMDB51 decodes through torchcodec, which cannot run here: {exc!r}"
    return None


def test_decoded_clips_match_torchvision(tmp_path):
    """The unpatched dataset (timestamps read by torchcodec): fold 1, both sides, every clip."""
    root, lists = _agreement_tree(tmp_path)
    problem = _torchcodec_problem(tmp_path / "template_0.avi")
    if problem:
        pytest.skip(problem)
    from torchvision.datasets import HMDB51

    for subset in ("train", "test"):
        ds = HMDB51(str(root), str(lists), frames_per_clip=FRAMES, step_between_clips=FRAMES, fold=1,
                    train=subset == "train", num_workers=0)
        ours = _ours(root, lists, 1, subset)
        assert ours == _theirs(ds, root)
        assert len(ds) == len(ours)                      # one clip per video
        for i, (rel, label) in enumerate(ours):
            video, _, their_label = ds[i]
            assert their_label == label
            assert tuple(video.shape) == (FRAMES, 32, 32, 3)
            shown = read_index(np.asarray(video))
            assert shown == list(range(10 * label, 10 * label + FRAMES)), rel   # the class's video
