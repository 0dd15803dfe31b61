"""The one dataset and batch sampler over a clip cache, for every stage that trains or evaluates.

`ClipDataset` serves uint8 clips `(T, H, W, 3)` (or `(N, T, H, W, 3)` for N evenly spaced clips
per video) with their labels; the model input is made on the device from the uint8 batch
(`to_model_input`, here beside the dataset, so a training or evaluation worker never loads
PyAV), so DataLoader workers and host-to-device copies move a quarter of the bytes of float32.

Sampling is stateless: `ClipBatchSampler` yields `(item, epoch)` keys and a random clip start
comes from a generator seeded by `(seed, epoch, video)`. Any number of DataLoader workers, any
number of data-parallel ranks and a resumed run therefore see exactly the same clips; a run's
data state is its step count.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from runkit.processes import START_METHOD

SAMPLINGS = ("first", "random", "uniform", "consecutive")


def consecutive_clips(lengths: Sequence[int], frames: int, skip: int = 2,
                      max_clips: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The original's cut of each video into clips (cvondrick/videogan's data preparation): skip
    the first `skip` frames, then up to `max_clips` consecutive clips of `frames` frames. A video
    too short for one whole clip still gives one, from its first usable frame (the cache repeats
    its last frame), so no video is lost; a video with no frames gives none.

    Returns (position of the clip's video in `lengths`, start frame), int64 arrays in video order."""
    if frames < 1 or skip < 0 or max_clips < 1:
        raise ValueError(f"consecutive clips need frames >= 1, skip >= 0 and max_clips >= 1; got "
                         f"{frames}, {skip}, {max_clips}")
    lengths = np.asarray(lengths, dtype=np.int64)
    counts = np.clip((lengths - skip) // frames, 1, max_clips)
    counts[lengths <= 0] = 0
    video = np.repeat(np.arange(len(lengths), dtype=np.int64), counts)
    within = np.arange(len(video), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    first = np.minimum(skip, np.maximum(lengths - 1, 0))
    return video, np.repeat(first, counts) + within * frames


class ClipDataset(Dataset):
    """Clips of `frames` frames from a `ClipCache` (or anything with its `clip`, `uniform_clips`,
    `num_frames` and `records`).

    items: the cache indices this dataset serves (default: every video); item i is video items[i].
    sampling: "first" (frame `first_frame`, 0 by default: the paper's transfer protocol; the
    original's loader skips 2), "random" (a start drawn from (seed,
    epoch, video)), "uniform" (`num_clips` clips spread evenly over the cached video),
    "consecutive" (the original's pretraining data: every video cut into up to `max_clips`
    consecutive clips after `skip` frames, see `consecutive_clips`; an item is one clip, so a
    long video is drawn more often, as in the original).
    views: with "random", that many clips of one video with independent starts, `(V, T, H, W, 3)`
    (the two views of a contrastive pair).
    A key is an item index or an `(item, epoch)` pair; the result is `(uint8 tensor, label)`.
    """

    def __init__(self, cache, frames: int, *, sampling: str = "first", num_clips: int = 1,
                 items: Sequence[int] | None = None, seed: int = 0, views: int = 1, skip: int = 2,
                 max_clips: int = 100, first_frame: int = 0):
        if sampling not in SAMPLINGS:
            raise ValueError(f"clip sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if num_clips < 1 or (num_clips > 1 and sampling != "uniform"):
            raise ValueError(f"num_clips={num_clips}: more than one clip per video needs sampling='uniform'")
        if views < 1 or (views > 1 and sampling != "random"):
            raise ValueError(f"views={views}: several views of a video need sampling='random'")
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.cache, self.frames, self.sampling, self.num_clips, self.seed = cache, frames, sampling, num_clips, seed
        self.views, self.first_frame = views, first_frame
        if first_frame < 0:
            raise ValueError(f"first_frame must be >= 0, got {first_frame}")
        self.items = np.arange(len(cache), dtype=np.int64) if items is None else np.asarray(items, dtype=np.int64)
        self.starts = None
        if sampling == "consecutive":
            extents = getattr(cache, "extents", None)  # a ClipCache: every length without a loop
            lengths = (np.asarray(extents["frames"])[self.items] if extents is not None
                       else [cache.num_frames(int(v)) for v in self.items])
            position, self.starts = consecutive_clips(lengths, frames, skip, max_clips)
            self.items = self.items[position]
        self.fingerprint = str(getattr(cache, "fingerprint", ""))

    def __len__(self) -> int:
        return len(self.items)

    def video(self, item: int) -> int:
        return int(self.items[item])

    def label(self, item: int) -> int:
        labels = getattr(self.cache, "labels", None)  # a ClipCache's label column; else its records
        return int(labels[self.video(item)] if labels is not None else self.cache.records[self.video(item)].label)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        item, epoch = key if isinstance(key, tuple) else (key, 0)
        video = self.video(item)
        if self.sampling == "uniform":
            clip = self.cache.uniform_clips(video, self.num_clips, self.frames)
        elif self.sampling == "random":
            rng = np.random.default_rng([self.seed, int(epoch), video])
            clips = [self.cache.clip(video, self.frames, start="random", rng=rng) for _ in range(self.views)]
            clip = clips[0] if self.views == 1 else np.stack(clips)
        elif self.sampling == "consecutive":
            clip = self.cache.clip(video, self.frames, start=int(self.starts[item]))
        else:
            start = "first" if not self.first_frame else min(self.first_frame, self.cache.num_frames(video) - 1)
            clip = self.cache.clip(video, self.frames, start=start)
        return torch.from_numpy(np.ascontiguousarray(clip)), self.label(item)


class ArrayClips(Dataset):
    """In-memory uint8 clips `(N, T, H, W, 3)` with the dataset interface of ClipDataset (keys may be
    `(item, epoch)` pairs); for tests and benchmarks that train without a cache."""

    def __init__(self, clips, labels: Sequence[int] | None = None, fingerprint: str = "in-memory"):
        self.clips = torch.as_tensor(clips)
        if self.clips.dtype != torch.uint8 or self.clips.dim() not in (5, 6):
            raise ValueError(f"ArrayClips expects uint8 (N, [V,] T, H, W, 3); got {self.clips.dtype} "
                             f"{tuple(self.clips.shape)}")
        self.labels = list(labels) if labels is not None else [-1] * len(self.clips)
        self.fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        item = key[0] if isinstance(key, tuple) else key
        return self.clips[item], self.labels[item]


class ClipBatchSampler(Sampler[list]):
    """Batches of `(item, epoch)` keys: global batch s is positions [s*B, (s+1)*B) of an endless
    walk through seeded permutations of the items (epoch e: permutation e; a batch may span two
    epochs), or with `replacement` B items drawn uniformly from (seed, s); rank r of `world_size`
    takes the r-th slice of it.

    The global batch at a step is the same set of clips for any world size, and a sampler started
    at `start_step` yields exactly what one started at 0 yields from that step on. `steps` bounds
    the iteration (the DataLoader's length); None iterates without end.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, start_step: int = 0,
                 steps: int | None = None, rank: int = 0, world_size: int = 1, replacement: bool = False):
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty set of clips")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be a positive multiple of the world size {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.steps = start_step, steps
        self.rank, self.world_size = rank, world_size
        self.replacement = replacement
        self._epoch, self._perm = -1, np.empty(0, np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._epoch = epoch
        return self._perm

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        if self.replacement:  # each item drawn uniformly, as cvondrick/videogan's donkey_video3 does
            items = np.random.default_rng([self.seed, step]).integers(0, self.num_items, self.batch_size)
            return [(int(item), step) for item in items]  # keyed by step: a clip start per draw
        keys = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(position, self.num_items)
            keys.append((int(self.permutation(epoch)[offset]), epoch))
        return keys

    def __iter__(self) -> Iterator[list]:
        local = self.batch_size // self.world_size
        step = self.start_step
        while self.steps is None or step < self.steps:
            keys = self.global_batch(step)
            yield keys[self.rank * local:(self.rank + 1) * local]
            step += 1

    def __len__(self) -> int:
        return (self.steps - self.start_step) if self.steps is not None else 2**31 - 1


def collate_clips(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 clips stacked, int64 labels)."""
    clips, labels = zip(*items)
    return torch.stack(clips), torch.as_tensor(labels, dtype=torch.int64)


def loader_context(workers: int) -> str | None:
    """DataLoader workers start like every worker of the suite (runkit.processes: fork server)."""
    return START_METHOD if workers > 0 else None


def to_model_input(clip, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (C, T, H, W) in [-1, 1]; batched (..., T, H, W, 3) ->
    (..., C, T, H, W). The one conversion every stage uses, for numpy arrays and torch tensors on
    any device (convert after moving the uint8 batch to the device: a quarter of the bytes).

    channels_last: keep the permuted view, whose memory already is channels_last(_3d) order
    (the layout the memory-format option of the device policy wants); else a contiguous NCTHW copy.
    """
    x = torch.as_tensor(clip)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 clip, got {x.dtype}")
    if x.ndim < 4:
        raise ValueError(f"expected (T, H, W, 3) or (B, T, H, W, 3), got shape {tuple(x.shape)}")
    if x.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels last, got shape {tuple(x.shape)}")
    lead = x.ndim - 4
    x = x.permute(*range(lead), x.ndim - 1, lead, lead + 1, lead + 2)
    x = x.float().div_(127.5).sub_(1.0) if channels_last else x.float().contiguous().div_(127.5).sub_(1.0)
    return x
