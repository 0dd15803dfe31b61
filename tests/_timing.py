"""Time limits and step counts for timing-dependent tests, scaled to the machine running them.

A fixed number of seconds that suits one machine flakes on a 3x slower one (seen here: an AVX2-only
CPU ran pretraining at 1.8 steps/s against 5.2), and a fixed step count that leaves time to
preempt a job on one machine finishes too early on a faster one. So the tests measure, once per
session, the time of one tiny GAN training step (the workload of the SLURM tests) and derive:

- `scaled(seconds)`: a time limit stretched by how much slower this machine is than the one the
  limits were tuned on (never shrunk: a fast machine keeps the tuned margins);
- `steps_for(seconds)`: how many tiny steps keep a job busy for at least that long here.
"""
from __future__ import annotations

import functools
import math
import statistics
import time

import torch

# One tiny GAN step (width 4, 16 frames at 32x32, batch 4, one thread) on the machine the limits
# were tuned on (2-core AMD EPYC VM, 2026-12): median of 10 steps after 2 warm-up steps.
REFERENCE_STEP_S = 0.012


@functools.lru_cache(maxsize=1)
def step_seconds() -> float:
    """Median wall time of one tiny GAN training step on this machine, one thread."""
    from pretrain.schema import PretrainConfig
    from pretrain.trainer import Trainer
    from videodata.clips import ArrayClips

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = PretrainConfig(experiment_name="timing", output_root="/nonexistent")
        cfg.model.width, cfg.model.frames, cfg.model.size, cfg.model.z_dim = 4, 16, 32, 8
        cfg.trainer.batch_size, cfg.trainer.device, cfg.trainer.progress = 4, "cpu", False
        trainer = Trainer(cfg, ArrayClips(torch.zeros(4, 16, 32, 32, 3, dtype=torch.uint8)), run_dir="/nonexistent")
        batch = torch.randint(0, 256, (4, 16, 32, 32, 3), dtype=torch.uint8)
        times = []
        for i in range(12):
            began = time.perf_counter()
            trainer.train_step(batch)
            if i >= 2:
                times.append(time.perf_counter() - began)
        return statistics.median(times)
    finally:
        torch.set_num_threads(threads)


def slowdown() -> float:
    """How many times slower than the reference machine this one is (at least 1)."""
    return max(1.0, step_seconds() / REFERENCE_STEP_S)


def scaled(seconds: float) -> float:
    return seconds * slowdown()


def steps_for(seconds: float, at_least: int) -> int:
    """Tiny GAN steps that take at least `seconds` here (and never fewer than `at_least`)."""
    return max(at_least, math.ceil(seconds / step_seconds()))
