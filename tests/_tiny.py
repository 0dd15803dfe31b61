"""Tiny stand-ins shared by the tests: a backbone export without running a GAN, a tiny synthetic
set and recipe, and a sweep spec over them (run in-process)."""
from __future__ import annotations

from pathlib import Path

from pretrain.export import export_random
from transfer.sweeps import SweepSpec

# recipe overrides (key=value) that make every protocol take seconds on 2 cores
TINY_RECIPE = (
    "finetune.iterations=6", "finetune.batch_size=4", "finetune.lr=1e-3", "finetune.eval_clips=2",
    "finetune.eval_batch=8", "finetune.checkpoint_every=2", "finetune.log_every=2", "finetune.sampling=random",
    "probe.c_grid=[0.1,1.0]", "probe.folds=2", "probe.max_iter=100", "probe.train_clips=2", "probe.knn_k=[3]",
    "features.num_clips=2", "features.batch_size=8",
    "cache.train_max_frames=20", "cache.eval_max_frames=20", "runtime.device=cpu",
)

# A 3-class synthetic set of 20-frame 32x32 videos, one video per group: generated in seconds.
TINY_SET = dict(num_classes=3, clips_per_group=1, unlabeled_videos=0, frames=20, frame_width=32, frame_height=32,
                workers=1)


def tiny_sweep_spec(base: str | Path, checkpoint: str | Path, out: str, **overrides) -> SweepSpec:
    """A SweepSpec over the tiny set under `base` (data/, cache/, `out`/), run in-process."""
    base = Path(base)
    spec = dict(fractions=(0.1, 1.0), seeds=(0, 1), protocols=("finetune", "linear"),
                checkpoint=str(checkpoint), root=str(base / "data"), overrides=TINY_RECIPE,
                out=str(base / out), cache_root=str(base / "cache"), executor="debug", threads=1,
                cache_workers=1, show_progress=False, synthetic=TINY_SET)
    spec.update(overrides)
    return SweepSpec(**spec)


def write_tiny_export(path: str | Path, *, width: int = 2, frames: int = 16, size: int = 16, seed: int = 123,
                      step: int = 0) -> Path:
    """A randomly initialised backbone saved as a pretraining export."""
    return export_random(path, {"width": width, "frames": frames, "size": size}, seed=seed, step=step)
