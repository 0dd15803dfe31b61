"""Tiny stand-ins for tests and benchmarks: a discriminator export written in the exact
`discriminator.pt` format (ARCHITECTURE.md) without running a GAN, and tiny recipes."""
from __future__ import annotations

from pathlib import Path

import torch

from runkit.atomic import atomic_torch_save
from transfer.classifier import EXPORT_FORMAT

TINY_RECIPE = {
    "finetune": {"iterations": 6, "batch_size": 4, "lr": 1e-3, "eval_clips": 2, "eval_batch": 8,
                 "checkpoint_every": 2, "log_every": 2, "sampling": "random"},
    "probe": {"c_grid": [0.1, 1.0], "folds": 2, "max_iter": 100, "train_clips": 2, "knn_k": 3},
    "features": {"num_clips": 2, "batch_size": 8},
    "cache": {"max_frames": 20},
}


def write_tiny_export(path: str | Path, *, width: int = 2, frames: int = 16, size: int = 16,
                      seed: int = 123, step: int = 0) -> Path:
    """A randomly initialised discriminator saved as a pretraining export."""
    from pretrain.models import build_discriminator

    arch = {"width": width, "frames": frames, "size": size}
    torch.manual_seed(seed)
    d = build_discriminator(arch)
    payload = {"format": EXPORT_FORMAT, "state_dict": {k: v.detach().clone() for k, v in d.state_dict().items()},
               "arch": d.arch.as_dict(), "clip": {"frames": frames, "size": size}, "step": step,
               "data_fingerprint": "tiny", "config": {"tiny": True}}
    path = Path(path)
    atomic_torch_save(payload, path)
    return path
