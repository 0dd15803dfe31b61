"""Unlabeled clips for pretraining: pick the videos, decode them once into a ClipCache at the
training resolution, and serve a method's view of them through `videodata.clips.ClipDataset`."""
from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from pretrain.methods.base import DataView
from runkit.paths import resolve_path
from videodata.cache import ClipCache
from videodata.clips import ClipDataset
from videodata.errors import VideoDataError
from videodata.folder import list_videos
from videodata.synthetic import SyntheticConfig, generate
from videodata.ucf101 import load_split

log = logging.getLogger(__name__)


class DataSelectionError(VideoDataError):
    """The data config names no usable videos (missing root, empty folder); says which key to set."""


def select_records(data_cfg: Any) -> tuple[list, str]:
    """The videos to pretrain on, labels ignored, and a one-line description."""
    source = data_cfg.source
    if source == "synthetic":
        spec = OmegaConf.to_container(data_cfg.synthetic) if OmegaConf.is_config(data_cfg.synthetic) \
            else dict(data_cfg.synthetic)
        spec["root"] = str(resolve_path(spec.get("root") or "outputs/data/synthetic"))
        layout = generate(SyntheticConfig(**spec))
        records = list(list_videos(layout.unlabeled_dir)) if spec.get("unlabeled_videos", 1) else []
        if data_cfg.include_train:
            records += load_split(layout.video_root, layout.lists_dir, data_cfg.split, "train")
        desc = f"synthetic set {layout.root} ({len(records)} videos)"
    elif source == "folder":
        if not data_cfg.root:
            raise DataSelectionError("data=folder needs data.root (a directory of videos or a file list)")
        root = resolve_path(data_cfg.root)
        records = list(list_videos(root))
        desc = f"folder {root} ({len(records)} videos)"
    elif source == "ucf101":
        if not data_cfg.root or not data_cfg.lists_dir:
            raise DataSelectionError("data=ucf101 needs data.root (the UCF-101 folder) and data.lists_dir "
                                     "(ucfTrainTestlist)")
        root, lists = resolve_path(data_cfg.root), resolve_path(data_cfg.lists_dir)
        records = load_split(root, lists, data_cfg.split, "train", missing=data_cfg.missing)
        desc = f"UCF101 split {data_cfg.split} training videos under {root} ({len(records)}, labels ignored)"
    else:
        raise DataSelectionError(f"unknown data.source {source!r}; choose synthetic, folder, ucf101 or cache")
    if not records:
        raise DataSelectionError(f"no videos found for data.source={source!r} ({desc})")
    return records, desc


def build_cache(data_cfg: Any, frames: int, size: int) -> ClipCache:
    """Open (data=cache) or build-or-reuse the decode-once ClipCache holding `frames` frames per
    video (more when clips start at random: `data.max_frames`)."""
    if data_cfg.source == "cache":
        if not data_cfg.cache_dir:
            raise DataSelectionError("data=cache needs data.cache_dir (a folder written by ClipCache.build)")
        cache = ClipCache.open(resolve_path(data_cfg.cache_dir))
        log.info("pretraining on the clip cache %s (%d videos)", data_cfg.cache_dir, len(cache))
        return cache
    records, desc = select_records(data_cfg)
    max_frames = max(frames, data_cfg.max_frames) if data_cfg.sampling == "random" else frames
    cache = ClipCache.build(records, resolve_path(data_cfg.cache_root), size=size, max_frames=max_frames,
                            stride=data_cfg.stride, resize=data_cfg.resize, workers=data_cfg.decode_workers)
    log.info("pretraining on %s", desc)
    return cache


def pretraining_dataset(data_cfg: Any, view: DataView, size: int, seed: int) -> ClipDataset:
    """The cache-backed dataset serving a method's data view (unlabeled: labels are ignored)."""
    cache = build_cache(data_cfg, view.frames, size)
    return ClipDataset(cache, view.frames, sampling=view.sampling, views=view.views, seed=seed)
