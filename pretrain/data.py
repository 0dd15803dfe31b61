"""Unlabeled clips for pretraining: pick the videos, decode them once into a ClipCache at the
training resolution, and sample clips from it.

Sampling is stateless: the batch sampler yields `(index, epoch)` keys and the clip start of a
"random" clip comes from a generator seeded by (seed, epoch, index). So any number of loader
workers, any number of data-parallel ranks and a resumed run all see the same clips.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

log = logging.getLogger(__name__)

SAMPLING = ("first", "random")


def resolve_path(path: str | Path, repo_root: Path) -> Path:
    """Relative paths in configs are relative to the repository root, never the cwd."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else repo_root / path


def select_records(data_cfg: Any, repo_root: Path) -> tuple[list, str]:
    """The videos to pretrain on, labels ignored, and a one-line description."""
    source = data_cfg.source
    if source == "synthetic":
        from videodata.synthetic import SyntheticConfig, generate

        spec = dict(data_cfg.synthetic)
        spec["root"] = str(resolve_path(spec.get("root") or "outputs/data/synthetic", repo_root))
        layout = generate(SyntheticConfig(**spec))
        from videodata.folder import list_videos

        records = list(list_videos(layout.unlabeled_dir)) if spec.get("unlabeled_videos", 1) else []
        if data_cfg.include_train:
            from videodata.ucf101 import load_split

            records += load_split(layout.video_root, layout.lists_dir, data_cfg.split, "train")
        desc = f"synthetic set {layout.root} ({len(records)} videos)"
    elif source == "folder":
        if not data_cfg.root:
            raise ValueError("data=folder needs data.root (a directory of videos or a file list)")
        from videodata.folder import list_videos

        root = resolve_path(data_cfg.root, repo_root)
        records = list(list_videos(root))
        desc = f"folder {root} ({len(records)} videos)"
    elif source == "ucf101":
        if not data_cfg.root or not data_cfg.lists_dir:
            raise ValueError("data=ucf101 needs data.root (the UCF-101 folder) and data.lists_dir "
                             "(ucfTrainTestlist)")
        from videodata.ucf101 import load_split

        root, lists = resolve_path(data_cfg.root, repo_root), resolve_path(data_cfg.lists_dir, repo_root)
        records = load_split(root, lists, data_cfg.split, "train", missing=data_cfg.missing)
        desc = f"UCF101 split {data_cfg.split} training videos under {root} ({len(records)}, labels ignored)"
    else:
        raise ValueError(f"unknown data.source {source!r}; choose synthetic, folder, ucf101 or cache")
    if not records:
        raise ValueError(f"no videos found for data.source={source!r} ({desc})")
    return records, desc


def build_cache(data_cfg: Any, frames: int, size: int, repo_root: Path):
    """Open (data=cache) or build-or-reuse the decode-once ClipCache for this data config."""
    from videodata.cache import ClipCache

    if data_cfg.source == "cache":
        if not data_cfg.cache_dir:
            raise ValueError("data=cache needs data.cache_dir (a folder written by ClipCache.build)")
        cache = ClipCache.open(resolve_path(data_cfg.cache_dir, repo_root))
        log.info("pretraining on the clip cache %s (%d videos)", data_cfg.cache_dir, len(cache.records))
    else:
        records, desc = select_records(data_cfg, repo_root)
        max_frames = max(frames, data_cfg.max_frames) if data_cfg.sampling == "random" else frames
        cache = ClipCache.build(records, resolve_path(data_cfg.cache_root, repo_root), size=size,
                                max_frames=max_frames, stride=data_cfg.stride, resize=data_cfg.resize,
                                workers=data_cfg.decode_workers)
        log.info("pretraining on %s", desc)
    return cache


class CacheClips(Dataset):
    """Clips of `frames` frames from a ClipCache as float (C, T, H, W) in [-1, 1]; keyed by
    `(index, epoch)` so random starts are reproducible without worker state."""

    def __init__(self, cache, frames: int, sampling: str = "first", seed: int = 0):
        if sampling not in SAMPLING:
            raise ValueError(f"unknown clip sampling {sampling!r}; choose one of {list(SAMPLING)}")
        self.cache, self.frames, self.sampling, self.seed = cache, frames, sampling, seed
        self.fingerprint = str(getattr(cache, "fingerprint", ""))

    def __len__(self) -> int:
        return len(self.cache.records)

    def __getitem__(self, key) -> torch.Tensor:
        from videodata.decode import to_model_input

        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if self.sampling == "first":
            clip = self.cache.clip(index, self.frames, start="first")
        else:
            rng = np.random.default_rng([self.seed, epoch, index])
            clip = self.cache.clip(index, self.frames, start="random", rng=rng)
        return to_model_input(clip)


class TensorClips(Dataset):
    """In-memory clips (N, C, T, H, W), for tests and benchmarks."""

    def __init__(self, clips: torch.Tensor, fingerprint: str = "in-memory"):
        if clips.dim() != 5:
            raise ValueError(f"TensorClips expects (N, C, T, H, W); got {tuple(clips.shape)}")
        self.clips, self.fingerprint = clips, fingerprint

    def __len__(self) -> int:
        return self.clips.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        index = key[0] if isinstance(key, tuple) else key
        return self.clips[index]


class StepBatchSampler(Sampler[list]):
    """Per-rank batches of `(index, epoch)` keys from a DistributedSampler, starting at `step`.

    Step s of epoch e takes the s-th slice of this rank's share of the epoch's permutation, so
    the global batch at a step is the same set of clips for any world size, and a resumed run
    starts exactly where the checkpoint left off. Incomplete batches at an epoch's end are
    dropped.
    """

    def __init__(self, dataset_len: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, start_step: int = 0, shuffle: bool = True):
        self.sampler = DistributedSampler(range(dataset_len), num_replicas=world_size, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.steps_per_epoch = len(self.sampler) // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{dataset_len} clips over {world_size} rank(s) cannot fill one batch of "
                             f"{batch_size} per rank; lower trainer.batch_size or add videos")
        self.start_step = start_step

    def __iter__(self) -> Iterator[list]:
        step = self.start_step
        while True:
            epoch, pos = divmod(step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            for p in range(pos, self.steps_per_epoch):
                yield [(i, epoch) for i in indices[p * self.batch_size:(p + 1) * self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # infinite in practice; DataLoader only needs a number
        return 2**31 - 1


def collate_clips(items: Sequence) -> torch.Tensor:
    clips = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
    return torch.stack(clips)
