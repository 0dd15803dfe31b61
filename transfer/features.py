"""Frozen features of a backbone, extracted once on the device and cached for every fraction and seed.

A feature file holds, for every video of one list (a split's train or test list), the pooled
features of N clips spread evenly over the video: float32 (videos, clips, dims), with the labels
and relpaths. Its name is a hash of everything that changes the numbers (checkpoint file hash,
init and init seed, the video list, clip frames/size/count, layer, pooling, precision, and the
videos BatchNorm statistics were re-estimated on, if they were), so a
probe sweep extracts each (checkpoint, init, split, clip protocol) once and every cell of it
only reads. Concurrent cells wanting the same file serialise on a lock file: one extracts, the
others wait and read. Files are written atomically.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from runkit.atomic import atomic_write_with
from runkit.device import DevicePolicy
from runkit.logging import progress
from videodata.clips import ClipDataset, collate_clips, loader_context
from videodata.clips import to_model_input

# "tokens": the map's positions as tokens, (N = T'H'W') x C, flattened (the attentive probe's input)
POOLINGS = ("avg", "max", "avgmax", "flatten", "tokens")
# "stored": BatchNorm normalises with the running statistics the checkpoint holds (a GAN
# discriminator's are about half generated clips); "train_videos": re-estimated first on the
# clips of the split's training videos (labels unused), then frozen for every list
BN_STATS = ("stored", "train_videos")
FORMAT = "vganbench.features/1"


@dataclass
class FeatureSpec:
    layer: str = "penultimate"      # a backbone feature layer: block1..block4 / penultimate
    pooling: str = "avgmax"
    num_clips: int = 10
    batch_size: int = 64            # clips per extraction batch
    bn_stats: str = "stored"        # stored | train_videos (BN_STATS); stored chosen on validation (RESULTS.md)

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"features.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.bn_stats not in BN_STATS:
            raise ValueError(f"features.bn_stats must be one of {BN_STATS}, got {self.bn_stats!r}")
        if self.num_clips < 1 or self.batch_size < 1:
            raise ValueError(f"features.num_clips and features.batch_size must be >= 1, got "
                             f"{self.num_clips}, {self.batch_size}")


def pool(feature_map: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, D)."""
    if pooling == "avg":
        return feature_map.mean(dim=(2, 3, 4))
    if pooling == "max":
        return feature_map.amax(dim=(2, 3, 4))
    if pooling == "avgmax":
        return torch.cat([feature_map.mean(dim=(2, 3, 4)), feature_map.amax(dim=(2, 3, 4))], dim=1)
    if pooling == "tokens":
        return feature_map.flatten(2).transpose(1, 2).flatten(1)
    return feature_map.flatten(1)


@torch.no_grad()
def extract_batch(backbone: nn.Module, clips: torch.Tensor, spec: FeatureSpec, policy: DevicePolicy,
                  forward_features: Callable | None = None) -> torch.Tensor:
    """Pooled features of a uint8 batch of videos (B, N, T, H, W, 3): float32 (B, N, D) on the device.
    `forward_features` stands in for `backbone.forward_features` (a compiled one)."""
    forward_features = forward_features or backbone.forward_features
    b, n = clips.shape[:2]
    x = to_model_input(policy.to(clips.flatten(0, 1)), channels_last=policy.channels_last)
    with policy.autocast():
        maps = forward_features(x, spec.layer)
    return pool(maps.float(), spec.pooling).reshape(b, n, -1)


@torch.no_grad()
def extract_features(backbone: nn.Module, dataset: ClipDataset, spec: FeatureSpec, policy: DevicePolicy, *,
                     loader_workers: int = 0, show_progress: bool = False) -> np.ndarray:
    """float32 (videos, clips, dims) for every video of `dataset` (sampling="uniform"), batched on the device."""
    backbone.eval()
    loader = DataLoader(dataset, batch_size=max(1, spec.batch_size // dataset.num_clips), shuffle=False,
                        num_workers=loader_workers, collate_fn=collate_clips, pin_memory=policy.pin_memory,
                        multiprocessing_context=loader_context(loader_workers),
                        generator=torch.Generator().manual_seed(0))
    forward_features = policy.maybe_compile(backbone.forward_features)
    out = [extract_batch(backbone, clips, spec, policy, forward_features)
           for clips, _ in progress(loader, desc="features", unit="batch", disable=not show_progress)]
    return torch.cat(out).cpu().numpy()  # one copy back: features then move to the probes once


class _FeatureForward(nn.Module):
    """uint8 (B, N, T, H, W, 3) batches -> the layer's features: the model `update_bn` runs."""

    def __init__(self, backbone: nn.Module, spec: FeatureSpec, policy: DevicePolicy):
        super().__init__()
        self.backbone, self.spec, self.policy = backbone, spec, policy

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = to_model_input(self.policy.to(clips.flatten(0, 1)), channels_last=self.policy.channels_last)
        with self.policy.autocast():
            return self.backbone.forward_features(x, self.spec.layer)


@torch.no_grad()
def reestimate_batchnorm(backbone: nn.Module, dataset: ClipDataset, spec: FeatureSpec, policy: DevicePolicy, *,
                         loader_workers: int = 0) -> int:
    """Replace every BatchNorm's running statistics by their average over one pass of `dataset`'s
    clips (torch.optim.swa_utils.update_bn: statistics reset, cumulative average), up to the
    features' layer; the backbone is left in eval mode. Returns the number of BatchNorm layers."""
    from torch.optim.swa_utils import update_bn

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return 0
    loader = DataLoader(dataset, batch_size=max(1, spec.batch_size // dataset.num_clips), shuffle=False,
                        num_workers=loader_workers, collate_fn=collate_clips, pin_memory=policy.pin_memory,
                        multiprocessing_context=loader_context(loader_workers),
                        generator=torch.Generator().manual_seed(0))
    update_bn(loader, _FeatureForward(backbone, spec, policy))
    backbone.eval()
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())


@dataclass(frozen=True)
class FeatureKey:
    checkpoint_sha256: str
    init: str
    init_seed: int
    list_name: str          # e.g. "split1_train"
    relpaths_sha256: str
    frames: int
    size: int
    data_fingerprint: str
    spec: dict              # FeatureSpec as a dict
    precision: str = "fp32"
    bn_videos_sha256: str = ""  # bn_stats="train_videos": the videos the statistics came from

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def filename(self) -> str:
        return f"{self.list_name}_{self.init}_{self.spec['layer']}-{self.spec['pooling']}_{self.digest()}.npz"


def relpaths_sha256(relpaths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(relpaths).encode()).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class FeatureSet:
    features: np.ndarray    # (videos, clips, dims)
    labels: np.ndarray      # (videos,)
    relpaths: list[str]
    path: Path


def load_feature_file(path: Path) -> FeatureSet:
    with np.load(path, allow_pickle=False) as data:
        if str(data["format"]) != FORMAT:
            raise ValueError(f"{path} is not a feature file of format {FORMAT}")
        return FeatureSet(data["features"], data["labels"], [str(r) for r in data["relpaths"]], path)


def cached_features(folder: str | Path, key: FeatureKey,
                    compute: Callable[[], tuple[np.ndarray, Sequence[int], Sequence[str]]]) -> tuple[FeatureSet, bool]:
    """Read `key`'s feature file, or (under a lock, once) compute and write it.

    `compute()` returns (features, labels, relpaths). Returns (FeatureSet, extracted_now)."""
    path = Path(folder) / key.filename()
    if path.is_file():
        return load_feature_file(path), False
    with _locked(path.with_suffix(".lock")):
        if path.is_file():  # another job extracted it while this one waited
            return load_feature_file(path), False
        features, labels, relpaths = compute()
        if features.shape[0] != len(labels) or len(labels) != len(relpaths):
            raise ValueError(f"feature extraction returned {features.shape[0]} rows, {len(labels)} labels "
                             f"and {len(relpaths)} paths for {path.name}")
        payload = {"format": np.array(FORMAT), "features": features.astype(np.float32),
                   "labels": np.asarray(labels, np.int64), "relpaths": np.asarray(relpaths, dtype=str),
                   "key": np.array(json.dumps(asdict(key), sort_keys=True))}
        atomic_write_with(path, lambda handle: np.savez(handle, **payload))
    return load_feature_file(path), True
