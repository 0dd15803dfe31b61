"""Fine-tune a VideoClassifier on a labeled subset; resumable; evaluate on N clips per video.

One loop, the paper's recipe by default (Adam 2e-4, betas (0.5, 0.999), batch 256, 1000
iterations, first frames, no augmentation). The CPU demo preset (conf/recipe/demo.yaml) changes
only numbers. Resume: every `checkpoint_every` steps, at the end, and at a preemption request
the model, optimiser, scheduler, step, the global RNGs and the batch sampler's own generator go
into a per-cell `CheckpointManager`; a re-run restores them and continues, so an interrupted cell
ends with the same weights as an uninterrupted one.

Augmentation never mirrors or reverses clips: in a motion-defined label set (move left/right,
rotate clockwise/counter-clockwise) a horizontal flip or a time reversal changes the label.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from runkit import preemption
from runkit.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from runkit.logging import MetricLogger, progress

log = logging.getLogger(__name__)

SAMPLINGS = ("first", "random")
SCHEDULES = ("constant", "cosine")


class ClipSource(Protocol):
    """What the loop needs from `videodata.cache.ClipCache`."""

    def clip(self, index: int, num_frames: int, start: Any = "first", rng: Any = None) -> np.ndarray: ...

    def uniform_clips(self, index: int, num_clips: int, num_frames: int) -> np.ndarray: ...


@dataclass(frozen=True)
class FinetuneRecipe:
    iterations: int = 1000
    batch_size: int = 256
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    schedule: str = "constant"      # "cosine": cosine decay to 0 after `warmup` linear steps
    warmup: int = 0
    dropout: float = 0.5
    sampling: str = "first"         # training clip start: "first" (paper) or "random"
    shift: int = 0                  # random translation in pixels (0 = no augmentation)
    eval_clips: int = 10
    eval_batch: int = 64
    checkpoint_every: int = 100
    log_every: int = 25

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.iterations < 1 or self.batch_size < 1 or self.eval_clips < 1:
            raise ValueError("iterations, batch_size and eval_clips must be >= 1")

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneRecipe":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fine-tune recipe keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def as_dict(self) -> dict:
        return asdict(self)


def to_model_input(clips: np.ndarray) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)


def random_shift(batch: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each clip by up to `pixels` (same shift on every frame: motion is untouched)."""
    if pixels <= 0:
        return batch
    b, _, _, h, w = batch.shape
    padded = nn.functional.pad(batch, (pixels, pixels, pixels, pixels, 0, 0), mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def _lr_factor(recipe: FinetuneRecipe, step: int) -> float:
    if recipe.warmup and step < recipe.warmup:
        return (step + 1) / recipe.warmup
    if recipe.schedule == "cosine":
        progress_ = (step - recipe.warmup) / max(1, recipe.iterations - recipe.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))
    return 1.0


class BatchSampler:
    """Seeded draws of (video, start) pairs; its state is a JSON string (weights_only-safe)."""

    def __init__(self, indices: Sequence[int], labels: Sequence[int], seed: int):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.indices) == 0:
            raise ValueError("cannot fine-tune on an empty labeled subset")
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.order: list[int] = []

    def next_positions(self, batch_size: int) -> np.ndarray:
        """Epoch-style: walk a fresh permutation of the subset, refilling when it runs out."""
        out = []
        while len(out) < batch_size:
            if not self.order:
                self.order = self.rng.permutation(len(self.indices)).tolist()
            out.append(self.order.pop())
        return np.asarray(out)

    def state(self) -> str:
        return json.dumps({"bit_generator": self.rng.bit_generator.state, "order": self.order})

    def load_state(self, text: str) -> None:
        state = json.loads(text)
        self.rng.bit_generator.state = state["bit_generator"]
        self.order = list(state["order"])


def finetune(model: nn.Module, source: ClipSource, indices: Sequence[int], labels: Sequence[int],
             recipe: FinetuneRecipe, *, frames: int, workdir: str | Path, seed: int,
             show_progress: bool = True) -> dict:
    """Train `model` in place on `source[indices]`; resume from `workdir/ckpt` when present.

    Returns {"steps", "final_loss", "resumed_from"}. A preemption request saves and hands over
    (raising `runkit.preemption.Preempted` outside submitit).
    """
    workdir = Path(workdir)
    manager = CheckpointManager(workdir / "ckpt", keep=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                 weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(recipe, s))
    sampler = BatchSampler(indices, labels, seed)
    shift_gen = torch.Generator().manual_seed(seed + 7919)
    logger = MetricLogger(workdir, "train.csv", tensorboard=False)
    step, resumed_from, loss_value = 0, None, float("nan")

    state = manager.load_latest()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state(state["sampler"])
        shift_gen.set_state(state["shift_rng"])
        restore_rng_state(state["rng"])
        step = resumed_from = int(state["step"])
        loss_value = float(state["loss"])
        logger.truncate_from(step + 1)

    def save() -> None:
        manager.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "sampler": sampler.state(),
                      "shift_rng": shift_gen.get_state(), "rng": capture_rng_state(),
                      "step": step, "loss": loss_value}, step)

    preemption.install()
    model.train()
    bar = progress(total=recipe.iterations, initial=step, desc="fine-tune", unit="step",
                   disable=not show_progress)
    try:
        while step < recipe.iterations:
            if preemption.requested():
                save()
                preemption.hand_over()
            positions = sampler.next_positions(recipe.batch_size)
            clips = np.stack([source.clip(int(sampler.indices[p]), frames, start=recipe.sampling,
                                          rng=sampler.rng) for p in positions])
            x = random_shift(to_model_input(clips), recipe.shift, shift_gen)
            y = torch.from_numpy(sampler.labels[positions])
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_value = float(loss.detach())
            bar.update(1)
            if step % recipe.log_every == 0 or step == recipe.iterations:
                logger.log(step, {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"]})
            if step % recipe.checkpoint_every == 0 or step == recipe.iterations:
                save()
    finally:
        bar.close()
        logger.close()
    return {"steps": step, "final_loss": loss_value, "resumed_from": resumed_from}


@torch.no_grad()
def predict_clips(model: nn.Module, source: ClipSource, indices: Sequence[int], *, frames: int,
                  num_clips: int, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
    """Logits of `num_clips` uniformly spaced clips per video: float32 (videos, clips, classes)."""
    model.eval()
    outputs = []
    pending: list[np.ndarray] = []

    def flush():
        batch = np.concatenate(pending)
        pending.clear()
        outputs.append(model(to_model_input(batch)).float().numpy())

    queued = 0
    for index in progress(indices, desc="evaluate", unit="video", disable=not show_progress):
        pending.append(source.uniform_clips(int(index), num_clips, frames))
        queued += num_clips
        if queued >= batch_size:
            flush()
            queued = 0
    if pending:
        flush()
    logits = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    return logits.reshape(len(indices), num_clips, -1)
