"""Fine-tune a VideoClassifier on a labeled subset; resumable; evaluate on N clips per video.

One loop, the paper's recipe by default (Adam 2e-4, betas (0.5, 0.999), batch 256, 1000
iterations, first frames, no augmentation). The CPU demo preset (conf/recipe/demo.yaml) changes
only numbers. Beyond the paper (conf/recipe/improved*.yaml), all off by default: AdamW from
timm's factory (no decay on biases and norm weights), label smoothing, a zoom (scale) jitter, and
an EMA of the weights (timm `ModelEmaV3`) that replaces the trained weights at the end, so
evaluation uses the EMA. timm's schedulers are not used: their warm-up starts from
`warmup_lr_init` and would change the existing recipes' learning-rate curve.

Resume: every `checkpoint_every` steps, at the end, and at a preemption request the model, EMA,
optimiser, scheduler, step, the global RNGs, the augmentation generator and the batch sampler's
own generator go into a per-cell `CheckpointManager`; a re-run restores them and continues, so an
interrupted cell ends with the same weights as an uninterrupted one.

Augmentation never mirrors or reverses clips: in a motion-defined label set (move left/right,
rotate clockwise/counter-clockwise) a horizontal flip or a time reversal changes the label. The
spatial shift and the zoom use one box for every frame of a clip, so motion direction (and
grow/shrink, which a zoom that changed over time would mimic) is kept; the zoom is isotropic,
so a diagonal move keeps its angle. Temporal jitter is the random clip start (`sampling:
random`). A random frame stride is not used: it changes the object's speed, and stride 2 on the
32-frame synthetic videos would leave a 16-frame clip no room for a random start.
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
from torch.nn import functional as F

from runkit import preemption
from runkit.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from runkit.logging import MetricLogger, progress

log = logging.getLogger(__name__)

SAMPLINGS = ("first", "random")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")


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
    optimizer: str = "adam"         # "adamw": decoupled decay, none on biases / norm weights (timm)
    label_smoothing: float = 0.0
    schedule: str = "constant"      # "cosine": cosine decay to 0 after `warmup` linear steps
    warmup: int = 0
    dropout: float = 0.5
    sampling: str = "first"         # training clip start: "first" (paper) or "random"
    shift: int = 0                  # random translation in pixels (0 = no augmentation)
    min_crop: float = 1.0           # zoom jitter: crop side in [min_crop, 1] of the frame (1 = off)
    ema_decay: float = 0.0          # EMA of the weights, used for evaluation (0 = off)
    ema_warmup: bool = False        # timm's decay warm-up: 1 - (1 + step)^-3/4, capped at ema_decay
    eval_clips: int = 10
    eval_batch: int = 64
    checkpoint_every: int = 100
    log_every: int = 25

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.iterations < 1 or self.batch_size < 1 or self.eval_clips < 1:
            raise ValueError("iterations, batch_size and eval_clips must be >= 1")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0 pixels, got {self.shift}")
        if not 0.0 < self.min_crop <= 1.0:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")

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


def random_zoom(batch: torch.Tensor, min_crop: float, generator: torch.Generator) -> torch.Tensor:
    """Zoom each clip into a random box (side in [min_crop, 1] of the frame, same aspect), resized back.

    Random-resized-crop without the aspect jitter: the same box on every frame, so the motion's
    direction and the object's growth or shrinkage over time are unchanged.
    """
    if min_crop >= 1.0:
        return batch
    b, c, t, h, w = batch.shape
    draws = torch.rand(b, 3, generator=generator)
    side = min_crop + (1.0 - min_crop) * draws[:, 0]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = (1.0 - side)[:, None] * (2.0 * draws[:, 1:] - 1.0)  # box stays inside the frame
    frames = batch.transpose(1, 2).reshape(b * t, c, h, w)  # frames as images: time is never mixed
    grid = F.affine_grid(theta.repeat_interleave(t, dim=0), list(frames.shape), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, h, w).transpose(1, 2).contiguous()


def make_optimizer(model: nn.Module, recipe: FinetuneRecipe) -> torch.optim.Optimizer:
    betas = (recipe.beta1, recipe.beta2)
    if recipe.optimizer == "adamw":
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(model, "adamw", lr=recipe.lr, weight_decay=recipe.weight_decay, betas=betas)
    # the paper's Adam (L2 added to every gradient), unchanged so the existing recipes' numbers hold
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=betas, weight_decay=recipe.weight_decay)


def make_ema(model: nn.Module, recipe: FinetuneRecipe):
    """timm's `ModelEmaV3` of parameters and BN buffers, or None when `ema_decay` is 0."""
    if recipe.ema_decay <= 0.0:
        return None
    from timm.utils import ModelEmaV3

    # warmup_power 3/4 is timm's advice for short runs; without warm-up the decay is fixed from step 2
    return ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=recipe.ema_warmup, warmup_power=0.75)


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

    Returns {"steps", "final_loss", "resumed_from"}. With `ema_decay` > 0 the model ends holding
    the EMA weights. A preemption request saves and hands over (raising
    `runkit.preemption.Preempted` outside submitit).
    """
    workdir = Path(workdir)
    manager = CheckpointManager(workdir / "ckpt", keep=2)
    optimizer = make_optimizer(model, recipe)
    ema = make_ema(model, recipe)
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
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"checkpoint in {workdir / 'ckpt'} has no EMA state but the recipe has "
                                 f"ema_decay={recipe.ema_decay}; delete that folder to restart the cell")
            ema.load_state_dict(state["ema"])
        step = resumed_from = int(state["step"])
        loss_value = float(state["loss"])
        logger.truncate_from(step + 1)

    def save() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "sampler": sampler.state(),
                 "shift_rng": shift_gen.get_state(), "rng": capture_rng_state(),
                 "step": step, "loss": loss_value}
        if ema is not None:
            state["ema"] = ema.state_dict()
        manager.save(state, step)

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
            # one generator for both augmentations (it is in the checkpoint); no draws when they are off
            x = random_shift(random_zoom(to_model_input(clips), recipe.min_crop, shift_gen), recipe.shift, shift_gen)
            y = torch.from_numpy(sampler.labels[positions])
            loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            loss_value = float(loss.detach())
            bar.update(1)
            if step % recipe.log_every == 0 or step == recipe.iterations:
                logger.log(step, {"loss": loss_value, "lr": optimizer.param_groups[0]["lr"]})
            if step % recipe.checkpoint_every == 0 or step == recipe.iterations:
                save()
    finally:
        bar.close()
        logger.close()
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
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
