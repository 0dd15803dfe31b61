"""Unlabeled clips for pretraining: pick the videos, decode them once into a ClipCache at the
training resolution, and serve a method's view of them through `videodata.clips.ClipDataset`."""
from __future__ import annotations

import json
import logging
from typing import Any

from omegaconf import OmegaConf

from pretrain.methods.base import DataView
from runkit.paths import resolve_path
from videodata.audit import AuditResult, audit_pool, check
from videodata.cache import REPORT_NAME, ClipCache
from videodata.clips import ClipDataset
from videodata.errors import VideoDataError
from videodata.folder import list_videos
from videodata.labeled import LabeledData, labeled_set
from videodata.sets import SETS
from videodata.synthetic import SyntheticConfig, generate
from videodata.sets.ucf101 import load_split

log = logging.getLogger(__name__)


class DataSelectionError(VideoDataError):
    """The data config names no usable videos (missing root, empty folder); says which key to set."""


def _synthetic(data_cfg: Any) -> SyntheticConfig:
    spec = OmegaConf.to_container(data_cfg.synthetic) if OmegaConf.is_config(data_cfg.synthetic) \
        else dict(data_cfg.synthetic)
    spec["root"] = str(resolve_path(spec.get("root") or "outputs/data/synthetic"))
    return SyntheticConfig(**spec)


def check_location(data_cfg: Any) -> None:
    """The data config's folders and files exist (a start-up check: no listing, no decoding)."""
    source = data_cfg.source
    needs = {"folder": ("data.root", data_cfg.root), "ucf101": ("data.root", data_cfg.root),
             "cache": ("data.cache_dir", data_cfg.cache_dir)}
    if source in needs:
        key, value = needs[source]
        if not value:
            raise DataSelectionError(f"data={source} needs {key}")
        if not resolve_path(value).exists():
            raise DataSelectionError(f"{key}={value}: {resolve_path(value)} does not exist")
    if source == "ucf101":
        if not data_cfg.lists_dir:
            raise DataSelectionError("data=ucf101 needs data.lists_dir (ucfTrainTestlist)")
        if not resolve_path(data_cfg.lists_dir).is_dir():
            raise DataSelectionError(f"data.lists_dir={data_cfg.lists_dir}: {resolve_path(data_cfg.lists_dir)} "
                                     f"is not a folder")
    audit = data_cfg.audit
    if audit.target in SETS and not resolve_path(audit.root).is_dir():
        raise DataSelectionError(f"data.audit.root={audit.root}: {resolve_path(audit.root)} is not a folder")


def select_records(data_cfg: Any) -> tuple[list, str]:
    """The videos to pretrain on, labels ignored, and a one-line description."""
    source = data_cfg.source
    if source == "synthetic":
        spec = _synthetic(data_cfg)
        layout = generate(spec)
        records = list(list_videos(layout.unlabeled_dir)) if spec.unlabeled_videos else []
        if data_cfg.include_train:
            records += SETS[spec.layout].load(layout.video_root, layout.lists_dir, data_cfg.split, "train")
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


def audit_target(data_cfg: Any) -> tuple[LabeledData | None, list[int]]:
    """The labeled set whose test lists the pool is audited against (None: no audit)."""
    audit = data_cfg.audit
    if audit.target == "none":
        return None, []
    if audit.target == "synthetic":
        spec = _synthetic(data_cfg)
        root = resolve_path(audit.root or spec.root)
        return labeled_set(spec.layout, root), list(audit.splits)
    return labeled_set(audit.target, resolve_path(audit.root)), list(audit.splits)


def audit(data_cfg: Any, records: list) -> AuditResult | None:
    """Run `data.audit` on the pool; stops (LeakageError) on a leak unless on_leak=warn."""
    target, splits = audit_target(data_cfg)
    if target is None:
        return None
    tests = {split: target.split(split, "test") for split in splits}
    result = audit_pool(records, tests, target=f"{data_cfg.audit.target} ({target.video_root})",
                        ucf_groups=target.target.name_groups)
    check(result, data_cfg.audit.on_leak, "pretraining data")
    log.info("leakage audit: %s", result.summary())
    return result


def build_cache(data_cfg: Any, frames: int, size: int) -> tuple[ClipCache, AuditResult | None]:
    """Open (data=cache) or build-or-reuse the decode-once ClipCache holding `frames` frames per
    video (more when clips start at random: `data.max_frames`), after the leakage audit."""
    if data_cfg.source == "cache":
        if not data_cfg.cache_dir:
            raise DataSelectionError("data=cache needs data.cache_dir (a folder written by ClipCache.build)")
        cache = ClipCache.open(resolve_path(data_cfg.cache_dir))
        log.info("pretraining on the clip cache %s (%d videos)", data_cfg.cache_dir, len(cache))
        return cache, audit(data_cfg, list(cache.records))
    records, desc = select_records(data_cfg)
    audited = audit(data_cfg, records)
    stabilise = stabilise_config(data_cfg)
    cache = ClipCache.build(records, resolve_path(data_cfg.cache_root), size=size,
                            max_frames=cached_frames(data_cfg, frames), stride=data_cfg.stride,
                            resize=data_cfg.resize, workers=data_cfg.decode_workers,
                            stabilise=stabilise)
    if stabilise is not None:
        counts = json.loads((cache.folder / REPORT_NAME).read_text())["stabilisation"]
        log.info("pretraining on %s, stabilised clip by clip: %d clips kept, %d dropped (%d of %d frames; "
                 "%s)", desc, counts["clips_stabilised"], counts["clips_dropped"], counts["frames_kept"],
                 counts["frames_decoded"], cache.folder / REPORT_NAME)
    else:
        log.info("pretraining on %s", desc)
    return cache, audited


def stabilise_config(data_cfg: Any):
    """The `videodata.stabilise.StabiliseConfig` of `data.stabilise` (None when off): failed clips
    dropped, `data.skip_frames` skipped first, up to `data.max_clips` clips per video."""
    section = data_cfg.stabilise
    if not section.enabled:
        return None
    from videodata.stabilise import StabiliseConfig  # OpenCV is imported only by a stabilised build

    knobs = OmegaConf.to_container(section) if OmegaConf.is_config(section) else dict(vars(section))
    knobs.pop("enabled")
    return StabiliseConfig(**knobs, on_failure="drop", skip=data_cfg.skip_frames, max_clips=data_cfg.max_clips)


def cached_frames(data_cfg: Any, frames: int) -> int:
    """Frames the cache keeps per video: a clip's for sampling=first, `data.max_frames` for random
    starts, and every clip's for the original's consecutive clips (skip + max_clips x frames);
    stabilised, every clip the stabiliser may cut (skip + max_clips x stabilise.clip_frames)."""
    if data_cfg.stabilise.enabled:
        return data_cfg.skip_frames + data_cfg.max_clips * data_cfg.stabilise.clip_frames
    if data_cfg.sampling == "consecutive":
        return data_cfg.skip_frames + data_cfg.max_clips * frames
    return max(frames, data_cfg.max_frames) if data_cfg.sampling == "random" else frames


def pretraining_dataset(data_cfg: Any, view: DataView, size: int, seed: int) -> tuple[ClipDataset, AuditResult | None]:
    """The cache-backed dataset serving a method's data view (unlabeled: labels are ignored), and
    the leakage audit's result (None when data.audit.target is none)."""
    cache, audited = build_cache(data_cfg, view.frames, size)
    if data_cfg.stabilise.enabled:  # every cache item is one stabilised clip, the skip already made
        dataset = ClipDataset(cache, view.frames, sampling=view.sampling, views=view.views, seed=seed,
                              skip=0, max_clips=1)
        return dataset, audited
    dataset = ClipDataset(cache, view.frames, sampling=view.sampling, views=view.views, seed=seed,
                          skip=data_cfg.skip_frames, max_clips=data_cfg.max_clips)
    if view.sampling == "consecutive":
        log.info("%d clips of %d frames from %d videos (up to %d per video after skipping %d frames)",
                 len(dataset), view.frames, len(cache), data_cfg.max_clips, data_cfg.skip_frames)
    return dataset, audited
