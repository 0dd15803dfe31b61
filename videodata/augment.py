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


# ---------------------------------------------------------------------------------------------
# CVRL's view augmentation (Qian et al., "Spatiotemporally Contrastive Video Representation
# Learning", CVPR 2021, sec. 3.2 / appendix; SimCLR's colour ops): one set of parameters per clip,
# used on all of its frames. Unlike the label-safe ops above it flips: CVRL does, and a caller on a
# direction-defined set turns `flip` off. Parameters (CVRL's table):
CVRL = {"crop_area": (0.3, 1.0), "crop_aspect": (0.5, 2.0), "flip_p": 0.5, "jitter_p": 0.8,
        "brightness": 0.8, "contrast": 0.8, "saturation": 0.8, "hue": 0.2, "grayscale_p": 0.2,
        "blur_sigma": (0.1, 2.0), "blur_kernel": 0.1, "blur_p": (1.0, 0.1), "solarize_p": (0.0, 0.2)}
# blur_p and solarize_p are (view 1, view 2), the BYOL-style asymmetry CVRL uses; solarisation on
# the second view only is taken from BYOL's recipe (not checked against CVRL's TF code here).

_LUMA = (0.299, 0.587, 0.114)


def cvrl_params(b: int, generator: torch.Generator, view: int = 0, flip: bool = True) -> dict[str, torch.Tensor]:
    """Per-clip draws of CVRL's augmentation for `b` clips of view 0 or 1 (CPU tensors)."""
    p = CVRL
    u = torch.rand(b, 16, generator=generator)
    lo, hi = p["crop_area"]
    area = lo + (hi - lo) * u[:, 0]
    log_lo, log_hi = torch.log(torch.tensor(p["crop_aspect"]))
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])  # log-uniform, as torchvision's RRC
    # the box's sides as fractions of the frame (clipped to fit, as RRC's fallback does)
    sw, sh = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    order = torch.argsort(torch.rand(b, 4, generator=generator), dim=1)  # colour ops in random order
    blur_lo, blur_hi = p["blur_sigma"]
    return {"sw": sw, "sh": sh, "cx": (1 - sw) * (2 * u[:, 2] - 1), "cy": (1 - sh) * (2 * u[:, 3] - 1),
            "flip": (u[:, 4] < p["flip_p"]) & flip,
            "jitter": u[:, 5] < p["jitter_p"],
            "brightness": 1 + p["brightness"] * (2 * u[:, 6] - 1),
            "contrast": 1 + p["contrast"] * (2 * u[:, 7] - 1),
            "saturation": 1 + p["saturation"] * (2 * u[:, 8] - 1),
            "hue": p["hue"] * (2 * u[:, 9] - 1), "order": order,
            "grayscale": u[:, 10] < p["grayscale_p"],
            "blur": u[:, 11] < p["blur_p"][view], "sigma": blur_lo + (blur_hi - blur_lo) * u[:, 12],
            "solarize": u[:, 13] < p["solarize_p"][view]}


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _hue(u: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma by shift x 2 pi in YIQ space (a linear stand-in for an HSV hue shift)."""
    to_yiq = u.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = (2 * torch.pi * shift).to(u)
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1),
                       torch.stack([zero, sin, cos], -1)], -2)                           # (B, 3, 3)
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("bij,bj...->bi...", m, u)


def cvrl_augment(batch: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """CVRL's augmentation with `params` (cvrl_params) on a [-1, 1] batch (B, C, T, H, W): random
    resized crop (one box per clip) with a flip, colour jitter, grayscale, blur, solarisation."""
    b, c, t, h, w = batch.shape
    dev, dt = batch.device, batch.dtype
    q = {k: v.to(dev) for k, v in params.items()}
    theta = torch.zeros(b, 2, 3, device=dev, dtype=dt)
    theta[:, 0, 0] = q["sw"] * torch.where(q["flip"], -1.0, 1.0)
    theta[:, 1, 1] = q["sh"]
    theta[:, 0, 2], theta[:, 1, 2] = q["cx"], q["cy"]
    frames = batch.transpose(1, 2).reshape(b * t, c, h, w)
    grid = F.affine_grid(theta.repeat_interleave(t, dim=0), [b * t, c, h, w], align_corners=False)
    x = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
    u = ((x.reshape(b, t, c, h, w).transpose(1, 2) + 1) / 2).clamp(0, 1)  # [0, 1], (B, C, T, H, W)
    shape = (b, 1, 1, 1, 1)

    def grey(v):
        luma = v.new_tensor(_LUMA).view(1, 3, 1, 1, 1)
        return (v * luma).sum(dim=1, keepdim=True)

    ops = (lambda v: v * q["brightness"].view(shape).to(dt),
           lambda v: (v - grey(v).mean(dim=(3, 4), keepdim=True)) * q["contrast"].view(shape).to(dt)
           + grey(v).mean(dim=(3, 4), keepdim=True),                     # about each frame's mean
           lambda v: (v - grey(v)) * q["saturation"].view(shape).to(dt) + grey(v),
           lambda v: _hue(v, q["hue"]))
    jittered = u
    for position in range(4):
        step = jittered
        for index, op in enumerate(ops):
            step = _where(q["order"][:, position] == index, op(jittered).clamp(0, 1), step)
        jittered = step
    u = _where(q["jitter"], jittered, u)
    u = _where(q["grayscale"], grey(u).expand_as(u), u)
    # Gaussian blur, kernel 10% of the side, sigma per clip; separable, by grouped convolution
    k = max(3, int(CVRL["blur_kernel"] * h) | 1)
    offsets = torch.arange(k, device=dev, dtype=dt) - k // 2
    kernel = torch.exp(-offsets[None] ** 2 / (2 * q["sigma"].to(dt)[:, None] ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)                                  # (B, k)
    kern = kernel.repeat_interleave(c * t, dim=0)                                      # (B*C*T, k)
    planes = u.reshape(1, b * c * t, h, w)
    blurred = F.conv2d(F.pad(planes, (k // 2, k // 2, 0, 0), mode="reflect"), kern[:, None, None, :], groups=b * c * t)
    blurred = F.conv2d(F.pad(blurred, (0, 0, k // 2, k // 2), mode="reflect"), kern[:, None, :, None], groups=b * c * t)
    u = _where(q["blur"], blurred.reshape(b, c, t, h, w), u)
    u = _where(q["solarize"], torch.where(u >= 0.5, 1 - u, u), u)
    return u * 2 - 1
