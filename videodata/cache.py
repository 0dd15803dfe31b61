"""Decode-once clip cache: every video decoded once, at the training resolution, into uint8 shards.

Decoding while training cannot feed a GAN (benchmarks/RESULTS.md, "Data loading": a clip read
from a uint8 memmap costs a small fraction of decoding it). `ClipCache.build` decodes each video with
`videodata.decode.decode_video` and stores the frames of many videos concatenated in shard files:

    <cache_root>/<fingerprint>/
        shard_00000.npy   uint8 (sum of frames, H, W, 3), opened with np.load(mmap_mode="r")
        shard_00000.json  per video: offset, frame count, fps, or the decode error
        ...
        report.json       videos that could not be decoded or stabilised (path + error), skipped;
                          a stabilised build also counts clips stabilised / kept plain / dropped
                          ("stabilisation") and lists the videos with plain clips
        extents.npy       per cached video, one row each: shard, offset, frames, fps, label
                          (numpy structured array `EXTENT_DTYPE`, memory-mapped at open)
        index.sqlite      written last: its presence marks a finished cache. Table `meta` (format,
                          fingerprint, params as JSON, num_shards, videos) and table `videos`
                          (id = position in `cache.records`, path, relpath, label, class_name,
                          grp, clip, size_bytes, mtime_ns; indexed by relpath)

The index scales to millions of videos (format "vganbench.clipcache/2"): opening reads a few meta
rows, memory-maps extents.npy, reads every shard's .npy header and checks all extents against the
shard lengths at once with numpy; `cache.records` is a lazy sequence whose rows are read from
SQLite on demand, `cache.labels` comes from the extents and `cache.index_of(relpaths)` looks
positions up through the relpath index. benchmarks/bench_index.py measures a 1,000,000-video
index against the single JSON document of format 1.

Format 1 (one `index.json` loaded whole) is not read any more: old caches are rebuilt. Their
shard files are the same in both formats, and so is the folder name (the fingerprint hashes the
shard format, `SHARD_FORMAT`), so `ClipCache.build` with the same videos and parameters finds
every shard complete and only writes the new index beside the old one; nothing is decoded again.
`ClipCache.open` on a folder with only an `index.json` says so.

The folder name (`fingerprint`) hashes the parameters and the (path, size, mtime) of every
source, plus each record's label fields, so a changed source, list or parameter gives a new
folder and a finished cache is reused as is. Old folders are left in place (another run may
still read them); delete them by hand to reclaim the space.

Resume: a shard's .npy is written atomically and then its .json, so a shard with both files is
complete; a killed build rebuilds only the missing shards. Undecodable videos never stop the
build: they are listed in report.json and left out of `cache.records`.

Scale-out: `ClipCache.build(..., run_jobs=slurm.jobs.job_runner(executor))` builds the missing
shards as a job array of a submitit executor (`slurm.executors.make_executor`: SLURM, local
subprocesses or in-process),
a few shards per job; a job that is preempted or requeued skips the shards it already wrote.
The submitting process waits for the jobs and writes the index (`python -m videodata.prepare
--executor slurm`).
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
import os
import re
import sqlite3
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence as SequenceABC
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import quote

import numpy as np

from runkit.atomic import atomic_write_json, atomic_write_with
from runkit.jobs import RunJobs
from runkit.processes import worker_context
from videodata.errors import VideoDataError
from videodata.records import VideoRecord

# Opening a cache needs neither torch nor PyAV: videodata.decode (decoding), runkit.logging
# (progress bars) and torch are imported where a build or a clip read needs them.
if TYPE_CHECKING:  # videodata.stabilise imports OpenCV: only a stabilised build loads it
    from videodata.stabilise import StabiliseConfig

FORMAT = "vganbench.clipcache/2"  # the index (index.sqlite + extents.npy)
# The shard files (.npy + .json) and the fingerprint: unchanged since format 1, so a format-1
# cache keeps its folder name and its decoded shards are reused when its index is rewritten.
SHARD_FORMAT = "vganbench.clipcache/1"
INDEX_NAME = "index.sqlite"
EXTENTS_NAME = "extents.npy"
OLD_INDEX_NAME = "index.json"  # format 1
REPORT_NAME = "report.json"
# 64 videos per shard: ~25 MB at 32 frames of 64x64, few enough files for 10k+ videos, and
# enough shards for 2 workers on a few hundred videos.
DEFAULT_VIDEOS_PER_SHARD = 64
# With an executor, at most this many jobs per build (SLURM's default MaxArraySize is 1001): a
# job builds several shards when there are more.
MAX_JOBS = 1000
EXTENT_DTYPE = np.dtype([("shard", "<i4"), ("offset", "<i8"), ("frames", "<i4"), ("fps", "<f8"),
                         ("label", "<i8")])
_VIDEO_COLUMNS = ("path", "relpath", "label", "class_name", "grp", "clip", "size_bytes", "mtime_ns")
_RECORD_SELECT = "SELECT path, relpath, label, class_name, grp, clip FROM videos"


def _normalise_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = (int(v) for v in size)
    return height, width


def _source_stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return -1, -1  # missing: the build reports it as undecodable
    return st.st_size, st.st_mtime_ns


def cache_fingerprint(records: Sequence[VideoRecord], *, size, max_frames: int | None, stride: int,
                      resize: str, videos_per_shard: int, stabilise: dict | None = None) -> str:
    """Hash of the build parameters and of every source (path, size, mtime) and its labels.

    `stabilise`: `StabiliseConfig.as_dict()` of a stabilised build; None (no stabilisation)
    leaves the hash exactly as before stabilisation existed, so those caches are reused. The
    hash names the shard format, not the index format: shards outlive an index format change."""
    digest = hashlib.sha256()
    params = {"format": SHARD_FORMAT, "size": list(_normalise_size(size)), "max_frames": max_frames,
              "stride": stride, "resize": resize, "videos_per_shard": videos_per_shard}
    if stabilise is not None:
        params["stabilise"] = stabilise
    digest.update(json.dumps(params, sort_keys=True).encode())
    for rec in records:
        digest.update(json.dumps([os.path.abspath(rec.path), *_source_stamp(rec.path), rec.relpath,
                                  rec.label, rec.class_name, rec.group, rec.clip]).encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------- shards
def _shard_paths(folder: Path, shard: int) -> tuple[Path, Path]:
    return folder / f"shard_{shard:05d}.npy", folder / f"shard_{shard:05d}.json"


def _shard_complete(folder: Path, shard: int) -> dict | None:
    """The shard's metadata if both its files are there and agree, else None (rebuild it)."""
    npy, meta_path = _shard_paths(folder, shard)
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arr = np.load(npy, mmap_mode="r")
        if arr.shape[0] != meta["total_frames"]:
            return None
    except (OSError, ValueError, KeyError):
        return None
    return meta


def _build_shard(folder: str, shard: int, paths: list[str], size: tuple[int, int],
                 max_frames: int | None, stride: int, resize: str,
                 stabilise: "StabiliseConfig | None" = None) -> dict:
    """Decode one shard's videos (a worker process) and write its .npy, then its .json.

    With `stabilise`, each video goes through `decode_stabilised`, clip by clip: the video's entry
    lists its kept clips ("clips": offset, frames, status) and counts what happened
    ("stabilisation"); one none of whose clips could be stabilised (on_failure="drop") is
    recorded like an undecodable one (its error names the first clip's reason)."""
    import torch

    # One thread per worker (decode_video is numpy/FFmpeg); restored after, since with one
    # worker the shard is built in the caller's process, which may go on to train.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2_threads = None
    if stabilise is not None:
        import cv2

        cv2_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
    try:
        return _decode_shard(folder, shard, paths, size, max_frames, stride, resize, stabilise)
    finally:
        torch.set_num_threads(threads)
        if cv2_threads is not None:
            cv2.setNumThreads(cv2_threads)


def _decode_shard(folder: str, shard: int, paths: list[str], size: tuple[int, int],
                  max_frames: int | None, stride: int, resize: str,
                  stabilise: "StabiliseConfig | None") -> dict:
    from videodata.decode import decode_video, probe_video
    if stabilise is not None:
        from videodata.stabilise import decode_stabilised
    arrays, videos, offset = [], [], 0
    for path in paths:
        notes = {}
        try:
            if stabilise is None:
                frames = decode_video(path, size, max_frames=max_frames, stride=stride, resize=resize)
            else:
                frames, report = decode_stabilised(path, size, max_frames=max_frames, stride=stride,
                                                   resize=resize, cfg=stabilise, return_report=True)
                notes["clips"] = [list(kept) for kept in report.kept()]
                notes["stabilisation"] = _clip_counts(report)
            fps = probe_video(path).fps
        except Exception as exc:  # any failure is one video's problem, never the build's
            videos.append({"offset": offset, "frames": 0, "fps": 0.0,
                           "error": f"{type(exc).__name__}: {exc}"})
            continue
        arrays.append(frames)
        videos.append({"offset": offset, "frames": int(frames.shape[0]), "fps": float(fps),
                       "error": None, **notes})
        offset += frames.shape[0]
    data = np.concatenate(arrays) if arrays else np.zeros((0, *size, 3), np.uint8)
    npy, meta_path = _shard_paths(Path(folder), shard)
    atomic_write_with(npy, lambda handle: np.save(handle, data, allow_pickle=False))
    meta = {"shard": shard, "total_frames": int(data.shape[0]), "videos": videos}
    atomic_write_json(meta_path, meta)
    return meta


def _clip_counts(report) -> dict:
    """One video's `StabiliseReport` in a shard's metadata: counts, and why clips were not stabilised."""
    return {"frames_in": report.frames_in, "frames_out": report.frames_out,
            **{status: report.count(status) for status in ("stabilised", "plain", "dropped")},
            "reasons": [clip.reason for clip in report.clips if clip.status != "stabilised"]}


def stabilisation_summary(videos: list[tuple[str, dict]], on_failure: str, clip_frames: int) -> dict:
    """What stabilisation did to a video set (report.json's "stabilisation"), from the shard
    entries (path, entry) of the videos it could decode."""
    counts = [video["stabilisation"] for _, video in videos]
    kinds: dict[str, int] = {}
    for c in counts:
        for reason in c["reasons"]:
            kind = re.sub(r" at frame \d+.*| \(.*", "", reason.split(",")[0])
            kinds[kind] = kinds.get(kind, 0) + 1
    total = lambda key: sum(c[key] for c in counts)
    stabilised_frames = sum(frames for _, video in videos for _, frames, status in video["clips"]
                            if status == "stabilised")
    return {"clip_frames": clip_frames, "on_failure": on_failure, "videos": len(videos),
            "clips_stabilised": total("stabilised"), "clips_plain": total("plain"),
            "clips_dropped": total("dropped"), "frames_decoded": total("frames_in"),
            "frames_kept": total("frames_out"), "frames_stabilised": stabilised_frames,
            "videos_with_plain_clips": sum(c["plain"] > 0 for c in counts),
            "videos_with_dropped_clips": sum(c["dropped"] > 0 for c in counts),
            "reasons": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def _build_shards(folder: str, tasks: list[tuple[int, list[str]]], size: tuple[int, int],
                  max_frames: int | None, stride: int, resize: str,
                  stabilise: "StabiliseConfig | None" = None) -> list[int]:
    """One job's shards, `(shard, paths)` each: build those not complete yet, so that a job
    run again (requeued after a preemption or a time limit) resumes per shard. The shards built."""
    built = []
    for shard, paths in tasks:
        meta = _shard_complete(Path(folder), shard)
        if meta is not None and len(meta["videos"]) == len(paths):
            continue
        _build_shard(folder, shard, paths, size, max_frames, stride, resize, stabilise)
        built.append(shard)
    return built


class ShardJobsError(VideoDataError):
    """Some build jobs failed; the shards they finished are kept (build again to resume).
    `.outcomes`: every job's `JobReport`."""

    def __init__(self, message: str, outcomes: Sequence = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


# The .npy header as np.save writes it (C order, no padding surprises); anything else is read by
# numpy's own parser.
_NPY_HEADER = re.compile(rb"\{'descr': '([^']+)', 'fortran_order': (?:True|False), 'shape': \(([0-9, ]*)\), \}")


def _npy_layout(npy: Path) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, data offset, file size) from the header of a .npy file, reading ~256 bytes:
    ~10x cheaper than np.load(mmap_mode="r"), which matters for thousands of shards."""
    fd = os.open(npy, os.O_RDONLY)
    try:
        head = os.read(fd, 256)
        file_size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if head[:6] != b"\x93NUMPY" or len(head) < 10:
        raise ValueError("not a .npy file")
    width = 2 if head[6] == 1 else 4
    start = 8 + width
    data_offset = start + int.from_bytes(head[8:start], "little")
    match = _NPY_HEADER.match(head, start)
    if match is not None:
        shape = tuple(int(v) for v in match.group(2).split(b",") if v.strip())
        return np.dtype(match.group(1).decode()), shape, data_offset, file_size
    with open(npy, "rb") as handle:  # a header this parser does not know: numpy's own
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(handle)
        return dtype, tuple(shape), handle.tell(), file_size


def _shard_lengths(folder: Path, num_shards: int, hw: tuple[int, int]) -> np.ndarray:
    """Frames in each shard, checking each shard's dtype, frame shape and file length."""
    h, w = hw
    lengths = np.empty(num_shards, np.int64)
    for shard in range(num_shards):
        npy, _ = _shard_paths(folder, shard)
        try:
            dtype, shape, data_offset, file_size = _npy_layout(npy)
        except (OSError, ValueError) as exc:
            raise VideoDataError(f"{npy}: missing or unreadable cache shard: {exc}") from exc
        if dtype != np.uint8 or len(shape) != 4 or shape[1:] != (h, w, 3):
            raise VideoDataError(f"{npy}: shard holds {dtype} {shape}, expected uint8 (N, {h}, {w}, 3)")
        if file_size < data_offset + math.prod(shape):
            raise VideoDataError(f"{npy}: missing or unreadable cache shard: {file_size} bytes, too "
                                 f"short for {shape}")
        lengths[shard] = shape[0]
    return lengths


# -------------------------------------------------------------------------------------- index
def _text(value: str) -> str | bytes:
    """A string as SQLite stores it: UTF-8 text, or bytes for a path that is not valid UTF-8
    (undecodable bytes from the file system, kept by Python as surrogates)."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape")


def _from_text(value: str | bytes) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _connect(path: Path) -> sqlite3.Connection:
    """Read-only, `immutable`: a finished index never changes, so SQLite takes no locks (safe on
    network file systems and in any number of DataLoader workers)."""
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True, check_same_thread=False)


def write_index(folder: str | os.PathLike, *, fingerprint: str, params: dict, num_shards: int,
                rows: Iterable[tuple], extents: np.ndarray) -> Path:
    """Write a cache's index into `folder`: extents.npy, then index.sqlite (atomically, last).

    `rows`: one tuple per cached video, in order, `(path, relpath, label, class_name, group, clip,
    size_bytes, mtime_ns)`; `extents`: an `EXTENT_DTYPE` array with one row per video in the same
    order. `ClipCache.build` calls this; benchmarks/bench_index.py writes synthetic indexes with it.
    """
    folder = Path(folder)
    extents = np.asarray(extents)
    if extents.dtype != EXTENT_DTYPE or extents.ndim != 1:
        raise ValueError(f"extents must be a 1-d {EXTENT_DTYPE} array, got {extents.dtype} {extents.shape}")
    atomic_write_with(folder / EXTENTS_NAME, lambda handle: np.save(handle, extents, allow_pickle=False))
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_NAME}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        con = sqlite3.connect(tmp)
        try:
            # No journal, no syncs while writing: the file is fsynced once and renamed at the end.
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute("CREATE TABLE videos (id INTEGER PRIMARY KEY, path TEXT NOT NULL, relpath TEXT NOT NULL, "
                        "label INTEGER NOT NULL, class_name TEXT NOT NULL, grp INTEGER NOT NULL, "
                        "clip INTEGER NOT NULL, size_bytes INTEGER NOT NULL, mtime_ns INTEGER NOT NULL)")
            count = 0

            def numbered() -> Iterator[tuple]:
                nonlocal count
                for path, relpath, label, class_name, group, clip, size_bytes, mtime_ns in rows:
                    yield (count, _text(path), _text(relpath), int(label), _text(class_name), int(group),
                           int(clip), int(size_bytes), int(mtime_ns))
                    count += 1

            con.executemany("INSERT INTO videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", numbered())
            if count != len(extents):
                raise ValueError(f"write_index: {count} rows but {len(extents)} extents")
            con.execute("CREATE INDEX videos_relpath ON videos (relpath)")
            meta = {"format": FORMAT, "fingerprint": fingerprint, "params": json.dumps(params, sort_keys=True),
                    "num_shards": str(int(num_shards)), "videos": str(count)}
            con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
            con.commit()
        finally:
            con.close()
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, folder / INDEX_NAME)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return folder / INDEX_NAME


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class CacheRecords(SequenceABC):
    """`cache.records`: the cached videos' `VideoRecord`s (index i = video i), read from
    index.sqlite on demand: `len`, `records[i]` (negative too), slices (lists), iteration (in
    order, streamed in chunks) and `==` with any sequence of records. The last `cache_size`
    looked-up records are kept. Pickles without its connection (DataLoader workers reconnect)."""

    CHUNK = 8192

    def __init__(self, index_path: str | os.PathLike, length: int, cache_size: int = 4096):
        self.index_path = Path(index_path)
        self._len = int(length)
        self._cache_size = cache_size
        self._reset()

    def _reset(self) -> None:
        self._con: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, VideoRecord] = OrderedDict()

    def __getstate__(self) -> dict:
        return {"index_path": self.index_path, "_len": self._len, "_cache_size": self._cache_size}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _connection(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():  # never share a connection across fork
            self._con = _connect(self.index_path)
            self._pid = os.getpid()
        return self._con

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._connection().execute(sql, params).fetchall()

    @staticmethod
    def _record(row: tuple) -> VideoRecord:
        path, relpath, label, class_name, group, clip = row
        return VideoRecord(_from_text(path), _from_text(relpath), label, _from_text(class_name), group, clip)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(self._len)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return [self._record(row) for row in
                    self._query(f"{_RECORD_SELECT} WHERE id >= ? AND id < ? ORDER BY id", (start, stop))]
        i = operator.index(index)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"record {index} out of range: the cache holds {self._len} videos")
        with self._lock:
            record = self._cache.get(i)
            if record is not None:
                self._cache.move_to_end(i)
                return record
            row = self._connection().execute(f"{_RECORD_SELECT} WHERE id = ?", (i,)).fetchone()
            if row is None:
                raise VideoDataError(f"{self.index_path}: no row for video {i} of {self._len}")
            record = self._record(row)
            self._cache[i] = record
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return record

    def __iter__(self) -> Iterator[VideoRecord]:
        for start in range(0, self._len, self.CHUNK):
            yield from self[start:start + self.CHUNK]

    def __eq__(self, other) -> bool:
        if isinstance(other, CacheRecords) and other.index_path.resolve() == self.index_path.resolve():
            return True
        if not isinstance(other, SequenceABC) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == self._len and all(a == b for a, b in zip(self, other))

    __hash__ = None  # like a list

    def __repr__(self) -> str:
        return f"CacheRecords({str(self.index_path)!r}, {self._len} videos)"

    def positions(self, relpaths: Sequence[str]) -> np.ndarray:
        """The position of each relpath (the last one where a relpath occurs twice, as
        `{r.relpath: i for i, r in enumerate(records)}` gives); KeyError naming the missing."""
        relpaths = [relpaths] if isinstance(relpaths, str) else list(relpaths)
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(relpaths))
        step = 900  # under SQLite's smallest limit on bound parameters (999)
        for k in range(0, len(unique), step):
            chunk = [_text(r) for r in unique[k:k + step]]
            marks = ", ".join("?" * len(chunk))
            for relpath, position in self._query(
                    f"SELECT relpath, MAX(id) FROM videos WHERE relpath IN ({marks}) GROUP BY relpath", chunk):
                found[_from_text(relpath)] = position
        missing = [r for r in unique if r not in found]
        if missing:
            raise KeyError(f"{len(missing)} of {len(unique)} relpaths are not in the clip cache index "
                           f"{self.index_path} (first: {missing[:5]})")
        return np.fromiter((found[r] for r in relpaths), dtype=np.int64, count=len(relpaths))


class ClipCache:
    """A finished cache folder: `records` (decodable videos, in build order) and their frames."""

    def __init__(self, folder: str | os.PathLike, *, fingerprint: str, params: dict, num_shards: int,
                 records: CacheRecords, extents: np.ndarray | None = None):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.params = params
        self.size: tuple[int, int] = tuple(params["size"])
        self.num_shards = num_shards
        self.records = records
        self._extents = extents
        self._labels: np.ndarray | None = None
        self._shards: dict[int, np.ndarray] = {}

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, records: Sequence[VideoRecord], cache_root: str | os.PathLike, *, size,
              max_frames: int | None, stride: int = 1, resize: str = "crop", workers: int = 2,
              videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD, show_progress: bool = True,
              on_shard_done: Callable[[int], None] | None = None,
              stabilise: "StabiliseConfig | None" = None, run_jobs: "RunJobs | None" = None,
              shards_per_job: int | None = None) -> "ClipCache":
        """Decode `records` once into `<cache_root>/<fingerprint>/` (or reuse a finished one).

        `stabilise`: undo camera motion first, clip by clip (`videodata.stabilise.decode_stabilised`,
        the original VGAN's data); its config is part of the fingerprint and of `params`. With
        on_failure="drop" (pretraining) every stabilised clip is one cache item (a video's clips
        in a row, failed clips left out, a video without one left out like an undecodable one);
        with "plain" (labeled sets) a video is one item holding every clip, failed ones as decoded.
        report.json counts the clips ("stabilisation").
        `on_shard_done(i)` is called in this process after shard i is on disk (tests use it to
        simulate a kill mid-build).

        `run_jobs`: None builds the missing shards here (`workers` processes); a job runner
        (`slurm.jobs.job_runner(executor)`: a SLURM job array, local subprocesses...) builds them as
        jobs instead, `shards_per_job` shards per job (default: as few as keep the array within
        `MAX_JOBS` jobs), and this process waits for the jobs, then writes the index. A failed job raises `ShardJobsError`
        after the other jobs have finished; the shards on disk are kept, so building again
        resumes. The cache is the same, byte for byte, whichever way it was built.
        """
        if not records:
            raise ValueError("ClipCache.build needs at least one video record")
        if resize not in ("crop", "stretch"):
            raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
        if stride < 1 or (max_frames is not None and max_frames < 1) or videos_per_shard < 1:
            raise ValueError(f"need stride >= 1, max_frames >= 1 or None, videos_per_shard >= 1; got "
                             f"{stride}, {max_frames}, {videos_per_shard}")
        if shards_per_job is not None and shards_per_job < 1:
            raise ValueError(f"shards_per_job must be >= 1 or None, got {shards_per_job}")
        hw = _normalise_size(size)
        stabilise_params = None if stabilise is None else stabilise.as_dict()
        fingerprint = cache_fingerprint(records, size=hw, max_frames=max_frames, stride=stride,
                                        resize=resize, videos_per_shard=videos_per_shard,
                                        stabilise=stabilise_params)
        folder = Path(cache_root) / fingerprint
        if (folder / INDEX_NAME).is_file():
            return cls.open(folder)
        folder.mkdir(parents=True, exist_ok=True)

        from runkit.logging import progress  # imports torch: only a build needs it

        num_shards = math.ceil(len(records) / videos_per_shard)
        chunks = [records[i * videos_per_shard:(i + 1) * videos_per_shard] for i in range(num_shards)]
        metas: dict[int, dict] = {}
        for shard in range(num_shards):
            meta = _shard_complete(folder, shard)
            if meta is not None and len(meta["videos"]) == len(chunks[shard]):
                metas[shard] = meta
        todo = [s for s in range(num_shards) if s not in metas]
        bar = progress(total=len(records), initial=len(records) - sum(len(chunks[s]) for s in todo),
                       desc=f"clip cache {fingerprint}", unit="video", disable=not show_progress)

        def done(shard: int, meta: dict) -> None:
            metas[shard] = meta
            bar.update(len(chunks[shard]))
            if on_shard_done is not None:
                on_shard_done(shard)

        args = lambda s: (str(folder), s, [r.path for r in chunks[s]], hw, max_frames, stride, resize,
                          stabilise)
        try:
            if run_jobs is not None and todo:
                groups = _group_shards(todo, shards_per_job)
                calls = [(str(folder), [(s, [r.path for r in chunks[s]]) for s in group], hw, max_frames,
                          stride, resize, stabilise) for group in groups]
                _run_jobs(run_jobs, groups, calls, folder, chunks, done, num_shards)
            elif workers <= 1 or len(todo) <= 1:
                for shard in todo:
                    done(shard, _build_shard(*args(shard)))
            else:
                with ProcessPoolExecutor(min(workers, len(todo)), mp_context=worker_context()) as pool:
                    futures = {pool.submit(_build_shard, *args(s)): s for s in todo}
                    for future in as_completed(futures):
                        done(futures[future], future.result())
        finally:
            bar.close()

        rows, extents, failed, plain, decoded = [], [], [], [], []
        per_clip = stabilise is not None and stabilise.on_failure == "drop"
        for shard in range(num_shards):
            for rec, video in zip(chunks[shard], metas[shard]["videos"]):
                if video["error"] is not None:
                    failed.append({"path": rec.path, "error": video["error"]})
                    continue
                decoded.append((rec.path, video))
                row = (rec.path, rec.relpath, rec.label, rec.class_name, rec.group, rec.clip,
                       *_source_stamp(rec.path))
                if stabilise is not None and video["stabilisation"]["plain"]:
                    counts = video["stabilisation"]
                    plain.append({"path": rec.path, "plain_clips": counts["plain"], "clips": len(video["clips"]),
                                  "reason": counts["reasons"][0]})
                # The pretraining pool is the stabilised clips: one cache item each, a video's in a row.
                spans = [(offset, frames) for offset, frames, _ in video["clips"]] if per_clip \
                    else [(0, video["frames"])]
                for offset, frames in spans:
                    rows.append(row)
                    extents.append((shard, video["offset"] + offset, frames, video["fps"], rec.label))
        report = {"videos": len(records), "cached": len(decoded), "items": len(rows), "failed": failed}
        if stabilise is not None:
            # labeled sets (on_failure="plain"): the videos with clips kept as decoded
            report["unstabilised"] = plain
            report["stabilisation"] = stabilisation_summary(decoded, stabilise.on_failure, stabilise.clip_frames)
        atomic_write_json(folder / REPORT_NAME, report)
        if not rows:
            raise VideoDataError(f"no video in {len(records)} could be decoded; see "
                                 f"{folder / REPORT_NAME} (first: {failed[0]['path']}: {failed[0]['error']})")
        params = {"size": list(hw), "max_frames": max_frames, "stride": stride,
                  "resize": resize, "videos_per_shard": videos_per_shard}
        if stabilise_params is not None:
            params["stabilise"] = stabilise_params
        write_index(folder, fingerprint=fingerprint, params=params, num_shards=num_shards, rows=rows,
                    extents=np.array(extents, dtype=EXTENT_DTYPE))
        return cls.open(folder)

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike) -> "ClipCache":
        """Open a finished cache; check the index against every shard (dtype, frame shape, length)
        and every video's extent against its shard, all videos at once (numpy)."""
        folder = Path(folder)
        index_path = folder / INDEX_NAME
        if not index_path.is_file():
            if (folder / OLD_INDEX_NAME).is_file():
                raise VideoDataError(
                    f"{folder}: a cache index of format 1 ({OLD_INDEX_NAME}); this version reads {FORMAT}. "
                    f"Run ClipCache.build again with the same videos and parameters (e.g. the command that "
                    f"made it): it reuses the decoded shards and writes the new index")
            raise VideoDataError(f"{index_path}: no cache index (the build did not finish; "
                                 f"run ClipCache.build again to resume)")
        try:
            con = _connect(index_path)
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise VideoDataError(f"{index_path}: unreadable cache index: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise VideoDataError(f"{index_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            params = json.loads(meta["params"])
            num_shards, count = int(meta["num_shards"]), int(meta["videos"])
            hw = _normalise_size(params["size"])
            fingerprint = meta["fingerprint"]
        except (KeyError, ValueError, TypeError) as exc:
            raise VideoDataError(f"{index_path}: unreadable cache index: bad meta {exc}") from exc
        extents = _open_extents(folder, count)
        lengths = _shard_lengths(folder, num_shards, hw)
        records = CacheRecords(index_path, count)
        _check_extents(index_path, extents, lengths, records)
        return cls(folder, fingerprint=fingerprint, params=params, num_shards=num_shards,
                   records=records, extents=extents)

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        # memmaps are reopened in each DataLoader worker (pickling one would copy the data)
        state.update(_shards={}, _extents=None, _labels=None)
        return state

    @property
    def extents(self) -> np.ndarray:
        """The per-video extents (`EXTENT_DTYPE`: shard, offset, frames, fps, label), memory-mapped."""
        if self._extents is None:
            self._extents = np.load(self.folder / EXTENTS_NAME, mmap_mode="r")
        return self._extents

    @property
    def labels(self) -> np.ndarray:
        """Every video's label (int64, -1 when unlabeled), index i = video i; read-only."""
        if self._labels is None:
            labels = np.array(self.extents["label"], dtype=np.int64)
            labels.flags.writeable = False
            self._labels = labels
        return self._labels

    def index_of(self, relpaths: Iterable[str]) -> np.ndarray:
        """Positions (int64) of the videos with these relpaths, in the given order; a KeyError
        says how many are not cached and names the first few. A relpath cached twice gives its
        last position."""
        return self.records.positions(relpaths)

    def _frames(self, i: int) -> np.ndarray:
        row = self.extents[i]
        shard, offset, frames = int(row["shard"]), int(row["offset"]), int(row["frames"])
        arr = self._shards.get(shard)
        if arr is None:
            arr = self._shards[shard] = np.load(_shard_paths(self.folder, shard)[0], mmap_mode="r")
        return arr[offset:offset + frames]

    def num_frames(self, i: int) -> int:
        return int(self.extents[i]["frames"])

    def fps(self, i: int) -> float:
        """Source frame rate; the cached frames are every `params['stride']`-th of them."""
        return float(self.extents[i]["fps"])

    def clip(self, i: int, num_frames: int, start="first", rng=None) -> np.ndarray:
        """uint8 (T, H, W, 3): T consecutive cached frames; a short video repeats its last frame.

        start: "first" (frame 0, the paper's protocol), "random" (uniform over the starts that
        fit, from `rng`: a numpy Generator, a seed or None) or a frame index.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        frames = self._frames(i)
        total = frames.shape[0]
        if start == "first":
            begin = 0
        elif start == "random":
            gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
            begin = int(gen.integers(0, max(0, total - num_frames) + 1))
        elif isinstance(start, (int, np.integer)) and not isinstance(start, bool):
            if not 0 <= start < total:
                raise ValueError(f"start {start} outside video {self.records[i].path} "
                                 f"({total} cached frames)")
            begin = int(start)
        else:
            raise ValueError(f"start must be 'first', 'random' or a frame index, got {start!r}")
        out = np.empty((num_frames, *frames.shape[1:]), np.uint8)
        got = min(num_frames, total - begin)
        out[:got] = frames[begin:begin + got]
        out[got:] = frames[begin + got - 1]
        return out

    def uniform_clips(self, i: int, num_clips: int, num_frames: int) -> np.ndarray:
        """`num_clips` clips spaced evenly over the video (as decode.read_uniform_clips): (N, T, H, W, 3)."""
        from videodata.decode import uniform_starts

        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        starts = uniform_starts(self.num_frames(i), num_clips, num_frames)
        return np.stack([self.clip(i, num_frames, start=s) for s in starts])


def _open_extents(folder: Path, count: int) -> np.ndarray:
    path = folder / EXTENTS_NAME
    try:
        extents = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise VideoDataError(f"{path}: missing or unreadable cache extents: {exc}") from exc
    if extents.dtype != EXTENT_DTYPE or extents.shape != (count,):
        raise VideoDataError(f"{path}: holds {extents.dtype} {extents.shape}, expected {count} rows of "
                             f"{EXTENT_DTYPE}")
    return extents


def _check_extents(index_path: Path, extents: np.ndarray, lengths: np.ndarray, records: CacheRecords) -> None:
    """Every video's frames lie inside its shard: one vectorised check over all videos."""
    shard = extents["shard"].astype(np.int64)
    offset = extents["offset"]
    frames = extents["frames"]
    known = (shard >= 0) & (shard < len(lengths))
    end = offset + frames
    bad = ~known | (frames < 1) | (offset < 0)
    limit = np.append(lengths, -1)[np.where(known, shard, len(lengths))]  # -1: no such shard
    bad |= end > limit
    if bad.any():
        i = int(np.argmax(bad))
        raise VideoDataError(f"{index_path}: entry for {records[i].path} points past the end of shard "
                             f"{int(shard[i])} (frames {int(offset[i])}..{int(end[i])})")


def _group_shards(todo: list[int], shards_per_job: int | None) -> list[list[int]]:
    per_job = shards_per_job or max(1, math.ceil(len(todo) / MAX_JOBS))
    return [todo[k:k + per_job] for k in range(0, len(todo), per_job)]


def _run_jobs(run_jobs: "RunJobs", groups: list[list[int]], calls: list[tuple], folder: Path, chunks: list,
              done: Callable[[int, dict], None], num_shards: int) -> None:
    """Run one `_build_shards` job per group through `run_jobs`, then take each group's shards;
    raise ShardJobsError if any job failed or left a shard unwritten."""
    reports = run_jobs(_build_shards, calls)
    missing = []
    for group in groups:
        for shard in group:
            meta = _shard_complete(folder, shard)
            if meta is not None and len(meta["videos"]) == len(chunks[shard]):
                done(shard, meta)
            else:
                missing.append(shard)
    failed = [r for r in reports if not r.ok]
    if failed or missing:
        first = "the jobs ended without writing them"
        if failed:
            first = f"{failed[0].name}: {failed[0].error} (log: {failed[0].log})"
        raise ShardJobsError(f"{len(failed)} of {len(reports)} clip cache jobs failed and {len(missing)} of "
                             f"{num_shards} shards are missing under {folder}; the finished shards are "
                             f"kept, so building again resumes. First: {first}", reports)

