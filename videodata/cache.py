"""Decode-once clip cache: every video decoded once, at the training resolution, into uint8 shards.

Decoding while training cannot feed a GAN (see FACTS.md: reading a clip from a uint8 memmap is
~50x cheaper than decoding it). `ClipCache.build` decodes each video with
`videodata.decode.decode_video` and stores the frames of many videos concatenated in shard files:

    <cache_root>/<fingerprint>/
        shard_00000.npy   uint8 (sum of frames, H, W, 3), opened with np.load(mmap_mode="r")
        shard_00000.json  per video: offset, frame count, fps, or the decode error
        ...
        report.json       videos that could not be decoded or stabilised (path + error), skipped
        index.json        written last: its presence marks a finished cache

The folder name (`fingerprint`) hashes the parameters and the (path, size, mtime) of every
source, plus each record's label fields, so a changed source, list or parameter gives a new
folder and a finished cache is reused as is. Old folders are left in place (another run may
still read them); delete them by hand to reclaim the space.

Resume: a shard's .npy is written atomically and then its .json, so a shard with both files is
complete; a killed build rebuilds only the missing shards. Undecodable videos never stop the
build: they are listed in report.json and left out of `cache.records`.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from runkit.atomic import atomic_write_json, atomic_write_with
from runkit.logging import progress
from videodata.decode import decode_video, probe_video, uniform_starts
from videodata.errors import VideoDataError
from videodata.ucf101 import VideoRecord

if TYPE_CHECKING:  # videodata.stabilise imports OpenCV: only a stabilised build loads it
    from videodata.stabilise import StabiliseConfig

FORMAT = "vganbench.clipcache/1"
INDEX_NAME = "index.json"
REPORT_NAME = "report.json"
# 64 videos per shard: ~25 MB at 32 frames of 64x64, few enough files for 10k+ videos, and
# enough shards for 2 workers on a few hundred videos.
DEFAULT_VIDEOS_PER_SHARD = 64


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
    leaves the hash exactly as before stabilisation existed, so those caches are reused."""
    digest = hashlib.sha256()
    params = {"format": FORMAT, "size": list(_normalise_size(size)), "max_frames": max_frames,
              "stride": stride, "resize": resize, "videos_per_shard": videos_per_shard}
    if stabilise is not None:
        params["stabilise"] = stabilise
    digest.update(json.dumps(params, sort_keys=True).encode())
    for rec in records:
        digest.update(json.dumps([os.path.abspath(rec.path), *_source_stamp(rec.path), rec.relpath,
                                  rec.label, rec.class_name, rec.group, rec.clip]).encode())
    return digest.hexdigest()[:16]


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

    With `stabilise`, each video goes through `decode_stabilised`; one that cannot be stabilised
    is recorded like an undecodable one (its error names the reason), and one whose warp leaves
    the frame early keeps its stabilised frames, with the reason under "ended"."""
    torch.set_num_threads(1)  # decode_video is numpy/FFmpeg; keep torch from grabbing cores
    if stabilise is not None:
        import cv2

        from videodata.stabilise import decode_stabilised
        cv2.setNumThreads(1)  # one worker per core, like the decoder
    arrays, videos, offset = [], [], 0
    for path in paths:
        ended = None
        try:
            if stabilise is None:
                frames = decode_video(path, size, max_frames=max_frames, stride=stride, resize=resize)
            else:
                frames, report = decode_stabilised(path, size, max_frames=max_frames, stride=stride,
                                                   resize=resize, cfg=stabilise, return_report=True)
                ended = report.ended
            fps = probe_video(path).fps
        except Exception as exc:  # any failure is one video's problem, never the build's
            videos.append({"offset": offset, "frames": 0, "fps": 0.0,
                           "error": f"{type(exc).__name__}: {exc}"})
            continue
        arrays.append(frames)
        videos.append({"offset": offset, "frames": int(frames.shape[0]), "fps": float(fps),
                       "error": None, **({"ended": ended} if ended else {})})
        offset += frames.shape[0]
    data = np.concatenate(arrays) if arrays else np.zeros((0, *size, 3), np.uint8)
    npy, meta_path = _shard_paths(Path(folder), shard)
    atomic_write_with(npy, lambda handle: np.save(handle, data, allow_pickle=False))
    meta = {"shard": shard, "total_frames": int(data.shape[0]), "videos": videos}
    atomic_write_json(meta_path, meta)
    return meta


class ClipCache:
    """A finished cache folder: `records` (decodable videos, in build order) and their frames."""

    def __init__(self, folder: Path, index: dict):
        self.folder = Path(folder)
        self.fingerprint: str = index["fingerprint"]
        self.size: tuple[int, int] = tuple(index["params"]["size"])
        self.params: dict = index["params"]
        self._entries: list[dict] = index["videos"]
        self.records: list[VideoRecord] = [
            VideoRecord(path=e["path"], relpath=e["relpath"], label=e["label"],
                        class_name=e["class_name"], group=e["group"], clip=e["clip"])
            for e in self._entries]
        self._shards: dict[int, np.ndarray] = {}

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, records: Sequence[VideoRecord], cache_root: str | os.PathLike, *, size,
              max_frames: int | None, stride: int = 1, resize: str = "crop", workers: int = 2,
              videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD, show_progress: bool = True,
              on_shard_done: Callable[[int], None] | None = None,
              stabilise: "StabiliseConfig | None" = None) -> "ClipCache":
        """Decode `records` once into `<cache_root>/<fingerprint>/` (or reuse a finished one).

        `stabilise`: undo camera motion first (`videodata.stabilise.decode_stabilised`, the
        original VGAN's "frames-stable-nofail"); its config is part of the fingerprint and of
        `params`, and videos that cannot be stabilised are left out like undecodable ones.
        `on_shard_done(i)` is called in this process after shard i is on disk (tests use it to
        simulate a kill mid-build).
        """
        if not records:
            raise ValueError("ClipCache.build needs at least one video record")
        if resize not in ("crop", "stretch"):
            raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
        if stride < 1 or (max_frames is not None and max_frames < 1) or videos_per_shard < 1:
            raise ValueError(f"need stride >= 1, max_frames >= 1 or None, videos_per_shard >= 1; got "
                             f"{stride}, {max_frames}, {videos_per_shard}")
        hw = _normalise_size(size)
        stabilise_params = None if stabilise is None else stabilise.as_dict()
        fingerprint = cache_fingerprint(records, size=hw, max_frames=max_frames, stride=stride,
                                        resize=resize, videos_per_shard=videos_per_shard,
                                        stabilise=stabilise_params)
        folder = Path(cache_root) / fingerprint
        if (folder / INDEX_NAME).is_file():
            return cls.open(folder)
        folder.mkdir(parents=True, exist_ok=True)

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
            if workers <= 1 or len(todo) <= 1:
                for shard in todo:
                    done(shard, _build_shard(*args(shard)))
            else:
                # spawn, not fork: the caller may hold torch thread pools
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                    futures = {pool.submit(_build_shard, *args(s)): s for s in todo}
                    for future in as_completed(futures):
                        done(futures[future], future.result())
        finally:
            bar.close()

        entries, failed = [], []
        for shard in range(num_shards):
            for rec, video in zip(chunks[shard], metas[shard]["videos"]):
                if video["error"] is not None:
                    failed.append({"path": rec.path, "error": video["error"]})
                    continue
                size_bytes, mtime_ns = _source_stamp(rec.path)
                entries.append({**asdict(rec), "size_bytes": size_bytes, "mtime_ns": mtime_ns,
                                "shard": shard, "offset": video["offset"],
                                "frames": video["frames"], "fps": video["fps"]})
        atomic_write_json(folder / REPORT_NAME, {"videos": len(records), "cached": len(entries),
                                                 "failed": failed})
        if not entries:
            raise VideoDataError(f"no video in {len(records)} could be decoded; see "
                                 f"{folder / REPORT_NAME} (first: {failed[0]['path']}: {failed[0]['error']})")
        params = {"size": list(hw), "max_frames": max_frames, "stride": stride,
                  "resize": resize, "videos_per_shard": videos_per_shard}
        if stabilise_params is not None:
            params["stabilise"] = stabilise_params
        index = {"format": FORMAT, "fingerprint": fingerprint, "num_shards": num_shards,
                 "params": params, "videos": entries}
        atomic_write_json(folder / INDEX_NAME, index, indent=None)
        return cls.open(folder)

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike) -> "ClipCache":
        """Open a finished cache; check the index against every shard (shape, dtype, extents)."""
        folder = Path(folder)
        index_path = folder / INDEX_NAME
        try:
            index = json.loads(index_path.read_text())
        except FileNotFoundError:
            raise VideoDataError(f"{index_path}: no cache index (the build did not finish; "
                                 f"run ClipCache.build again to resume)") from None
        except (OSError, ValueError) as exc:
            raise VideoDataError(f"{index_path}: unreadable cache index: {exc}") from exc
        if index.get("format") != FORMAT:
            raise VideoDataError(f"{index_path}: format {index.get('format')!r}, expected {FORMAT!r}")
        h, w = index["params"]["size"]
        lengths = {}
        for shard in range(index["num_shards"]):
            npy, _ = _shard_paths(folder, shard)
            try:
                arr = np.load(npy, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise VideoDataError(f"{npy}: missing or unreadable cache shard: {exc}") from exc
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
                raise VideoDataError(f"{npy}: shard holds {arr.dtype} {arr.shape}, expected uint8 "
                                     f"(N, {h}, {w}, 3)")
            lengths[shard] = arr.shape[0]
        for entry in index["videos"]:
            end = entry["offset"] + entry["frames"]
            if entry["frames"] < 1 or end > lengths.get(entry["shard"], -1):
                raise VideoDataError(f"{index_path}: entry for {entry['path']} points past the end "
                                     f"of shard {entry['shard']} (frames {entry['offset']}..{end})")
        return cls(folder, index)

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_shards"] = {}  # memmaps are reopened in each DataLoader worker
        return state

    def _frames(self, i: int) -> np.ndarray:
        entry = self._entries[i]
        shard = entry["shard"]
        arr = self._shards.get(shard)
        if arr is None:
            arr = self._shards[shard] = np.load(_shard_paths(self.folder, shard)[0], mmap_mode="r")
        return arr[entry["offset"]:entry["offset"] + entry["frames"]]

    def num_frames(self, i: int) -> int:
        return self._entries[i]["frames"]

    def fps(self, i: int) -> float:
        """Source frame rate; the cached frames are every `params['stride']`-th of them."""
        return self._entries[i]["fps"]

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
                raise ValueError(f"start {start} outside video {self._entries[i]['path']} "
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
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        starts = uniform_starts(self.num_frames(i), num_clips, num_frames)
        return np.stack([self.clip(i, num_frames, start=s) for s in starts])
