"""Label-safe clip augmentations, on a float batch (B, C, T, H, W) on any device.

None of them mirrors or reverses a clip: in a motion-defined label set (move left/right, rotate
clockwise/counter-clockwise) a horizontal flip or a time reversal changes the label, and for a
self-supervised method it would teach invariance to motion direction. The shift and the zoom use
one box for every frame of a clip, so motion direction (and grow/shrink, which a zoom that changed
over time would mimic) is kept; the zoom is isotropic, so a diagonal move keeps its angle. Their
random draws come from a CPU generator (checkpointable), so they are the same on every device.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def random_shift(batch: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each clip by up to `pixels` (same shift on every frame: motion is untouched)."""
    if pixels <= 0:
        return batch
    b, _, _, h, w = batch.shape
    padded = F.pad(batch, (pixels, pixels, pixels, pixels, 0, 0), mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (b, 2), generator=generator)
    return torch.stack([padded[i, :, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def random_zoom(batch: torch.Tensor, min_crop: float, generator: torch.Generator) -> torch.Tensor:
    """Zoom each clip into a random box (side in [min_crop, 1] of the frame, same aspect), resized back.

    Random-resized-crop without the aspect jitter: the same box on every frame.
    """
    if min_crop >= 1.0:
        return batch
    b, c, t, h, w = batch.shape
    draws = torch.rand(b, 3, generator=generator)
    side = min_crop + (1.0 - min_crop) * draws[:, 0]
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = (1.0 - side)[:, None] * (2.0 * draws[:, 1:] - 1.0)  # box stays inside the frame
    theta = theta.to(device=batch.device, dtype=batch.dtype)
    frames = batch.transpose(1, 2).reshape(b * t, c, h, w)  # frames as images: time is never mixed
    grid = F.affine_grid(theta.repeat_interleave(t, dim=0), list(frames.shape), align_corners=False)
    out = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(b, t, c, h, w).transpose(1, 2).contiguous()


def color_jitter(batch: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per clip (same on every frame): brightness, contrast and saturation scaled by factors in
    [1 - strength, 1 + strength], on [-1, 1] inputs; the result is clamped to [-1, 1]."""
    if strength <= 0:
        return batch
    b = batch.shape[0]
    factors = (1.0 + strength * (2.0 * torch.rand(b, 3, generator=generator) - 1.0)).to(batch.device, batch.dtype)
    shape = (b, 1, 1, 1, 1)
    x = batch * factors[:, 0].view(shape)                                     # brightness (about 0)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    x = (x - mean) * factors[:, 1].view(shape) + mean                         # contrast
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * factors[:, 2].view(shape) + grey                          # saturation
    return x.clamp(-1.0, 1.0)
