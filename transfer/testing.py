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


# A 3-class synthetic set of 20-frame 32x32 videos, one video per group: generated in seconds.
TINY_SET = dict(num_classes=3, clips_per_group=1, unlabeled_videos=0, frames=20, width=32, height=32,
                workers=1)


def tiny_sweep_spec(root: str | Path, checkpoint: str | Path, out: str, **overrides):
    """A SweepSpec over the tiny set under `root` (data/, cache/, `out`/), run in-process."""
    from transfer.runner import SweepSpec

    root = Path(root)
    spec = dict(fractions=(0.1, 1.0), seeds=(0, 1), protocols=("finetune", "linear"),
                checkpoint=str(checkpoint), root=str(root / "data"), overrides=TINY_RECIPE,
                out=str(root / out), cache_root=str(root / "cache"), executor="debug", threads=1,
                cache_workers=1, show_progress=False, synthetic=TINY_SET)
    spec.update(overrides)
    return SweepSpec(**spec)


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
