"""Stabilisation (videodata.stabilise) on real encoded videos: camera motion removed, a static
camera left alone, unstabilisable videos refused with a reason, and the clip cache's handling.

Residual motion is the global shift between consecutive frames found by phase correlation
(`cv2.phaseCorrelate`, Hann window, greyscale float frames) at 64x64: the size and resize the
clip cache stores (`decode_video` / `decode_stabilised(path, 64)` of 128x96 videos: 96x96 centre
crop scaled by 2/3). The synthetic scenes have a textured static background (the default smooth
ones have nothing to track) and a slow object, so the measured shift is the camera's.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from videodata import synthetic
from videodata.cache import REPORT_NAME, ClipCache, cache_fingerprint
from videodata.decode import decode_video, iter_native_frames
from videodata.errors import VideoDataError
from videodata.folder import list_videos
from videodata.stabilise import (StabilisationError, StabiliseConfig, crop_window, decode_stabilised,
                                 stabilise)
from videodata.synthetic import SyntheticConfig

SIZE = 64


def scene(camera: str, amplitude: float = 0.3, **kw) -> SyntheticConfig:
    return SyntheticConfig(root="unused", camera=camera, camera_amplitude=amplitude, frame_width=128, frame_height=96,
                           frames=16, background_texture=0.3, speed_range=(0.002, 0.004),
                           size_range=(0.1, 0.2), **kw)


def write_scene(folder: Path, name: str, cfg: SyntheticConfig, index: int) -> str:
    spec = synthetic.labeled_specs(cfg)[index]
    path = folder / f"{name}.avi"
    synthetic.write_video(path, synthetic.render(spec, cfg), cfg.fps, cfg.bit_rate)
    return str(path)


def residual_shifts(clip: np.ndarray) -> np.ndarray:
    """|global shift| in pixels between consecutive frames (phase correlation)."""
    window = cv2.createHanningWindow((clip.shape[2], clip.shape[1]), cv2.CV_32F)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in clip]
    return np.array([np.hypot(*cv2.phaseCorrelate(a, b, window)[0]) for a, b in zip(grey, grey[1:])])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, list[str]]:
    """Three videos per camera motion (a pan of 0.4 frame heights over 16 frames is ~1.7 px per
    frame at 64x64; a shake of up to 0.05 frame heights is ~2-3 px), plus unstabilisable ones."""
    folder = tmp_path_factory.mktemp("stabilise")
    out = {cam: [write_scene(folder, f"{cam}{i}", scene(cam, amp), 40 * i + 7) for i in range(3)]
           for cam, amp in (("none", 0.3), ("pan", 0.4), ("shake", 0.05))}
    flat = np.full((12, 96, 128, 3), (90, 120, 60), np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (12, 96, 128, 3), dtype=np.uint8)
    out["flat"] = [write_scene_frames(folder / "flat.avi", flat)]
    out["noise"] = [write_scene_frames(folder / "noise.avi", noise)]
    return out


def write_scene_frames(path: Path, frames: np.ndarray) -> str:
    synthetic.write_video(path, frames, 25, 2_000_000)
    return str(path)


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("field, value", [
    ("method", "surf"), ("fill", "mirror"), ("estimate_size", 8), ("estimate_size", 100.0),
    ("max_features", 5), ("max_features", 0), ("min_inliers", 2), ("min_matches", 3), ("ransac_threshold", 0),
    ("max_step", 1.5), ("min_det", 1.0), ("max_det", 0.9), ("max_perspective", 1.0), ("min_coverage", -0.1),
    ("min_frames", 0), ("min_frames", 40), ("clip_frames", 1), ("max_clips", 0), ("skip", -1),
    ("min_inlier_fraction", 1.5), ("matcher", "flann"), ("check_steps", 1), ("ransac_threshold", float("nan")),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"StabiliseConfig\.{field} must be"):
        StabiliseConfig(**{field: value})


def test_config_as_dict_is_plain_and_tells_configs_apart():
    cfg = StabiliseConfig()
    data = cfg.as_dict()
    assert json.loads(json.dumps(data)) == data and data["version"] == 2 and data["method"] == "flow"
    assert replace(cfg, min_inliers=12).as_dict() != data
    # the original's SIFT: every keypoint (nfeatures=0), on the native frame
    assert StabiliseConfig(method="sift", max_features=0, estimate_size=0).max_features == 0
    assert StabiliseConfig(skip=2, max_clips=100).frames_needed() == 2 + 100 * 34


def test_crop_window_matches_decode_video_geometry():
    assert crop_window(240, 320, 64, 64, "crop") == (40, 0, 240, 240)
    assert crop_window(240, 320, 48, 128, "crop") == (0, 60, 320, 120)
    assert crop_window(240, 320, 64, 64, "stretch") == (0, 0, 320, 240)


# ----------------------------------------------------------------------------- synthetic camera

def test_synthetic_camera_default_unchanged_and_deterministic():
    base = SyntheticConfig()
    assert "camera" not in base.content_dict() and "background_texture" not in base.content_dict()
    assert base.fingerprint == "158ca3007c28d887"  # the default set's hash from before cameras existed
    assert scene("pan").fingerprint != scene("zoom").fingerprint != scene("none").fingerprint
    for bad in (dict(camera="dolly"), dict(camera="pan", camera_amplitude=0), dict(background_texture=2)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SyntheticConfig(**bad)
    small = dict(frame_width=64, frame_height=48, frames=6)
    still, pan = scene("none", **{}), scene("pan")
    still, pan = replace(still, **small), replace(pan, **small)
    spec = synthetic.labeled_specs(pan)[3]
    moving = synthetic.render(spec, pan)
    np.testing.assert_array_equal(moving, synthetic.render(spec, pan))
    # The camera only moves over the same scene: frame 0 (no offset yet) is the static view.
    np.testing.assert_array_equal(moving[0], synthetic.render(spec, still)[0])
    assert np.abs(moving[-1].astype(int) - synthetic.render(spec, still)[-1]).mean() > 5


# ----------------------------------------------------------------------------- stabilisation

@pytest.mark.parametrize("camera, before_min", [("pan", 1.2), ("shake", 1.5)])
def test_camera_motion_is_removed(videos, camera, before_min):
    for path in videos[camera]:
        before = residual_shifts(decode_video(path, SIZE))
        clip, report = decode_stabilised(path, SIZE, return_report=True)
        after = residual_shifts(clip)
        assert clip.shape == (16, SIZE, SIZE, 3) and clip.dtype == np.uint8
        (only,) = report.clips  # 16 frames: one clip, shorter than clip_frames, kept whole
        assert (only.start, only.frames, only.status, only.reason, len(only.inliers)) == (0, 16, "stabilised", None, 15)
        assert np.median(before) > before_min, (path, before)
        assert np.median(after) < 0.25 and after.max() < 0.5, (path, after)


def test_static_camera_stays_unchanged(videos):
    for path in videos["none"]:
        plain = decode_video(path, SIZE)
        clip = decode_stabilised(path, SIZE)
        assert clip.shape == plain.shape
        # cv2's area resize vs FFmpeg's differ by ~1.6 grey levels on this texture; the warps add little.
        assert np.abs(clip.astype(int) - plain).mean() < 3
        assert residual_shifts(clip).max() < 0.5
        assert residual_shifts(clip[[0, -1]])[0] < 0.5  # no drift over the video
    # stabilise() on native frames: near-identity warps keep the pixels.
    native = np.stack(list(iter_native_frames(videos["none"][0])))
    out = stabilise(native)
    assert out.shape == native.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], native[0])
    assert np.abs(out.astype(int) - native).mean() < 2


@pytest.mark.parametrize("kind, reason", [("flat", "too few keypoints at frame 0"),
                                          ("noise", "too few (inliers|tracked points) at frame 1")])
def test_unstabilisable_video_raises_with_reason(videos, kind, reason):
    path = videos[kind][0]
    with pytest.raises(StabilisationError, match=rf"no clip could be stabilised .*first: {reason}") as info:
        decode_stabilised(path, SIZE, cfg=StabiliseConfig(min_frames=4))
    assert info.value.path == path and path in str(info.value) and isinstance(info.value, VideoDataError)
    with pytest.raises(StabilisationError, match=reason):
        stabilise(np.stack(list(iter_native_frames(path))))


def test_features_methods_and_black_fill(videos):
    path = videos["pan"][0]
    for method in ("orb", "sift"):
        clip = decode_stabilised(path, SIZE, cfg=StabiliseConfig(method=method, max_features=300))
        assert clip.shape == (16, SIZE, SIZE, 3) and np.median(residual_shifts(clip)) < 0.5, method
    for matcher in ("bf", "flann_kdtree"):  # the original's settings: SIFT, every keypoint, native frame
        cfg = StabiliseConfig(method="sift", max_features=0, estimate_size=0, matcher=matcher, min_inliers=4,
                              min_inlier_fraction=0.0, check_steps=False, min_coverage=0.0)
        clip = decode_stabilised(path, SIZE, cfg=cfg)
        # Descriptor keypoints are less precise than LK tracks (ORB's lie on a 1.2x scale pyramid).
        assert clip.shape == (16, SIZE, SIZE, 3) and np.median(residual_shifts(clip)) < 0.5, matcher
    # fill="black" leaves what the last frame does not cover black; "previous" shows the scene there.
    black = decode_stabilised(path, (48, 64), resize="stretch", cfg=StabiliseConfig(fill="black"))
    prev = decode_stabilised(path, (48, 64), resize="stretch")
    assert black.shape == prev.shape == (16, 48, 64, 3)
    uncovered = black[-1].max(axis=-1) == 0
    assert uncovered.mean() > 0.1 and prev[-1][uncovered].mean() > 20


def test_warp_leaving_the_frame_ends_the_clip_and_the_next_starts_afresh(videos):
    path = videos["pan"][1]
    # Demand near-full coverage: the pan leaves it after a few frames of each clip.
    cfg = StabiliseConfig(min_coverage=0.9, min_frames=2)
    clip, report = decode_stabilised(path, SIZE, cfg=cfg, return_report=True)
    first, second = report.clips[:2]
    assert 2 <= first.frames < 16 and "leaves the frame" in first.reason and first.status == "stabilised"
    # as the original, the frame that left is thrown away and the next frame is a new reference
    assert second.start == first.frames + 1 and second.frames >= 2
    ends = [c for c in report.clips if c.reason]
    assert report.frames_in == 16 and report.frames_out == clip.shape[0] == 16 - len(ends) + ("ends" in ends[-1].reason)
    with pytest.raises(StabilisationError, match="leaves the frame.*< min_frames 16"):
        decode_stabilised(path, SIZE, cfg=replace(cfg, min_frames=16))
    # a labeled video (plain) keeps every frame: the frame that left starts the next clip
    plain, plain_report = decode_stabilised(path, SIZE, cfg=replace(cfg, on_failure="plain"), return_report=True)
    assert plain.shape[0] == 16 and plain_report.clips[1].start == plain_report.clips[0].frames
    assert {c.status for c in plain_report.clips} == {"stabilised"}


def panning_texture(frames: int, step: int = 3, seed: int = 0) -> np.ndarray:
    """A camera panning `step` px per frame over a smooth random texture: (frames, 96, 128, 3)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((96, 128 + step * frames)).astype(np.float32), (0, 0), 2.0)
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    return np.stack([np.repeat(big[:, step * k:step * k + 128, None], 3, axis=2) for k in range(frames)])


def test_a_camera_motion_video_yields_its_full_number_of_clips(tmp_path):
    """A pan of 111 px over a 128-px frame: chained to frame 0 the warp leaves the frame; cut into
    clips, each against its own first frame, every clip survives whole."""
    frames = panning_texture(2 + 3 * 12)
    path = write_scene_frames(tmp_path / "pan.avi", frames)
    cfg = StabiliseConfig(clip_frames=12, min_frames=8, skip=2)
    clip, report = decode_stabilised(path, SIZE, cfg=cfg, return_report=True)
    assert [(c.start, c.frames, c.status) for c in report.clips] == [(2, 12, "stabilised"), (14, 12, "stabilised"),
                                                                      (26, 12, "stabilised")]
    assert clip.shape == (36, SIZE, SIZE, 3) and report.kept() == [(0, 12, "stabilised"), (12, 12, "stabilised"),
                                                                   (24, 12, "stabilised")]
    for offset, n, _ in report.kept():
        assert np.median(residual_shifts(clip[offset:offset + n])) < 0.3
    # each clip's first frame is its reference: the decoded frame, unwarped
    plain = decode_video(path, SIZE)
    for offset, _, _ in report.kept():
        start = report.clips[offset // 12].start
        assert np.abs(clip[offset].astype(int) - plain[start]).mean() < 3
    assert np.median(residual_shifts(plain)) > 1.0
    # capped at max_clips, as the original's `for _ in range(100)`
    assert len(decode_stabilised(path, SIZE, cfg=replace(cfg, max_clips=2), return_report=True)[1].clips) == 2


def test_a_clip_whose_frames_cannot_be_matched_drops_only_that_clip():
    frames = panning_texture(40)
    frames[15] = np.random.default_rng(1).integers(0, 256, frames[15].shape, dtype=np.uint8)  # a glitch
    cfg = StabiliseConfig(clip_frames=10, min_frames=4)
    out, report = stabilise(frames, cfg, return_report=True)
    # clip 2 (reference frame 10) fails at frame 15; as the original, the next clip starts at frame 16
    assert [(c.start, c.status) for c in report.clips] == [(0, "stabilised"), (10, "dropped"), (16, "stabilised"),
                                                            (26, "stabilised"), (36, "stabilised")]
    assert "at frame 15" in report.clips[1].reason and report.clips[1].frames == 0
    assert [c.frames for c in report.clips] == [10, 0, 10, 10, 4] and out.shape == (34, 96, 128, 3)
    # kept plain instead (a labeled video): every frame is there, the failed clip as decoded
    plain, plain_report = stabilise(frames, replace(cfg, on_failure="plain"), return_report=True)
    assert plain.shape == frames.shape and [c.status for c in plain_report.clips][:2] == ["stabilised", "plain"]
    np.testing.assert_array_equal(plain[10:16], frames[10:16])
    assert [(c.start, c.frames) for c in plain_report.clips] == [(0, 10), (10, 6), (16, 10), (26, 10), (36, 4)]


# ----------------------------------------------------------------------------- clip cache

def test_cache_with_stabilise_drops_failures_and_has_its_own_fingerprint(videos, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    for name, path in (("a_pan.avi", videos["pan"][0]), ("b_flat.avi", videos["flat"][0]),
                       ("c_shake.avi", videos["shake"][0])):
        os.link(path, src / name)
    records = list_videos(src)
    cfg = StabiliseConfig(clip_frames=6, min_frames=4)
    kw = dict(size=SIZE, max_frames=12, workers=1, videos_per_shard=2, show_progress=False)
    cache = ClipCache.build(records, tmp_path / "cache", stabilise=cfg, **kw)
    # every stabilised clip is one cache item: two of 6 frames from each of the 12 frames kept
    assert [Path(r.path).name for r in cache.records] == ["a_pan.avi"] * 2 + ["c_shake.avi"] * 2
    assert [cache.num_frames(i) for i in range(4)] == [6] * 4
    assert cache.params["stabilise"] == cfg.as_dict()
    report = json.loads((cache.folder / REPORT_NAME).read_text())
    assert (report["cached"], report["items"], len(report["failed"])) == (2, 4, 1)
    failed = report["failed"][0]
    assert failed["path"].endswith("b_flat.avi") and "StabilisationError" in failed["error"]
    assert "too few keypoints at frame 0" in failed["error"]
    counts = report["stabilisation"]
    assert (counts["clips_stabilised"], counts["clips_dropped"], counts["frames_kept"], counts["frames_decoded"]) == \
        (4, 0, 24, 24)
    whole = decode_stabilised(records[0].path, SIZE, max_frames=12, cfg=cfg)
    np.testing.assert_array_equal(np.concatenate([cache.clip(0, 6), cache.clip(1, 6)]), whole)

    # A rebuild reuses the folder (no shard is decoded again).
    built = []
    again = ClipCache.build(records, tmp_path / "cache", stabilise=cfg, on_shard_done=built.append, **kw)
    assert again.folder == cache.folder and built == []
    # Another stabilise config, or none, is another cache; none hashes exactly as before.
    fp = dict(size=SIZE, max_frames=12, stride=1, resize="crop", videos_per_shard=2)
    other = cache_fingerprint(records, stabilise=replace(cfg, min_inliers=12).as_dict(), **fp)
    plain = cache_fingerprint(records, **fp)
    assert len({cache.fingerprint, other, plain}) == 3
    digest = hashlib.sha256(json.dumps({"format": "vganbench.clipcache/1", "size": [SIZE, SIZE],
                                        "max_frames": 12, "stride": 1, "resize": "crop",
                                        "videos_per_shard": 2}, sort_keys=True).encode())
    for rec in records:
        st = os.stat(rec.path)
        digest.update(json.dumps([os.path.abspath(rec.path), st.st_size, st.st_mtime_ns, rec.relpath,
                                  rec.label, rec.class_name, rec.group, rec.clip]).encode())
    assert plain == digest.hexdigest()[:16]
    plain_cache = ClipCache.build(records, tmp_path / "cache", **kw)
    assert plain_cache.fingerprint == plain and len(plain_cache) == 3 and "stabilise" not in plain_cache.params


def test_cache_keeps_an_unstabilisable_video_plain_when_asked(videos, tmp_path, monkeypatch):
    """on_failure="plain" (the transfer recipes' test caches): the flat video is cached as decoded,
    unstabilised, and report.json says so; the stabilisable one is stabilised as before."""
    src = tmp_path / "videos"
    src.mkdir()
    for name, path in (("a_pan.avi", videos["pan"][0]), ("b_flat.avi", videos["flat"][0])):
        os.link(path, src / name)
    records = list_videos(src)
    kw = dict(size=SIZE, max_frames=12, workers=1, videos_per_shard=2, show_progress=False)
    cfg = StabiliseConfig(on_failure="plain")
    cache = ClipCache.build(records, tmp_path / "cache", stabilise=cfg, **kw)
    assert [Path(r.path).name for r in cache.records] == ["a_pan.avi", "b_flat.avi"]
    report = json.loads((cache.folder / REPORT_NAME).read_text())
    assert report["failed"] == [] and len(report["unstabilised"]) == 1
    flat = report["unstabilised"][0]
    assert flat["path"].endswith("b_flat.avi") and "too few keypoints at frame 0" in flat["reason"]
    assert flat["plain_clips"] == flat["clips"] >= 1  # every clip of it kept as decoded
    assert report["stabilisation"]["videos_with_plain_clips"] == 1
    # kept as decoded, whole (OpenCV's area resize, not FFmpeg's: within 3 grey levels)
    assert cache.num_frames(1) == 12
    assert np.abs(cache.clip(1, 12).astype(int) - decode_video(records[1].path, SIZE, max_frames=12)).mean() < 3
    np.testing.assert_array_equal(cache.clip(0, 12), decode_stabilised(records[0].path, SIZE, max_frames=12, cfg=cfg))
    dropped = ClipCache.build(records, tmp_path / "cache", stabilise=StabiliseConfig(skip=2, min_frames=8), **kw)
    assert dropped.fingerprint != cache.fingerprint and len(dropped) == 1
    with pytest.raises(ValueError, match="on_failure must be one of"):
        StabiliseConfig(on_failure="skip")
    # a cache prepared ahead (`python -m videodata.prepare --stabilise plain|drop`) is the one the
    # transfer recipes (cache.stabilise=true) and pretraining (data.stabilise=true) then reuse
    from transfer.sweeps.recipe import CacheRecipe
    from videodata.prepare import build_caches
    prepared = build_caches({"x": records, "y": records}, str(tmp_path / "cache"), size=SIZE, max_frames=12,
                            workers=1, videos_per_shard=2, stabilise="plain", show_progress=False)
    assert prepared["x"].folder == cache.folder
    assert CacheRecipe(stabilise=True).stabilise_config() == cfg and CacheRecipe().stabilise_config() is None
    asked = []
    monkeypatch.setattr(ClipCache, "build", lambda *args, stabilise, **kw: asked.append(stabilise))
    build_caches({"x": records}, str(tmp_path / "cache"), size=SIZE, max_frames=12, stabilise="drop")
    assert asked == [StabiliseConfig(skip=2)]  # pretraining's data.stabilise defaults (2 frames skipped)


# ----------------------------------------------------------------------------- real UCF101

@pytest.mark.shared_data
def test_real_ucf101_clips(ucf_videos):
    paths = sorted(ucf_videos.glob("*/*.avi"))[:3]
    assert paths
    for path in paths:
        clip, report = decode_stabilised(path, SIZE, max_frames=24, return_report=True)
        assert clip.dtype == np.uint8 and clip.shape[1:] == (SIZE, SIZE, 3)
        assert 16 <= clip.shape[0] <= 24 and report.frames_out == clip.shape[0]
        inliers = report.clips[0].inliers
        assert len(inliers) == report.clips[0].frames - 1 and min(inliers) >= 10
        # The first frame is the reference: as the plain decode, up to the resizer (cv2 vs FFmpeg).
        assert np.abs(clip[0].astype(int) - decode_video(path, SIZE, max_frames=1)[0]).mean() < 3
    wide = decode_stabilised(paths[0], (48, 96), max_frames=8, resize="stretch", cfg=StabiliseConfig(min_frames=4))
    assert wide.shape == (8, 48, 96, 3)


@pytest.mark.shared_data
def test_real_ucf101_clips_keep_nine_in_ten_frames(ucf_videos):
    """Clip by clip, the fast default keeps >= 90% of the 31 real videos' frames in stabilised
    clips (chained to frame 0 over the whole video, 71%: benchmarks/RESULTS.md, Stabilisation)."""
    decoded = kept = 0
    for path in sorted(ucf_videos.glob("*/*.avi")):
        _, report = decode_stabilised(path, 32, return_report=True)
        decoded, kept = decoded + report.frames_in, kept + report.frames_out
    assert decoded > 5000 and kept >= 0.9 * decoded


# ----------------------------------------------------------------------------- benchmark section

def test_benchmark_projection_and_section():
    from benchmarks import bench_stabilise as bench

    proj = bench.project(1.0)  # 1 ms per frame: 0.186 s per mean UCF101 video
    assert proj["s_per_video"] == pytest.approx(0.186)
    assert proj["core"]["ideal_s"] == pytest.approx(13_320 * 0.186)
    assert proj["node"]["ideal_s"] == pytest.approx(13_320 * 0.186 / 16)
    assert proj["nodes"]["shards_s"] == pytest.approx(2 * 64 * 0.186)  # 209 shards on 128 workers
    run = lambda s, failed=0, kept=900: {"seconds": s, "decoded": 1000, "kept": kept, "clips": 30, "dropped": 2,
                                         "failed": failed, "reasons": ["x.avi: too few keypoints"] * failed,
                                         "shifts": [0.1, 0.2, 0.3]}
    assert bench.residual_shifts(np.zeros((1, 8, 8, 3), np.uint8)) == []
    rows = [bench._row("peer", "peer", "peer", [run(1.0)], 10, None),
            bench._row("default", "ours", "ours", [run(5.0, 1), run(4.0, 1)], 10, StabiliseConfig()),
            bench._row("whole", "whole", "variant", [run(3.0, 2, kept=700)], 10, StabiliseConfig(max_clips=1))]
    for row in rows:
        row["vs_peer"] = row["videos_per_s"] / rows[0]["videos_per_s"]
        row["frames_vs_peer"] = rows[0]["ms_per_frame"] / row["ms_per_frame"]
    assert rows[1]["kept_share"] == 0.9 and rows[1]["residual_px"] == pytest.approx(0.2)
    rows[2]["kept_share"] = 0.7  # bench._measure_set: of every frame of the videos
    info = {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "ram_gib": 8.0, "gpus": [],
            "date": "2026-01-01 00:00 UTC", "load": (0.1, 0.1, 0.1)}
    result = {"command": "python benchmarks/bench_stabilise.py", "quick": False, "rounds": 2,
              "sets": [{"key": "real", "videos": "test videos", "n": 10, "rows": rows}],
              "projection": {"off": bench.project(rows[0]["ms_per_frame"]),
                             "on": bench.project(rows[1]["ms_per_frame"])}}
    text = bench.section(result, info)
    assert text.startswith("## Stabilisation\n") and "**(peer)**" in text and "0.22x" in text
    assert "8 nodes (128 cores)" in text and "x.avi: too few keypoints" in text and "misses the aim" in text
    assert "900 (90%)" in text and "30 / 2 / 1" in text and "over the whole video it kept 70%" in text
