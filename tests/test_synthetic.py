"""The synthetic UCF-style set: real files in the UCF101 layout, motion-only classes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from videodata.decode import decode_video
from videodata.folder import list_videos
from videodata.synthetic import (STAMP_NAME, SyntheticConfig, SyntheticSetError, generate, labeled_specs, render,
                                 unlabeled_specs)
from videodata.sets.ucf101 import load_split, read_class_names


def tiny(root: Path, **overrides) -> SyntheticConfig:
    params = dict(root=str(root), num_classes=3, clips_per_group=1, unlabeled_videos=6, frames=8,
                  frame_width=32, frame_height=24, workers=1, progress=False)
    params.update(overrides)
    return SyntheticConfig(**params)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("synthetic") / "set")
    return cfg, generate(cfg)


def decoded(path) -> np.ndarray:
    return decode_video(path, size=(24, 32), resize="stretch")


def test_layout_and_splits_parse_like_ucf101(tiny_set):
    cfg, layout = tiny_set
    assert read_class_names(layout.lists_dir) == cfg.class_names
    for split in (1, 2, 3):
        test_groups = set(range(7 * (split - 1) + 1, 7 * split + 1))
        train = load_split(layout.video_root, layout.lists_dir, split, "train")
        test = load_split(layout.video_root, layout.lists_dir, split, "test")
        assert len(test) == 3 * 7 and len(train) == 3 * 18
        assert {r.group for r in test} == test_groups
        assert not {r.group for r in train} & test_groups
        for rec in train + test:
            assert Path(rec.path).is_file()
            assert rec.class_name == cfg.class_names[rec.label]
            assert rec.relpath.startswith(f"{rec.class_name}/v_{rec.class_name}_g")
    for name in ("classInd.txt", "trainlist01.txt", "testlist03.txt"):
        raw = (layout.lists_dir / name).read_bytes()
        assert raw.count(b"\r\n") == raw.count(b"\n") > 0  # CRLF like the official lists
    test_line = (layout.lists_dir / "testlist01.txt").read_bytes().split(b"\r\n")[0]
    assert len(test_line.split()) == 1  # test lists carry no label
    pool = list_videos(layout.unlabeled_dir)
    assert len(pool) == cfg.unlabeled_videos and all(r.label == -1 for r in pool)


def test_default_pool_is_larger_than_labeled_train_set():
    cfg = SyntheticConfig()
    train_per_class = 18 * cfg.clips_per_group
    assert cfg.unlabeled_videos > cfg.num_classes * train_per_class


def test_round_trip_matches_drawn_frames(tiny_set):
    cfg, layout = tiny_set
    for spec in labeled_specs(cfg)[::20] + unlabeled_specs(cfg)[:2]:
        drawn = render(spec, cfg).astype(np.float64)
        got = decoded(layout.root / spec.relpath).astype(np.float64)
        assert got.shape == drawn.shape == (cfg.frames, cfg.frame_height, cfg.frame_width, 3)
        mse = np.mean((got - drawn) ** 2)
        psnr = 10 * np.log10(255**2 / mse)
        assert psnr > 27, f"{spec.relpath}: PSNR {psnr:.1f} dB"  # mpeg4 + 4:2:0 chroma loss only


def test_deterministic_by_seed(tiny_set, tmp_path):
    cfg, layout = tiny_set
    other = generate(tiny(tmp_path / "again", unlabeled_videos=0))
    rel = labeled_specs(cfg)[7].relpath
    np.testing.assert_array_equal(decoded(layout.root / rel), decoded(other.root / rel))
    reseeded = generate(tiny(tmp_path / "seed1", unlabeled_videos=0, seed=1))
    assert np.abs(decoded(reseeded.root / rel).astype(int) - decoded(layout.root / rel)).mean() > 5


def test_idempotent_resumes_and_regenerates(tmp_path):
    cfg = tiny(tmp_path / "set", num_classes=2, unlabeled_videos=2)
    layout = generate(cfg)
    one = layout.root / labeled_specs(cfg)[3].relpath
    first_mtime = one.stat().st_mtime_ns
    assert generate(cfg) == layout and one.stat().st_mtime_ns == first_mtime  # reused

    # A killed run: the stamp says "not complete" and a video is missing -> only it is redrawn.
    stamp = json.loads((layout.root / STAMP_NAME).read_text())
    (layout.root / STAMP_NAME).write_text(json.dumps({**stamp, "complete": False}))
    gone = layout.root / labeled_specs(cfg)[5].relpath
    gone.unlink()
    generate(cfg)
    assert gone.is_file() and one.stat().st_mtime_ns == first_mtime

    # A changed config regenerates every video.
    changed = tiny(tmp_path / "set", num_classes=2, unlabeled_videos=2, seed=3)
    generate(changed)
    assert one.stat().st_mtime_ns != first_mtime
    assert json.loads((layout.root / STAMP_NAME).read_text())["fingerprint"] == changed.fingerprint


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "UCF-101").mkdir()
    with pytest.raises(SyntheticSetError, match="no synthetic.json"):
        generate(tiny(tmp_path))


def _affine_motion_features(videos: np.ndarray) -> np.ndarray:
    """Per video: global affine optical flow (translation, divergence, curl) fitted per frame
    pair by least squares on brightness constancy; median, mean |.| and std over time."""
    gray = videos.astype(np.float64).mean(-1) / 255
    iy, ix = np.gradient(gray, axis=(2, 3))
    it = gray[:, 1:] - gray[:, :-1]
    ix, iy = (ix[:, 1:] + ix[:, :-1]) / 2, (iy[:, 1:] + iy[:, :-1]) / 2
    h, w = gray.shape[2:]
    yy, xx = np.mgrid[0:h, 0:w]
    xx, yy = (xx - w / 2) / h, (yy - h / 2) / h
    a = np.stack([ix, iy, ix * xx, ix * yy, iy * xx, iy * yy], -1).reshape(*it.shape[:2], -1, 6)
    b = -it.reshape(*it.shape[:2], -1)
    ata = np.einsum("ntpi,ntpj->ntij", a, a) + 1e-3 * np.eye(6)
    p = np.linalg.solve(ata, np.einsum("ntpi,ntp->nti", a, b)[..., None])[..., 0]
    q = np.stack([p[..., 0], p[..., 1], p[..., 2] + p[..., 5], p[..., 4] - p[..., 3]], -1)
    return np.concatenate([np.median(q, 1), np.abs(q).mean(1), q.std(1)], 1)


@pytest.mark.parametrize("num_classes", [10])
def test_single_frame_is_uninformative_but_motion_is(num_classes):
    """Logistic regression on one frame's pixels stays near chance; the same on motion features
    does far better (doubles as a learnability check on the default motion families)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cfg = SyntheticConfig(root="unused", num_classes=num_classes, unlabeled_videos=300, frames=10,
                          frame_width=42, frame_height=32)
    specs = unlabeled_specs(cfg)  # balanced over classes
    videos = np.stack([render(s, cfg) for s in specs])
    labels = np.array([s.motion for s in specs])
    first = videos[:, 0].reshape(len(videos), 8, 4, 14, 3, 3).mean(axis=(2, 4)).reshape(len(videos), -1)
    motion = _affine_motion_features(videos)

    def accuracy(features):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        return cross_val_score(clf, features, labels, cv=3).mean()

    chance = 1 / num_classes
    single, moving = accuracy(first), accuracy(motion)
    assert single < chance + 0.1, f"a single frame reveals the class: {single:.2f}"
    assert moving > 0.6 and moving > single + 0.4, f"motion too weak: {moving:.2f} vs {single:.2f}"


def test_rendering_in_passes_of_frames_equals_frame_by_frame(monkeypatch):
    """render() draws several frames per numpy pass; how many must not change a pixel."""
    import videodata.synthetic as synthetic

    for cfg in (SyntheticConfig(frames=12), SyntheticConfig(frames=12, camera="mixed", background_texture=0.2)):
        specs = labeled_specs(cfg)[::97][:3]
        monkeypatch.setattr(synthetic, "_FRAMES_PER_PASS", 1)
        one_by_one = [render(spec, cfg) for spec in specs]
        for per_pass in (5, 64):
            monkeypatch.setattr(synthetic, "_FRAMES_PER_PASS", per_pass)
            assert all(np.array_equal(render(spec, cfg), ref) for spec, ref in zip(specs, one_by_one))


@pytest.mark.parametrize("ss", [1, 2, 3])
def test_subpixel_coverage_is_the_mean_of_each_block(ss):
    from videodata.synthetic import _coverage

    mask = np.random.default_rng(ss).random((4, 6 * ss, 5 * ss)) < 0.4
    expected = mask.reshape(4, 6, ss, 5, ss).mean(axis=(2, 4), dtype=np.float32)
    assert _coverage(mask, ss).dtype == np.float32
    assert np.array_equal(_coverage(mask, ss), expected)
