"""Every bad input of issue 2 gets a clear error naming the file and the problem (or works)."""
from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from _timing import scaled
from _videos import block_frames, index_frames, read_index, write_audio_only, write_video
from videodata.datasets import UCF101Videos
from videodata.decode import decode_video, probe_video, read_clip
from videodata.errors import SplitFileError, VideoDecodeError
from videodata.records import VideoRecord
from videodata.sets.ucf101 import load_split, read_class_names

torch.set_num_threads(1)


def _decode_error(path, fn=read_clip) -> VideoDecodeError:
    with pytest.raises(VideoDecodeError) as info:
        if fn is read_clip:
            read_clip(path, 4, 16)
        else:
            fn(path)
    assert str(path) in str(info.value)
    return info.value


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in str(_decode_error(path))


def test_missing_file(tmp_path):
    assert "file not found" in str(_decode_error(tmp_path / "gone.avi"))


def test_text_renamed_as_video(tmp_path):
    path = tmp_path / "notes.avi"
    path.write_text("this is a text file, not a video\n" * 20)
    assert "not a readable video container" in str(_decode_error(path))


def test_audio_only_file(tmp_path):
    path = write_audio_only(tmp_path / "song.mp4")
    err = _decode_error(path, probe_video)
    assert "no video stream" in str(err) and "audio/aac" in str(err)


def test_truncated_real_ucf_video(tmp_path, ucf_videos):
    source = ucf_videos / "Diving" / "v_Diving_g01_c01.avi"   # 259 frames
    path = tmp_path / "cut.avi"
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _decode_error(path, lambda p: decode_video(p, 16))
    assert "truncated" in str(err) and "259 frames" in str(err)
    with pytest.raises(VideoDecodeError, match="truncated"):
        read_clip(path, 8, 16, start=240)
    # The intact first half still reads: the paper's "first 32 frames" protocol keeps working.
    assert read_clip(path, 8, 16).shape == (8, 16, 16, 3)


def test_truncated_written_video(tmp_path):
    full = write_video(tmp_path / "full.mp4", block_frames(30, 32, 48), codec="libx264")
    path = tmp_path / "cut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])   # mp4 loses its moov atom
    _decode_error(path)


def test_one_frame_video(tmp_path):
    path = write_video(tmp_path / "one.avi", index_frames(1))
    clip = read_clip(path, 5, 16)
    assert clip.shape == (5, 16, 16, 3) and read_index(clip) == [0] * 5
    assert np.array_equal(clip[0], clip[-1])
    assert decode_video(path, 16).shape == (1, 16, 16, 3)


def test_video_smaller_than_the_crop_is_upscaled(tmp_path):
    path = write_video(tmp_path / "tiny.avi", block_frames(4, 16, 16))
    clip = read_clip(path, 4, 64)
    assert clip.shape == (4, 64, 64, 3) and clip.std() > 10


def test_path_with_spaces_and_non_ascii(tmp_path):
    folder = tmp_path / "vidéos d'été" / "日本 語"
    path = write_video(folder / "clip é ü 1.avi", index_frames(6))
    assert read_index(read_clip(path, 6, 16)) == list(range(6))
    assert probe_video(path).num_frames == 6


def test_decode_error_pickles_and_survives_a_dataloader_worker(tmp_path):
    err = VideoDecodeError(tmp_path / "x.avi", "empty file (0 bytes)")
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (err.path, err.reason, str(err))
    good = write_video(tmp_path / "good.avi", block_frames(4, 32, 32))
    bad = tmp_path / "bad clip.avi"
    bad.write_bytes(b"")
    recs = [VideoRecord(str(good), "good.avi", 0, "A", 1, 1), VideoRecord(str(bad), "bad clip.avi", 0, "A", 1, 2)]
    ds = UCF101Videos(recs, 4, 16)
    x, y = ds[0]
    assert x.shape == (3, 4, 16, 16) and y == 0
    # forkserver: a worker forked from this (threaded, FFmpeg-using) process once deadlocked.
    # A hung worker fails the test after the DataLoader's own timeout (stretched on a slow machine)
    # instead of using up the suite's 900 s.
    loader = DataLoader(ds, batch_size=1, num_workers=1, multiprocessing_context="forkserver",
                        timeout=scaled(60))
    with pytest.raises(VideoDecodeError, match=r"bad clip\.avi.*empty file"):
        list(loader)


# --------------------------------------------------------------------------- split files

@pytest.fixture()
def lists(tmp_path):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_bytes(b"1 Alpha\r\n2 Beta\r\n")
    (d / "trainlist01.txt").write_bytes(b"Alpha/v_Alpha_g08_c01.avi 1\r\n")
    (d / "testlist01.txt").write_bytes(b"Beta/v_Beta_g01_c01.avi\r\n")
    return d


def test_missing_split_file(lists, tmp_path):
    (lists / "testlist01.txt").unlink()
    with pytest.raises(SplitFileError, match=r"testlist01\.txt: split file not found"):
        load_split(tmp_path, lists, 1, "test")
    shutil.rmtree(lists)
    with pytest.raises(SplitFileError, match=r"classInd\.txt: split file not found"):
        read_class_names(lists)


@pytest.mark.parametrize("line", [b"Alpha/v_Alpha_g08_c01.avi one", b"Alpha/v_Alpha_g08_c01.avi 1 extra",
                                  b"v_Alpha_g08_c01.avi 1", b"Alpha/v_Alpha.avi 1",
                                  b"Alpha/v_Alpha_g08_c01.avi 2"])
def test_malformed_split_line(lists, tmp_path, line):
    (lists / "trainlist01.txt").write_bytes(b"Alpha/v_Alpha_g09_c01.avi 1\r\n" + line + b"\r\n")
    with pytest.raises(SplitFileError, match=r"trainlist01\.txt:2: ") as info:
        load_split(tmp_path, lists, 1, "train")
    assert info.value.line == 2


def test_class_missing_from_classind(lists, tmp_path):
    (lists / "testlist01.txt").write_bytes(b"Beta/v_Beta_g01_c01.avi\r\nGamma/v_Gamma_g02_c01.avi\r\n")
    with pytest.raises(SplitFileError, match=r"testlist01\.txt:2: class 'Gamma' is not in .*classInd\.txt"):
        load_split(tmp_path, lists, 1, "test")


def test_malformed_class_index(lists):
    (lists / "classInd.txt").write_bytes(b"1 Alpha\r\n3 Beta\r\n")
    with pytest.raises(SplitFileError, match=r"classInd\.txt:2: class indices must run"):
        read_class_names(lists)
