"""Frozen features of the discriminator, extracted once and cached for every fraction and seed.

A feature file holds, for every video of one list (a split's train or test list), the pooled
features of N uniformly spaced clips: float32 (videos, clips, dims), with the labels and
relpaths. Its name is a hash of everything that changes the numbers (checkpoint file hash, init
and init seed, the video list, clip frames/size/count, layer, pooling), so a linear-probe sweep
extracts each (checkpoint, init, split, clip protocol) once and every cell of it only reads.
Concurrent cells wanting the same file serialise on a lock file: one extracts, the others wait
and read. Files are written atomically.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from runkit.atomic import atomic_write_with
from transfer.finetune import ClipSource, to_model_input

LAYERS = ("penultimate", "block3")
POOLINGS = ("avg", "max", "avgmax", "flatten")
FORMAT = "vganbench.features/1"


@dataclass(frozen=True)
class FeatureSpec:
    layer: str = "penultimate"
    pooling: str = "avgmax"
    num_clips: int = 10
    batch_size: int = 64

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise ValueError(f"feature layer must be one of {LAYERS}, got {self.layer!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"feature pooling must be one of {POOLINGS}, got {self.pooling!r}")


def _layer_output(backbone: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    if layer == "penultimate":
        return backbone.forward_features(x)
    # "block3": the map after the third conv block's activation (4w channels at T/8, S/8, S/8)
    activations = 0
    for module in backbone.features:
        x = module(x)
        if isinstance(module, nn.LeakyReLU):
            activations += 1
            if activations == 3:
                return x
    raise ValueError("backbone has fewer than 3 activation layers; cannot take 'block3'")


def pool(feature_map: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, D)."""
    if pooling == "avg":
        return feature_map.mean(dim=(2, 3, 4))
    if pooling == "max":
        return feature_map.amax(dim=(2, 3, 4))
    if pooling == "avgmax":
        return torch.cat([feature_map.mean(dim=(2, 3, 4)), feature_map.amax(dim=(2, 3, 4))], dim=1)
    return feature_map.flatten(1)


@torch.no_grad()
def extract_features(backbone: nn.Module, source: ClipSource, indices: Sequence[int], *,
                     frames: int, spec: FeatureSpec) -> np.ndarray:
    """float32 (videos, clips, dims) for `spec.num_clips` uniformly spaced clips per video."""
    backbone.eval()
    chunks, pending, queued = [], [], 0

    def flush():
        batch = to_model_input(np.concatenate(pending))
        pending.clear()
        chunks.append(pool(_layer_output(backbone, batch, spec.layer), spec.pooling).float().numpy())

    for index in indices:
        pending.append(source.uniform_clips(int(index), spec.num_clips, frames))
        queued += spec.num_clips
        if queued >= spec.batch_size:
            flush()
            queued = 0
    if pending:
        flush()
    features = np.concatenate(chunks)
    return features.reshape(len(indices), spec.num_clips, -1)


@dataclass(frozen=True)
class FeatureKey:
    checkpoint_sha256: str
    init: str
    init_seed: int
    list_name: str          # e.g. "split1-train"
    relpaths_sha256: str
    frames: int
    size: int
    data_fingerprint: str
    spec: FeatureSpec

    def digest(self) -> str:
        blob = json.dumps({**asdict(self), "format": FORMAT}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def filename(self) -> str:
        return f"{self.list_name}_{self.init}_{self.spec.layer}-{self.spec.pooling}_{self.digest()}.npz"


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


def cached_features(folder: str | Path, key: FeatureKey, compute) -> tuple[FeatureSet, bool]:
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
