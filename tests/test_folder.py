"""Unlabeled video folders and file lists."""
from __future__ import annotations

import os

import pytest

from _videos import block_frames, write_video
from videodata.decode import decode_video
from videodata.errors import VideoDataError
from videodata.folder import list_videos


@pytest.fixture()
def tree(tmp_path):
    frames = block_frames(3, 32, 48)  # libx264 refuses 16x16
    root = tmp_path / "pool"
    for rel in ("b/clip2.mp4", "a/clip1.avi", "a/deep/er/x.MKV", "z.webm", "c/v.mov"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        codec = "libvpx-vp9" if rel.endswith(".webm") else "mpeg4" if rel.endswith(".avi") else "libx264"
        write_video(root / rel, frames, codec=codec)
    (root / "a" / "notes.txt").write_text("not a video")
    (root / "a" / ".clip1.avi.123.tmp").write_bytes(b"partial")     # atomic write in progress
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "h.avi", frames)
    return root


def test_folder_tree(tree):
    recs = list_videos(tree)
    assert [r.relpath for r in recs] == ["a/clip1.avi", "a/deep/er/x.MKV", "b/clip2.mp4",
                                         "c/v.mov", "z.webm"]
    assert all(r.label == -1 and os.path.isfile(r.path) for r in recs)
    assert list_videos(tree) == recs                       # deterministic
    for r in recs:
        assert decode_video(r.path, 8).shape == (3, 8, 8, 3)


def test_file_list_relative_and_absolute(tree, tmp_path):
    lst = tmp_path / "lists" / "pool.txt"
    lst.parent.mkdir()
    lst.write_text(f"# pretraining pool\r\n../pool/b/clip2.mp4\r\n\r\n{tree / 'a' / 'clip1.avi'}\r\n")
    recs = list_videos(lst)
    # Relative entries resolve against the list's folder; sorted by the entry as written.
    assert [r.relpath for r in recs] == ["../pool/b/clip2.mp4", str(tree / "a" / "clip1.avi")]
    assert [os.path.realpath(r.path) for r in recs] == [
        os.path.realpath(tree / "b" / "clip2.mp4"), os.path.realpath(tree / "a" / "clip1.avi")]


def test_file_list_missing_entries(tree, tmp_path):
    lst = tmp_path / "pool.txt"
    lst.write_text("pool/z.webm\npool/gone.avi\n")
    with pytest.raises(VideoDataError, match=r"pool\.txt: 1 listed videos not found .*gone\.avi"):
        list_videos(lst)
    with pytest.warns(UserWarning, match="gone.avi"):
        assert [r.relpath for r in list_videos(lst, missing="skip")] == ["pool/z.webm"]


def test_empty_and_absent(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoDataError, match="no video files under"):
        list_videos(tmp_path / "empty")
    with pytest.raises(VideoDataError, match="no such folder or file list"):
        list_videos(tmp_path / "nope")
