"""Masked video modelling (VideoMAE: Tong, Song, Wang, Wang, NeurIPS 2022) on the video ViT.

Each clip is cut into tubelets (pretrain.vit: 2 frames x p x p pixels, one token each) and most of
them are hidden by a *tube* mask: `round(mask_ratio x tokens per temporal slot)` positions of the
spatial grid drawn per clip, the same positions hidden in every temporal slot (VideoMAE's
TubeMaskingGenerator, which floors where this rounds; at 0.9 on 14x14 both hide 176 of 196). The
encoder runs on the visible tokens alone. A light decoder (timm blocks, narrower than the encoder)
takes the encoded visible tokens projected to its width, plus a learned mask token at every hidden
position, each with its fixed sin-cos position, and predicts the pixels of the hidden tubelets.
The target is VideoMAE's: the clip mapped to [0, 1], each tubelet's pixels normalised per channel
by that tubelet's own mean and (unbiased) standard deviation (+1e-6), flattened in (frame, row,
column, channel) order; the loss is the mean squared error over the hidden tubelets only (a
prediction of zeros scores about 1). The export is the encoder: a `pretrain.vit.VideoViT`.

Optimiser (VideoMAE's run_mae_pretraining.py, through timm): AdamW (timm.optim.create_optimizer_v2)
with betas (0.9, 0.95), weight decay 0.05 on every weight but biases, norms, learned positions and
the mask token; lr = base_lr x global batch / 256 (base 1.5e-4; min_lr scaled alike), one step-level
schedule (timm.scheduler.CosineLRScheduler): linear warm-up from 0, then cosine down to min_lr at
the end of the budget. Clips get a zoom jitter per clip (the same box on every frame), standing in
for VideoMAE's multi-scale crop (which also jitters the aspect).

Data parallelism: the masks are drawn for the global batch from a rank-identical generator and each
rank keeps its rows; gradients are averaged as for every method (pretrain.methods.base).
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import DataView, Method, SingleOptimizerState
from pretrain.vit import NORM_EPS, VideoViT, check_vit_shape, sinusoid_table, transformer_blocks, videomae_init
from runkit.atomic import atomic_write_bytes
from videodata.augment import random_zoom

TARGET_EPS = 1e-6  # VideoMAE's: added to the patch's standard deviation


# ------------------------------------------------------------------------------ masks and targets
def masked_per_slot(spatial: int, ratio: float) -> int:
    """Hidden positions of each temporal slot's `spatial` tokens: round(ratio x spatial)."""
    return int(round(ratio * spatial))


def tube_mask(batch: int, grid: tuple[int, int, int], ratio: float, generator: torch.Generator) -> torch.Tensor:
    """bool (batch, T' x H' x W'), True = hidden: per clip one random set of round(ratio x H'W')
    spatial positions, hidden in every one of the T' temporal slots (tokens in (t, h, w) order)."""
    slots, spatial = grid[0], grid[1] * grid[2]
    hidden = masked_per_slot(spatial, ratio)
    order = torch.rand(batch, spatial, generator=generator).argsort(dim=1)
    per_slot = torch.zeros(batch, spatial, dtype=torch.bool)
    per_slot.scatter_(1, order[:, :hidden], True)
    return per_slot.repeat(1, slots)


def mask_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible, hidden) token indices, each (B, n) in ascending order (every row hides as many)."""
    b = mask.shape[0]
    return (~mask).nonzero()[:, 1].view(b, -1), mask.nonzero()[:, 1].view(b, -1)


def patchify(clips: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet x patch x patch, C): each token's pixels in (frame, row,
    column) order, tokens in (t, h, w) order (the patch embedding's)."""
    b, c, t, h, w = clips.shape
    x = clips.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # b, T', H', W', p0, p1, p2, c
    return x.reshape(b, -1, tubelet * patch * patch, c)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int, int], tubelet: int, patch: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, N, tubelet x patch x patch, C) -> (B, C, T, H, W)."""
    b, c = patches.shape[0], patches.shape[-1]
    x = patches.reshape(b, *grid, tubelet, patch, patch, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, c, grid[0] * tubelet, grid[1] * patch, grid[2] * patch)


def patch_statistics(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token and channel: the mean and the unbiased std + 1e-6 of (B, N, P, C) pixels."""
    return pixels.mean(dim=-2, keepdim=True), pixels.var(dim=-2, unbiased=True, keepdim=True).sqrt() + TARGET_EPS


def patch_targets(clips: torch.Tensor, tubelet: int, patch: int, normalize: bool = True) -> torch.Tensor:
    """VideoMAE's regression target for every token: (B, C, T, H, W) in [-1, 1] -> float32
    (B, N, tubelet x patch x patch x C), the clip mapped to [0, 1] and, with `normalize`, each
    tubelet's pixels normalised per channel by the tubelet's mean and std (`patch_statistics`)."""
    pixels = patchify((clips.float() + 1) / 2, tubelet, patch)
    if normalize:
        mean, std = patch_statistics(pixels)
        pixels = (pixels - mean) / std
    return pixels.flatten(2)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


# ------------------------------------------------------------------------------ networks
class MAEDecoder(nn.Module):
    """encoder tokens -> Linear (no bias) to the decoder's width; [visible + their positions,
    mask token + hidden positions] -> timm blocks -> LayerNorm -> Linear to the tubelet's pixels,
    read at the hidden tokens (VideoMAE's PretrainVisionTransformerDecoder and its wiring)."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, tokens: int,
                 values: int):
        super().__init__()
        self.proj = nn.Linear(encoder_dim, dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sinusoid_table(tokens, dim), persistent=False)
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.head = nn.Linear(dim, values)
        videomae_init(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def forward(self, encoded: torch.Tensor, visible: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        x = self.proj(encoded)
        pos = self.pos_embed.to(x.dtype).expand(x.shape[0], -1, -1)
        pos_hidden = _gather_tokens(pos, hidden)
        x = torch.cat([x + _gather_tokens(pos, visible), self.mask_token.to(x.dtype) + pos_hidden], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -hidden.shape[1]:]))


class MaskedAutoencoder(nn.Module):
    """The encoder (the exported VideoViT) and its decoder, one module for the optimiser."""

    def __init__(self, encoder: VideoViT, dim: int, depth: int, heads: int):
        super().__init__()
        a = encoder.arch
        self.encoder = encoder
        self.decoder = MAEDecoder(a.dim, dim, depth, heads, a.mlp_ratio, encoder.num_tokens,
                                  a.tubelet * a.patch * a.patch * a.in_channels)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{name}" for name in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    def forward(self, clips: torch.Tensor, visible: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Predicted (normalised) pixels of the hidden tubelets, (B, n_hidden, values)."""
        return self.decoder(self.encoder.encode_visible(clips, visible), visible, hidden)


def build_encoder(cfg: Any) -> VideoViT:
    e = cfg.method.mae.encoder
    return VideoViT(frames=cfg.model.frames, size=cfg.model.size, patch=e.patch, tubelet=e.tubelet, dim=e.dim,
                    depth=e.depth, heads=e.heads, mlp_ratio=e.mlp_ratio, pos_embed=e.pos_embed,
                    drop_path=e.drop_path)


def warmup_steps(cfg: Any) -> int:
    """The warm-up in steps: method.mae.warmup_steps, or warmup_epochs epochs of an epoch budget
    (trainer.steps is then epochs x steps per epoch, resolved at start-up)."""
    m, t = cfg.method.mae, cfg.trainer
    if m.warmup_steps >= 0:
        return int(m.warmup_steps)
    return int(round(m.warmup_epochs * t.steps / t.epochs))


def check_config(cfg: Any) -> None:
    """ValueError naming the key (pretrain.schema.validate adds `config method.mae:`)."""
    m, e = cfg.method.mae, cfg.method.mae.encoder
    check_vit_shape(cfg.model.frames, cfg.model.size, e.patch, e.tubelet, e.dim, e.heads, e.depth)
    if e.pos_embed not in ("sincos", "learned"):
        raise ValueError(f"encoder.pos_embed={e.pos_embed!r} is not one of ['sincos', 'learned']")
    if m.decoder_dim < 1 or m.decoder_depth < 0 or m.decoder_heads < 1 or m.decoder_dim % m.decoder_heads:
        raise ValueError(f"decoder_heads={m.decoder_heads} must divide decoder_dim={m.decoder_dim} "
                         f"(decoder_depth={m.decoder_depth} >= 0)")
    spatial = (cfg.model.size // e.patch) ** 2
    hidden = masked_per_slot(spatial, m.mask_ratio)
    if not 0 < m.mask_ratio < 1 or not 0 < hidden < spatial:
        raise ValueError(f"mask_ratio={m.mask_ratio} hides {hidden} of the {spatial} tokens per frame "
                         f"(model.size={cfg.model.size} / encoder.patch={e.patch}, squared): at least one must "
                         f"stay visible and one be hidden (experiment=mae_cpu_demo sizes a CPU run)")
    if not 0 < m.min_crop <= 1:
        raise ValueError(f"min_crop must be in (0, 1]; got {m.min_crop}")
    if m.base_lr <= 0 or m.min_lr < 0 or m.weight_decay < 0 or not (0 <= m.beta1 < 1 and 0 <= m.beta2 < 1):
        raise ValueError("base_lr > 0, min_lr >= 0, weight_decay >= 0 and beta1, beta2 in [0, 1)")
    if m.warmup_steps < 0 and cfg.trainer.epochs <= 0:
        raise ValueError("set method.mae.warmup_steps (>= 0) when the budget is trainer.steps; "
                         "method.mae.warmup_epochs applies to an epoch budget (trainer.epochs > 0)")
    if m.warmup_steps < 0 and m.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0; got {m.warmup_epochs}")


# ------------------------------------------------------------------------------ the method
class MAE(SingleOptimizerState, Method):
    name = "mae"
    HEALTH = (("reconstruction loss", (("loss", "MSE on hidden tubelets (normalised pixels)"),)),
              ("learning rate", (("lr", "lr (scaled by batch / 256)"),)))

    def __init__(self, cfg, policy, dist_info):
        super().__init__(cfg, policy, dist_info)
        from timm.optim import create_optimizer_v2  # timm where used: its import costs ~1.4 s

        m, t = cfg.method.mae, cfg.trainer
        check_config(cfg)
        self.settings = m
        self.model = self.prepare(MaskedAutoencoder(build_encoder(cfg), m.decoder_dim, m.decoder_depth,
                                                    m.decoder_heads))
        encoder = self.model.encoder
        self.grid, self.tubelet, self.patch = encoder.grid, encoder.arch.tubelet, encoder.arch.patch
        self.lr = m.base_lr * t.batch_size / 256
        self.min_lr = m.min_lr * t.batch_size / 256
        self.opt = create_optimizer_v2(self.model, opt="adamw", lr=self.lr, weight_decay=m.weight_decay,
                                       betas=(m.beta1, m.beta2))
        for group in self.opt.param_groups:  # the schedule's base, checkpointed with the optimiser
            group["initial_lr"] = self.lr
        self.scheduler = None  # built at the first step: an epoch budget is resolved to steps by then
        self.scaler = policy.grad_scaler()
        self.rng = torch.Generator().manual_seed(t.seed + 2147483647)
        self.batch_size, self.local_batch = t.batch_size, t.batch_size // dist_info.world_size
        self.forward = policy.maybe_compile(self.model)
        self._last_clips: torch.Tensor | None = None  # the pictures' clips: the latest batch's first ones

    # ------------------------------------------------------------------ interface
    def data_view(self) -> DataView:
        return DataView(frames=self.cfg.model.frames, views=1, sampling="random")

    def modules(self) -> dict[str, nn.Module]:
        return {"mae": self.model}

    def backbone(self) -> VideoViT:
        return self.model.encoder

    def lr_scheduler(self):
        """timm's cosine schedule with a linear warm-up from 0 (VideoMAE's utils.cosine_scheduler),
        stepped per iteration: lr(step) depends on the step alone, so a resumed run follows it."""
        if self.scheduler is None:
            from timm.scheduler import CosineLRScheduler

            steps, warmup = int(self.cfg.trainer.steps), min(warmup_steps(self.cfg), int(self.cfg.trainer.steps))
            self.scheduler = CosineLRScheduler(self.opt, t_initial=max(1, steps - warmup), lr_min=self.min_lr,
                                               warmup_t=warmup, warmup_lr_init=0.0, warmup_prefix=True,
                                               t_in_epochs=False)
        return self.scheduler

    def draw_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the global batch's tube masks, as (visible, hidden) token indices."""
        mask = tube_mask(self.batch_size, self.grid, self.settings.mask_ratio, self.rng)
        r, b = self.dist.rank, self.local_batch
        visible, hidden = mask_indices(mask[r * b:(r + 1) * b])
        return self.policy.to(visible), self.policy.to(hidden)

    # ------------------------------------------------------------------ one iteration
    def train_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        self.lr_scheduler().step_update(step)
        clips = random_zoom(clips, self.settings.min_crop, self.rng)
        visible, hidden = self.draw_masks()
        with torch.no_grad():
            target = _gather_tokens(patch_targets(clips, self.tubelet, self.patch, self.settings.norm_target), hidden)
        self.opt.zero_grad(set_to_none=True)
        with self.policy.autocast():
            pred = self.forward(clips, visible, hidden)
        loss = F.mse_loss(pred.float(), target)
        self.scaler.scale(loss).backward()
        self.average_gradients(self.model)
        self.scaler.step(self.opt)
        self.scaler.update()
        self._last_clips = clips[: self.cfg.trainer.num_samples].detach()
        return {"loss": loss.detach(), "lr": float(self.opt.param_groups[0]["lr"])}

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def reconstruct(self, clips: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction) of clips in [-1, 1]: hidden tubelets grey in the first;
        in the second the visible tubelets as they are and the hidden ones predicted. With the
        normalised target the prediction is mapped back with the true tubelet's mean and std
        (VideoMAE's visualisation): a hidden tubelet's average colour and contrast come from the
        clip, only the pattern inside it from the model (a prediction of zeros shows flat
        tubelets of the true mean colour)."""
        mask = tube_mask(clips.shape[0], self.grid, self.settings.mask_ratio, generator)
        visible, hidden = (self.policy.to(i) for i in mask_indices(mask))
        was_training = self.model.training
        self.model.eval()
        with self.policy.autocast():
            pred = self.model(clips, visible, hidden).float()
        self.model.train(was_training)
        pixels = patchify((clips.float() + 1) / 2, self.tubelet, self.patch)   # (B, N, P, C) in [0, 1]
        values, channels = pixels.shape[2], pixels.shape[3]
        pred = pred.view(pred.shape[0], -1, values, channels)
        if self.settings.norm_target:
            mean, std = patch_statistics(pixels)
            index = hidden[..., None, None].expand(-1, -1, values, channels)
            pred = pred * std.expand_as(pixels).gather(1, index) + mean.expand_as(pixels).gather(1, index)
        index = hidden[..., None, None].expand(-1, -1, values, channels)
        recon = pixels.scatter(1, index, pred.clamp(0, 1))
        masked = pixels.scatter(1, index, torch.full_like(pred, 0.5))
        to_clip = lambda p: unpatchify(p, self.grid, self.tubelet, self.patch) * 2 - 1  # noqa: E731
        return to_clip(masked), to_clip(recon)

    def save_samples(self, folder, name: str) -> list:
        """`<name>.gif` (every frame) and `<name>.png` (the first frame): one row per clip of the
        latest batch, columns input | masked input | reconstruction. The masks come from their
        own fixed generator, so pictures never move the training draws."""
        if self._last_clips is None:
            return []
        clips = self._last_clips
        masked, recon = self.reconstruct(clips, torch.Generator().manual_seed(self.cfg.trainer.seed + 1))
        frames = panel_grid([clips, masked, recon])
        from pretrain.samples import upscale, write_gif

        frames = upscale(frames, max(1, 128 // clips.shape[-1]))
        stem = folder / name
        gif, png = stem.with_suffix(".gif"), stem.with_suffix(".png")
        write_gif(frames, gif)
        write_png(frames[0], png)
        return [gif, png]


PAD = 2


def panel_grid(panels: list[torch.Tensor]) -> np.ndarray:
    """Videos (B, 3, T, H, W) in [-1, 1], one per column -> uint8 (T, rows, columns, 3), one row per clip."""
    b, _, t, h, w = panels[0].shape
    grid = np.full((t, b * (h + PAD) + PAD, len(panels) * (w + PAD) + PAD, 3), 255, dtype=np.uint8)
    for col, video in enumerate(panels):
        x = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        x = x.permute(0, 2, 3, 4, 1).numpy()  # B, T, H, W, 3
        for row in range(b):
            top, left = PAD + row * (h + PAD), PAD + col * (w + PAD)
            grid[:, top:top + h, left:left + w] = x[row]
    return grid


def write_png(frame: np.ndarray, path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
