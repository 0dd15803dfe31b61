"""Fine-tune a VideoClassifier on a labeled subset, on any device; resumable.

One loop, the paper's recipe by default (Adam 2e-4, betas (0.5, 0.999), batch 256, 1000
iterations, first frames, no augmentation). The CPU demo preset (conf/recipe/demo.yaml) changes
only numbers. Beyond the paper (conf/recipe/improved*.yaml), all off by default: AdamW from
timm's factory (no decay on biases and norm weights), label smoothing, a zoom (scale) jitter, and
an EMA of the weights (timm `ModelEmaV3`) that replaces the trained weights at the end, so
evaluation uses the EMA. timm's schedulers are not used: their warm-up starts from
`warmup_lr_init` and would change the existing recipes' learning-rate curve.

Data: a `videodata.clips.ClipDataset` read through a DataLoader (workers and pinned memory when
asked) with a `ClipBatchSampler`, so the batches of step s depend only on (seed, s): a resumed run
reads exactly the clips an uninterrupted one reads. uint8 batches go to the device and become
float there (`runkit.device`); the step never waits on the host (no `.item()` per step).

Resume: every `checkpoint_every` steps, at the end, and at a preemption request the model, EMA,
optimiser, scheduler, grad scaler, step, the global RNGs, the augmentation generator and the open
logging window go into a per-cell `CheckpointManager`; a re-run restores them and continues, so an
interrupted cell ends with the same weights and the same `train.csv` as an uninterrupted one.

Augmentation (`videodata.augment`: label-safe, never a flip or a time reversal) is a spatial
shift and an isotropic zoom with one box for every frame of a clip; temporal jitter is the random
clip start (`sampling: random`). Their random draws come from one CPU generator in the checkpoint.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from runkit import preemption
from runkit.checkpoint import CheckpointManager, capture_rng_state, restore_rng_state
from runkit.device import DevicePolicy
from runkit.logging import MetricLogger, WindowMeans, progress
from videodata.augment import random_shift, random_zoom
from videodata.clips import ClipBatchSampler, ClipDataset, collate_clips, loader_context
from videodata.clips import to_model_input

log = logging.getLogger(__name__)

SAMPLINGS = ("first", "random")
BUDGETS = ("iterations", "original")
SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw")


@dataclass
class FinetuneRecipe:
    iterations: int = 1000
    max_epochs: float = 0.0         # > 0: at most this many passes over the labeled subset (fewer iterations
                                    # for small subsets, `for_subset`); 0 = always `iterations`
    budget: str = "iterations"      # "original": main_ucf.lua's epochs of ceil(N / batch) iterations until
                                    # more than `iterations` (checked at an epoch's end), at most 100 epochs
    replacement: bool = False       # batches drawn with replacement (the original's loader) instead of epochs
    first_frame: int = 0            # "first" sampling starts here (the original's loader skips 2 frames)
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
    eval_batch: int = 64            # clips per evaluation batch
    checkpoint_every: int = 100
    log_every: int = 25

    def __post_init__(self):
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"finetune.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"finetune.budget must be one of {BUDGETS}, got {self.budget!r}")
        if self.first_frame < 0:
            raise ValueError(f"finetune.first_frame must be >= 0, got {self.first_frame}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"finetune.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"finetune.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("iterations", "batch_size", "eval_clips", "eval_batch", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"finetune.{name} must be >= 1, got {getattr(self, name)}")
        if self.shift < 0:
            raise ValueError(f"finetune.shift must be >= 0 pixels, got {self.shift}")
        if not 0.0 < self.min_crop <= 1.0:
            raise ValueError(f"finetune.min_crop must be in (0, 1], got {self.min_crop}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"finetune.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"finetune.ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"finetune.dropout must be in [0, 1), got {self.dropout}")
        if self.max_epochs < 0:
            raise ValueError(f"finetune.max_epochs must be >= 0 (0 = off), got {self.max_epochs}")

    def for_subset(self, videos: int) -> "FinetuneRecipe":
        """The recipe for a labeled subset of `videos` videos: with `max_epochs`, iterations capped
        at that many passes over it (a 10-video subset does not need 640 epochs to fit), the
        warm-up shortened in proportion. With budget "original", cvondrick/videogan's main_ucf.lua
        schedule: `for epoch=1,100` of ceil(N / batch) iterations, stopping at the end of the first
        epoch after which more than `iterations` were run (9,537 videos: 1,026 iterations; 101:
        100; 954: 400)."""
        if self.budget == "original":
            per_epoch = math.ceil(videos / self.batch_size)
            return replace(self, iterations=min(100, self.iterations // per_epoch + 1) * per_epoch)
        if self.max_epochs <= 0:
            return self
        cap = max(1, math.ceil(self.max_epochs * videos / self.batch_size))
        if cap >= self.iterations:
            return self
        return replace(self, iterations=cap, warmup=self.warmup * cap // self.iterations)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- augmentation

def augment(x: torch.Tensor, recipe: FinetuneRecipe, generator: torch.Generator) -> torch.Tensor:
    """Zoom then shift, both from `generator` (in the checkpoint); no draws when they are off."""
    return random_shift(random_zoom(x, recipe.min_crop, generator), recipe.shift, generator)


# ---------------------------------------------------------------------------- optimisation

def make_optimizer(model: nn.Module, recipe: FinetuneRecipe) -> torch.optim.Optimizer:
    betas = (recipe.beta1, recipe.beta2)
    if recipe.optimizer == "adamw":
        from timm.optim import create_optimizer_v2  # timm where used: its import costs 1.4 s per process

        return create_optimizer_v2(model, "adamw", lr=recipe.lr, weight_decay=recipe.weight_decay, betas=betas)
    # the paper's Adam (L2 added to every gradient), unchanged so the existing recipes' numbers hold
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=betas, weight_decay=recipe.weight_decay)


def make_ema(model: nn.Module, recipe: FinetuneRecipe):
    """timm's `ModelEmaV3` of parameters and BN buffers, or None when `ema_decay` is 0."""
    if recipe.ema_decay <= 0.0:
        return None
    from timm.utils import ModelEmaV3  # timm where used: its import costs 1.4 s per process

    # warmup_power 3/4 is timm's advice for short runs; without warm-up the decay is fixed from step 2
    return ModelEmaV3(model, decay=recipe.ema_decay, use_warmup=recipe.ema_warmup, warmup_power=0.75)


def lr_factor(recipe: FinetuneRecipe, step: int) -> float:
    if recipe.warmup and step < recipe.warmup:
        return (step + 1) / recipe.warmup
    if recipe.schedule == "cosine":
        done = (step - recipe.warmup) / max(1, recipe.iterations - recipe.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))
    return 1.0


def train_step(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, policy: DevicePolicy, recipe: FinetuneRecipe,
               generator: torch.Generator) -> torch.Tensor:
    """One optimiser step on a uint8 batch (B, T, H, W, 3) from the host; returns the loss on the
    device (no host synchronisation)."""
    x = augment(to_model_input(policy.to(clips), channels_last=policy.channels_last), recipe, generator)
    y = policy.to(labels)
    with policy.autocast():
        loss = F.cross_entropy(model(x).float(), y, label_smoothing=recipe.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def finetune(model: nn.Module, dataset: ClipDataset, recipe: FinetuneRecipe, *, policy: DevicePolicy,
             workdir: str | Path, seed: int, loader_workers: int = 0, show_progress: bool = True) -> dict:
    """Train `model` in place on `dataset` (already on `policy.device`); resume from `workdir/ckpt`.

    Returns {"steps", "final_loss", "resumed_from"}. With `ema_decay` > 0 the model ends holding
    the EMA weights. A preemption request saves and hands over (raising
    `runkit.preemption.Preempted` outside submitit).
    """
    workdir = Path(workdir)
    manager = CheckpointManager(workdir / "ckpt", keep=2)
    optimizer = make_optimizer(model, recipe)
    ema = make_ema(model, recipe)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(recipe, s))
    scaler = policy.grad_scaler()
    generator = torch.Generator().manual_seed(seed + 7919)
    logger = MetricLogger(workdir, "train.csv", tensorboard=False)
    window = WindowMeans()
    step, resumed_from, last_loss = 0, None, torch.full((), float("nan"))

    state = manager.load_latest()  # on the CPU: load_state_dict moves weights; RNG states stay CPU tensors
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["aug_rng"].cpu())
        restore_rng_state(state["rng"])
        window.load_state_dict(state["window"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"checkpoint in {workdir / 'ckpt'} has no EMA state but the recipe has "
                                 f"ema_decay={recipe.ema_decay}; delete that folder to restart the cell")
            ema.load_state_dict(state["ema"])
        step = resumed_from = int(state["step"])
        last_loss = torch.as_tensor(float(state["loss"]))
        logger.truncate_from(step + 1)

    def save() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "aug_rng": generator.get_state(), "rng": capture_rng_state(), "window": window.state_dict(),
                 "step": step, "loss": float(last_loss)}
        if ema is not None:
            state["ema"] = ema.state_dict()
        manager.save(state, step)

    sampler = ClipBatchSampler(len(dataset), recipe.batch_size, seed=seed, start_step=step, steps=recipe.iterations,
                               replacement=recipe.replacement)
    # its own generator: the loader must not draw from the global RNG (it is in the checkpoint)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=loader_workers, collate_fn=collate_clips,
                        pin_memory=policy.pin_memory, multiprocessing_context=loader_context(loader_workers),
                        generator=torch.Generator().manual_seed(seed))
    forward = policy.maybe_compile(model)  # shares model's parameters; the checkpoint keeps model's keys
    preemption.install()
    model.train()
    bar = progress(total=recipe.iterations, initial=step, desc="fine-tune", unit="step", disable=not show_progress)
    try:
        for clips, labels in loader:
            if preemption.requested():
                save()
                preemption.hand_over()
            last_loss = train_step(forward, clips, labels, optimizer, scaler, policy, recipe, generator)
            scheduler.step()
            step += 1
            if ema is not None:
                ema.update(model, step=step)
            window.add(loss=last_loss)
            bar.update(1)
            if step % recipe.log_every == 0 or step == recipe.iterations:
                logger.log(step, {**window.means(), "lr": optimizer.param_groups[0]["lr"]})
            if step % recipe.checkpoint_every == 0 or step == recipe.iterations:
                save()
    finally:
        bar.close()
        logger.close()
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return {"steps": step, "final_loss": float(last_loss), "resumed_from": resumed_from}
