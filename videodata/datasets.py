"""Torch Datasets that decode on the fly (PyAV). For training at speed use the clip cache
(`videodata.cache`); these are for evaluation, small sets and cache-free baselines.

Every failure while reading a video surfaces as a VideoDecodeError naming the file, also from a
DataLoader worker (the error type survives the worker -> main process re-raise).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from videodata.clips import to_model_input
from videodata.decode import Size, read_clip, read_uniform_clips
from videodata.errors import VideoDataError, VideoDecodeError
from videodata.records import VideoRecord

SAMPLINGS = ("first", "random", "uniform")


class UCF101Videos(Dataset):
    """(clip, label) pairs: clip is float (C, T, H, W) in [-1, 1], or (N, C, T, H, W) for
    sampling="uniform" with num_clips > 1 (N evenly spaced clips, for video-level accuracy).

    sampling: "first" (the paper's first T frames), "random" (a random start drawn from torch's
    RNG, so DataLoader worker seeding and `torch.manual_seed` make it reproducible) or "uniform".
    Works for any records, labeled (load_split) or not (list_videos: label -1).

    With DataLoader workers, prefer `multiprocessing_context="forkserver"` (or "spawn"): a worker
    forked from a process that has already run FFmpeg and OpenMP threads can deadlock (seen once
    in this suite's tests). The dataset is only records and settings, so it pickles cheaply.
    """

    def __init__(self, records: Sequence[VideoRecord], num_frames: int, size: Size, *,
                 sampling: str = "first", num_clips: int = 1, stride: int = 1,
                 target_fps: float | None = None, resize: str = "crop", threads: int = 1):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if num_clips != 1 and sampling != "uniform":
            raise ValueError("num_clips > 1 needs sampling='uniform'")
        self.records = list(records)
        self.num_frames = num_frames
        self.size = size
        self.sampling = sampling
        self.num_clips = num_clips
        self.stride = stride
        self.target_fps = target_fps
        self.resize = resize
        # One decoder thread per sample: DataLoader workers already decode in parallel.
        self.threads = threads

    def __len__(self) -> int:
        return len(self.records)

    def _read(self, rec: VideoRecord) -> np.ndarray:
        kw = dict(stride=self.stride, target_fps=self.target_fps, resize=self.resize,
                  threads=self.threads)
        if self.sampling == "uniform":
            clips = read_uniform_clips(rec.path, self.num_clips, self.num_frames, self.size, **kw)
            return clips[0] if self.num_clips == 1 else clips
        if self.sampling == "random":
            seed = int(torch.randint(0, 2**62, ()).item())
            return read_clip(rec.path, self.num_frames, self.size, start="random",
                             rng=np.random.default_rng(seed), **kw)
        return read_clip(rec.path, self.num_frames, self.size, start="first", **kw)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rec = self.records[index]
        try:
            clip = self._read(rec)
        except VideoDataError:
            raise
        except Exception as exc:  # anything unexpected still names the file
            raise VideoDecodeError(rec.path, f"{type(exc).__name__}: {exc}") from exc
        return to_model_input(clip), rec.label
