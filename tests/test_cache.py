"""Decode-once clip cache: equals direct decode, resumes, invalidates, reports bad videos."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from videodata.cache import REPORT_NAME, ClipCache
from videodata.clips import ClipBatchSampler, ClipDataset, collate_clips
from videodata.decode import read_clip, read_uniform_clips, uniform_starts
from videodata.errors import VideoDataError
from videodata.synthetic import SyntheticConfig, generate
from videodata.ucf101 import load_split

SIZE = 16


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    cfg = SyntheticConfig(root=str(tmp_path_factory.mktemp("cache_src") / "set"), num_classes=2,
                          clips_per_group=1, unlabeled_videos=0, frames=12, frame_width=32, frame_height=24,
                          workers=1, progress=False)
    layout = generate(cfg)
    recs = load_split(layout.video_root, layout.lists_dir, 1, "train")
    return recs[:20]


def build(records, root, **kw):
    params = dict(size=SIZE, max_frames=10, workers=1, videos_per_shard=8, show_progress=False)
    params.update(kw)
    return ClipCache.build(records, root, **params)


@pytest.fixture(scope="module")
def cache(records, tmp_path_factory):
    return build(records, tmp_path_factory.mktemp("cache"))


def test_cache_equals_direct_decode(cache, records):
    assert len(cache) == len(records) and cache.records == records
    for i in (0, 9, 19):
        path = records[i].path
        assert cache.num_frames(i) == 10  # max_frames caps the 12-frame videos
        np.testing.assert_array_equal(cache.clip(i, 8), read_clip(path, 8, SIZE))
        np.testing.assert_array_equal(cache.clip(i, 6, start=3), read_clip(path, 6, SIZE, start=3))
        # Spread over the 10 cached frames (decode would spread over all 12 in the file).
        expected = np.stack([read_clip(path, 4, SIZE, start=s) for s in uniform_starts(10, 3, 4)])
        np.testing.assert_array_equal(cache.uniform_clips(i, 3, 4), expected)
    # Shorter than asked: the last frame repeats, like decode's "first".
    long = cache.clip(0, 14)
    np.testing.assert_array_equal(long[:10], read_clip(records[0].path, 10, SIZE))
    assert (long[10:] == long[9]).all()


def test_uniform_clips_equal_decode_on_uncapped_cache(records, tmp_path):
    full = build(records[:3], tmp_path, max_frames=None)
    assert full.num_frames(1) == 12
    np.testing.assert_array_equal(full.uniform_clips(1, 3, 5), read_uniform_clips(records[1].path, 3, 5, SIZE))


def test_random_start_is_seeded_and_in_range(cache):
    a = [cache.clip(3, 4, start="random", rng=seed) for seed in range(6)]
    b = [cache.clip(3, 4, start="random", rng=seed) for seed in range(6)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    full = cache.clip(3, 10)
    starts = {next(s for s in range(7) if (full[s:s + 4] == x).all()) for x in a}
    assert len(starts) > 1
    with pytest.raises(ValueError, match="outside video"):
        cache.clip(3, 4, start=10)


def test_dataset_items_and_pickling(cache, records):
    ds = ClipDataset(cache, 8)
    x, label = ds[5]
    assert x.shape == (8, SIZE, SIZE, 3) and x.dtype == torch.uint8 and label == records[5].label
    np.testing.assert_array_equal(x.numpy(), cache.clip(5, 8))
    # random starts: a function of (seed, epoch, video), the same in any worker or resumed run
    random = ClipDataset(cache, 4, sampling="random", seed=3)
    assert torch.equal(random[(2, 7)][0], random[(2, 7)][0])
    starts = {int(np.flatnonzero((cache.clip(2, 10)[:, None] == random[(2, e)][0].numpy()[None, :1]).all((2, 3, 4)))[0])
              for e in range(20)}
    assert len(starts) > 1  # different epochs, different starts
    loader = torch.utils.data.DataLoader(random, batch_sampler=ClipBatchSampler(len(random), 4, seed=0, steps=1),
                                         collate_fn=collate_clips)
    xs, ys = next(iter(loader))
    assert xs.shape == (4, 4, SIZE, SIZE, 3) and ys.dtype == torch.int64
    multi, _ = ClipDataset(cache, 4, sampling="uniform", num_clips=3)[2]
    assert multi.shape == (3, 4, SIZE, SIZE, 3)
    np.testing.assert_array_equal(multi.numpy(), cache.uniform_clips(2, 3, 4))
    views, _ = ClipDataset(cache, 4, sampling="random", views=2)[(1, 0)]
    assert views.shape == (2, 4, SIZE, SIZE, 3)
    subset = ClipDataset(cache, 8, items=[4, 2])
    assert len(subset) == 2 and subset[1][1] == records[2].label
    clone = pickle.loads(pickle.dumps(cache))  # what a spawned DataLoader worker receives
    np.testing.assert_array_equal(clone.clip(7, 5), cache.clip(7, 5))


def test_reuse_and_parallel_build(cache, records, tmp_path):
    again = build(records, cache.folder.parent)
    assert again.folder == cache.folder
    parallel = build(records, tmp_path, workers=2)
    assert parallel.fingerprint == cache.fingerprint
    for i in range(len(records)):
        np.testing.assert_array_equal(parallel.clip(i, 10), cache.clip(i, 10))


def test_killed_build_resumes_without_redoing_finished_shards(records, tmp_path):
    class Killed(Exception):
        pass

    def kill_after_shard_1(shard):
        if shard == 1:
            raise Killed

    with pytest.raises(Killed):
        build(records, tmp_path, on_shard_done=kill_after_shard_1)
    (folder,) = tmp_path.iterdir()
    assert not (folder / "index.json").exists()
    with pytest.raises(VideoDataError, match="did not finish"):
        ClipCache.open(folder)
    mtime = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*")}
    assert set(mtime) == {"shard_00000.npy", "shard_00000.json", "shard_00001.npy", "shard_00001.json"}
    built = []
    resumed = build(records, tmp_path, on_shard_done=built.append)
    assert built == [2]
    for name, stamp in mtime.items():
        assert (folder / name).stat().st_mtime_ns == stamp, f"{name} was rewritten"
    assert len(resumed) == len(records)


def test_changed_source_or_params_give_a_new_cache(records, tmp_path):
    src = tmp_path / "src"
    copies = []
    for rec in records[:4]:
        dest = src / rec.relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rec.path, dest)
        copies.append(replace(rec, path=str(dest)))
    base = build(copies, tmp_path / "c")
    assert build(copies, tmp_path / "c", size=12).fingerprint != base.fingerprint
    assert build(copies, tmp_path / "c", max_frames=6).fingerprint != base.fingerprint
    assert build(copies, tmp_path / "c", stride=2).fingerprint != base.fingerprint
    stat = os.stat(copies[1].path)
    os.utime(copies[1].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = build(copies, tmp_path / "c")
    assert changed.fingerprint != base.fingerprint
    assert base.folder.is_dir()  # old caches are left in place
    np.testing.assert_array_equal(changed.clip(1, 5), base.clip(1, 5))


def test_undecodable_videos_are_reported_not_fatal(records, tmp_path):
    empty = tmp_path / "empty video.avi"
    empty.write_bytes(b"")
    text = tmp_path / "nöt a video.avi"
    text.write_text("hello, I am not a video\n" * 50)
    bad = [replace(records[0], path=str(p), relpath=p.name) for p in (empty, text)]
    mixed = [records[0], bad[0], records[1], bad[1], records[2]]
    cache = build(mixed, tmp_path / "c", videos_per_shard=2)
    assert cache.records == [records[0], records[1], records[2]]
    report = json.loads((cache.folder / REPORT_NAME).read_text())
    assert report["videos"] == 5 and report["cached"] == 3
    assert [f["path"] for f in report["failed"]] == [str(empty), str(text)]
    assert all(f["error"] for f in report["failed"])
    np.testing.assert_array_equal(cache.clip(1, 4), read_clip(records[1].path, 4, SIZE))
    with pytest.raises(VideoDataError, match="no video in 2 could be decoded"):
        build(bad, tmp_path / "d")


def test_open_rejects_a_damaged_shard(records, tmp_path):
    cache = build(records[:4], tmp_path)
    np.save(cache.folder / "shard_00000.npy", np.zeros((2, SIZE, SIZE, 3), np.uint8))
    with pytest.raises(VideoDataError, match="shard_00000.npy|points past the end"):
        ClipCache.open(cache.folder)
    np.save(cache.folder / "shard_00000.npy", np.zeros((40, SIZE, 8, 3), np.uint8))
    with pytest.raises(VideoDataError, match=r"shard_00000\.npy: shard holds"):
        ClipCache.open(cache.folder)
