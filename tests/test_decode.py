"""PyAV clip reader: real encoded videos written in tmp_path, plus the real UCF101 clips and the
other real videos in ../shared/data when present."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from _videos import block_frames, index_frames, read_index, write_video
from videodata.clips import to_model_input
from videodata.decode import decode_video, probe_video, read_clip, read_uniform_clips, uniform_starts

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=[("mpeg4", "avi", 0), ("mpeg4", "avi", 2),
                                        ("libx264", "mp4", 2), ("libx264", "mkv", 0)],
                ids=["avi-mpeg4", "avi-mpeg4-bframes", "mp4-h264-bframes", "mkv-h264"])
def indexed_video(request, tmp_path_factory):
    codec, ext, b = request.param
    path = tmp_path_factory.mktemp("vid") / f"indexed.{ext}"
    return write_video(path, index_frames(28), fps=25, codec=codec, b_frames=b)


def test_round_trip_blocks(tmp_path):
    frames = block_frames(12, 32, 48)
    for codec, ext in (("mpeg4", "avi"), ("libx264", "mp4")):
        path = write_video(tmp_path / f"blocks.{ext}", frames, codec=codec)
        got = decode_video(path, (32, 48), resize="stretch")
        assert got.shape == frames.shape and got.dtype == np.uint8
        err = np.abs(got.astype(int) - frames.astype(int))
        assert err.mean() < 4, (codec, err.mean())          # codec loss only
        assert np.median(err) <= 3


def test_probe(indexed_video):
    info = probe_video(indexed_video)
    assert (info.num_frames, info.fps, info.width, info.height) == (28, 25.0, 64, 48)
    assert info.duration == pytest.approx(28 / 25, abs=0.1)


def test_every_frame_once_in_order(indexed_video):
    assert read_index(decode_video(indexed_video, 16)) == list(range(28))


@pytest.mark.parametrize("start,stride,expected", [
    ("first", 1, [0, 1, 2, 3, 4, 5]),
    (9, 1, [9, 10, 11, 12, 13, 14]),
    (5, 3, [5, 8, 11, 14, 17, 20]),
    (25, 1, [25, 26, 27, 27, 27, 27]),      # runs off the end: repeat the last frame
])
def test_clip_frames(indexed_video, start, stride, expected):
    clip = read_clip(indexed_video, 6, 16, start=start, stride=stride)
    assert clip.shape == (6, 16, 16, 3)
    assert read_index(clip) == expected


def test_target_fps_resamples_by_time(indexed_video):
    half = read_clip(indexed_video, 5, 16, start=4, target_fps=12.5)
    assert read_index(half) == [4, 6, 8, 10, 12]
    double = read_clip(indexed_video, 6, 16, start=4, target_fps=50)
    assert read_index(double) == [4, 4, 5, 5, 6, 6]


def test_random_start_is_reproducible_and_in_range(indexed_video):
    a = read_clip(indexed_video, 8, 16, start="random", rng=np.random.default_rng(3))
    b = read_clip(indexed_video, 8, 16, start="random", rng=np.random.default_rng(3))
    assert np.array_equal(a, b)
    starts = {read_index(read_clip(indexed_video, 8, 16, start="random", rng=s))[0]
              for s in range(12)}
    assert len(starts) > 3 and min(starts) >= 0 and max(starts) <= 28 - 8


def test_uniform_clips(indexed_video):
    clips = read_uniform_clips(indexed_video, 3, 4, 16)
    assert clips.shape == (3, 4, 16, 16, 3)
    assert uniform_starts(28, 3, 4) == [0, 12, 24]
    assert [read_index(c) for c in clips] == [[0, 1, 2, 3], [12, 13, 14, 15],
                                                            [24, 25, 26, 27]]


def test_decode_video_stride_and_max_frames(indexed_video):
    got = decode_video(indexed_video, 16, stride=4, max_frames=5)
    assert read_index(got) == [0, 4, 8, 12, 16]


def test_crop_takes_the_centre_and_stretch_keeps_all(tmp_path):
    # 64x32 frame: left quarter red, middle half green, right quarter blue.
    img = np.zeros((1, 32, 64, 3), np.uint8)
    img[:, :, :16, 0] = 220
    img[:, :, 16:48, 1] = 220
    img[:, :, 48:, 2] = 220
    path = write_video(tmp_path / "lanes.avi", np.repeat(img, 3, axis=0))
    crop = read_clip(path, 1, 16, resize="crop")[0].astype(int)
    assert crop[..., 1].mean() > 180 and crop[..., 0].mean() < 40 and crop[..., 2].mean() < 40
    stretch = read_clip(path, 1, (16, 32), resize="stretch")[0].astype(int)
    assert stretch[:, :6, 0].mean() > 180 and stretch[:, -6:, 2].mean() > 180


def test_rectangular_size_and_upscaling(tmp_path):
    path = write_video(tmp_path / "small.avi", block_frames(4, 16, 24))
    clip = read_clip(path, 4, (40, 56))     # larger than the video: upscaled, never an error
    assert clip.shape == (4, 40, 56, 3)


def test_to_model_input():
    clip = np.zeros((4, 8, 8, 3), np.uint8)
    clip[..., 0] = 255
    x = to_model_input(clip)
    assert x.shape == (3, 4, 8, 8) and x.dtype == torch.float32
    assert x[0].eq(1).all() and x[1:].eq(-1).all()
    batch = to_model_input(np.stack([clip, clip]))
    assert batch.shape == (2, 3, 4, 8, 8) and torch.equal(batch[1], x)
    with pytest.raises(TypeError):
        to_model_input(clip.astype(np.float32))


def test_bad_arguments(indexed_video):
    for kw in ({"stride": 0}, {"target_fps": 0}, {"start": -1}, {"start": "middle"},
               {"resize": "pad"}):
        with pytest.raises(ValueError):
            read_clip(indexed_video, 4, 16, **kw)


# --------------------------------------------------------------------------- real data

def _sources_frame_counts(shared_data) -> dict[str, int]:
    """Frame counts from the UCF-101 table of SOURCES.md (decoded-frame counts via ffprobe)."""
    counts = {}
    for line in (shared_data / "SOURCES.md").read_text().splitlines():
        m = re.match(r"\| `((?:UCF-101|other-videos)/[^`]+)` \|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            numeric = [c for c in cells if re.fullmatch(r"\d+", c)]
            # UCF rows: size, frames; other-videos rows: size, frames -> the second integer.
            counts[m.group(1)] = int(numeric[1])
    return counts


def test_real_ucf_clips(shared_data, ucf_videos):
    counts = _sources_frame_counts(shared_data)
    ucf = {k: v for k, v in counts.items() if k.startswith("UCF-101/")}
    assert len(ucf) == 31 and counts["UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"] == 164
    for rel, frames in ucf.items():
        path = shared_data / rel
        info = probe_video(path)
        assert (info.num_frames, info.width, info.height) == (frames, 320, 240), rel
        assert info.fps in (25.0, pytest.approx(29.97, abs=0.01)), rel
        video = decode_video(path, 16)
        assert video.shape == (frames, 16, 16, 3) and video.dtype == np.uint8, rel
        assert video.std() > 5, rel                       # real content, not a blank frame
        clip = read_clip(path, 8, 16, start=frames // 2)  # seek path agrees with full decode
        assert np.array_equal(clip, video[frames // 2: frames // 2 + 8]), rel


def test_real_ucf_paper_clip(ucf_videos):
    clip = read_clip(ucf_videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", 32, 64)
    assert clip.shape == (32, 64, 64, 3) and clip.dtype == np.uint8
    x = to_model_input(clip)
    assert x.shape == (3, 32, 64, 64) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.1


def test_other_real_videos(shared_data):
    counts = _sources_frame_counts(shared_data)
    others = {k: v for k, v in counts.items() if k.startswith("other-videos/")}
    assert len(others) == 8
    for rel, frames in others.items():
        path = shared_data / rel
        assert probe_video(path).num_frames == frames, rel
        assert len(decode_video(path, 16)) == frames, rel
        video = decode_video(path, 16, max_frames=40)
        start = min(20, frames - 1)
        clip = read_clip(path, 6, 16, start=start)
        expected = list(video[start:start + 6]) + [video[-1]] * max(0, start + 6 - len(video))
        assert np.array_equal(clip, np.stack(expected[:6])), rel
    short = read_clip(shared_data / "other-videos" / "video_0.mov", 8, 16)   # 3-frame mov
    assert np.array_equal(short[3:], np.repeat(short[2:3], 5, axis=0))
