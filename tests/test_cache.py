"""Decode-once clip cache: equals direct decode, resumes (also through an executor), invalidates, reports
bad videos; the format-2 index (lazy records, labels, index_of) and its benchmark."""
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

from videodata.cache import INDEX_NAME, REPORT_NAME, ClipCache, ShardJobsError
from videodata.clips import ClipBatchSampler, ClipDataset, collate_clips
from videodata.decode import read_clip, read_uniform_clips, uniform_starts
from videodata.errors import VideoDataError
from videodata.synthetic import SyntheticConfig, generate
from videodata.sets.ucf101 import load_split

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


def test_a_build_in_this_process_leaves_its_thread_count_alone(records, tmp_path):
    """With one worker the shards are decoded in the caller's process, which goes on to train: the
    build's one-thread setting must not stay behind (a pretraining run trained on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        build(records[:3], tmp_path, workers=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


class Killed(Exception):
    """The build's process dying after a shard (raised from its on_shard_done hook)."""


def kill_after_shard_1(shard):
    if shard == 1:
        raise Killed


def test_killed_build_resumes_without_redoing_finished_shards(records, tmp_path):
    with pytest.raises(Killed):
        build(records, tmp_path, on_shard_done=kill_after_shard_1)
    (folder,) = tmp_path.iterdir()
    assert not (folder / INDEX_NAME).exists()
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


# ------------------------------------------------------------------- index format 2, executors
def test_lazy_records_labels_and_index_of(cache, records):
    lazy = cache.records
    assert not isinstance(lazy, list) and len(lazy) == len(records) == len(cache)
    assert lazy[0] == records[0] and lazy[-1] == records[-1] and lazy[3:7] == records[3:7]
    assert lazy[::5] == records[::5] and list(lazy) == records and lazy == records
    with pytest.raises(IndexError):
        lazy[len(records)]
    # what transfer/sweeps/cells.py `_indices` builds today still works on the lazy records
    assert {r.relpath: i for i, r in enumerate(lazy)} == {r.relpath: i for i, r in enumerate(records)}
    labels = cache.labels
    assert labels.dtype == np.int64 and labels.tolist() == [r.label for r in records]
    assert not labels.flags.writeable
    wanted = [records[7].relpath, records[0].relpath, records[19].relpath, records[7].relpath]
    np.testing.assert_array_equal(cache.index_of(wanted), [7, 0, 19, 7])
    assert cache.index_of([]).shape == (0,)
    with pytest.raises(KeyError, match=r"2 of 3 relpaths are not in the clip cache.*nope/a\.avi.*nope/b\.avi"):
        cache.index_of([records[1].relpath, "nope/a.avi", "nope/b.avi"])
    clone = pickle.loads(pickle.dumps(cache))
    assert len(pickle.dumps(cache)) < 2000  # no extents, labels or rows in the pickle
    assert clone.records == records and clone.labels.tolist() == labels.tolist()
    assert clone.num_frames(4) == cache.num_frames(4) and clone.fps(4) == cache.fps(4) > 0


def job_folders(folder: Path) -> list[Path]:
    """submitit's per-job log folders (make_executor also creates the '%j' template itself)."""
    return [p for p in folder.iterdir() if p.name != "%j"]


def test_executor_build_resumes_only_the_missing_shards(records, cache, tmp_path):
    from slurm.executors import make_executor
    from slurm.jobs import job_runner

    with pytest.raises(Killed):
        build(records, tmp_path / "c", on_shard_done=kill_after_shard_1)
    (folder,) = (tmp_path / "c").iterdir()
    mtime = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard_*")}
    assert len(mtime) == 4
    executor = job_runner(make_executor("local", tmp_path / "jobs" / "%j", "local"))
    # A job that fails is reported (its error and log) after the others; nothing is lost.
    (folder / "shard_00002.npy").mkdir()
    with pytest.raises(ShardJobsError, match=r"1 of 1 clip cache jobs failed and 1 of 3 shards are missing.*"
                                             r"building again resumes.*IsADirectoryError.*log: "):
        build(records, tmp_path / "c", run_jobs=executor)
    (folder / "shard_00002.npy").rmdir()
    built = []
    resumed = build(records, tmp_path / "c", run_jobs=executor, on_shard_done=built.append)
    assert built == [2]
    assert len(job_folders(tmp_path / "jobs")) == 2  # each time one job, for the one missing shard
    for name, stamp in mtime.items():
        assert (folder / name).stat().st_mtime_ns == stamp, f"{name} was rewritten"
    assert resumed.fingerprint == cache.fingerprint and resumed.records == cache.records
    for i in range(len(records)):
        np.testing.assert_array_equal(resumed.clip(i, 10), cache.clip(i, 10))


def test_format_1_cache_is_reindexed_without_decoding(records, tmp_path):
    first = build(records[:6], tmp_path, videos_per_shard=4)
    for name in (INDEX_NAME, "extents.npy"):
        (first.folder / name).unlink()
    (first.folder / "index.json").write_text(json.dumps({"format": "vganbench.clipcache/1", "videos": []}))
    with pytest.raises(VideoDataError, match="format 1.*Run ClipCache.build again.*reuses the decoded shards"):
        ClipCache.open(first.folder)
    built = []
    again = build(records[:6], tmp_path, videos_per_shard=4, on_shard_done=built.append)
    assert built == [] and again.folder == first.folder and again.records == records[:6]
    np.testing.assert_array_equal(again.clip(5, 10), read_clip(records[5].path, 10, SIZE))


def test_open_rejects_a_truncated_shard(records, tmp_path):
    cache = build(records[:4], tmp_path)
    npy = cache.folder / "shard_00000.npy"
    os.truncate(npy, npy.stat().st_size - 100)
    with pytest.raises(VideoDataError, match=r"shard_00000\.npy: missing or unreadable cache shard"):
        ClipCache.open(cache.folder)


def test_prepare_caches_a_folder_through_an_executor(records, cache, tmp_path, capsys):
    from videodata import prepare

    src = tmp_path / "videos"
    for rec in records[:5]:
        dest = src / rec.relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(rec.path, dest)
    args = ["--videos", str(src), "--cache-root", str(tmp_path / "c"), "--size", str(SIZE), "--max-frames", "10",
            "--videos-per-shard", "2", "--executor", "local", "--shards-per-job", "3"]
    assert prepare.main(args) == 0
    out = capsys.readouterr().out
    assert f"videos {src}: 5 videos" in out and "(5 videos, 16x16, up to 10 frames)" in out
    assert len(job_folders(tmp_path / "c" / "jobs")) == 1  # 3 shards in one job
    (folder,) = [p for p in (tmp_path / "c").iterdir() if p.name != "jobs"]
    made = ClipCache.open(folder)
    assert [r.relpath for r in made.records] == sorted(r.relpath for r in records[:5])  # list_videos' order
    assert made.labels.tolist() == [-1] * 5
    (position,) = made.index_of([records[4].relpath])
    np.testing.assert_array_equal(made.clip(position, 10), cache.clip(4, 10))


def test_index_benchmark_reports_open_time_and_memory():
    from benchmarks import bench_index

    info = {"cpu": "Test CPU", "cores": 2, "usable_cores": 2, "ram_gib": 16.0, "gpus": [],
            "date": "2026-01-01 00:00 UTC", "load": (0.5, 0.4, 0.3)}

    args = bench_index.parse_args(["--videos", "20000", "--lookups", "2000", "--relpaths", "2000"])
    result = bench_index.run(args)
    ours, peer = result["ours"], result["peer"]
    assert ours["videos"] == peer["videos"] == 20000 and result["shards"] == 313
    for side in (ours, peer):
        assert 0 < side["open_s"] < side["process_s"]
        assert 0 < side["rss_after_open_mb"] <= side["peak_rss_mb"] < 2000
    assert result["open_vs_peer"] > 0 and result["rss_vs_peer"] > 0
    text = bench_index.section(result, info)
    assert text.startswith(f"## {bench_index.HEADING}\n") and "| `ClipCache.open`" in text
    assert "peak RSS right after open" in text
