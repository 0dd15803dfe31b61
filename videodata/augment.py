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


def random_zoom(batch: torch.Tensor, min_crop: float, generator: torch.Generator | None,
                draws: torch.Tensor | None = None) -> torch.Tensor:
    """Zoom each clip into a random box (side in [min_crop, 1] of the frame, same aspect), resized back.

    Random-resized-crop without the aspect jitter: the same box on every frame. `draws`: the
    (B, 3) uniforms to use instead of drawing them from `generator` (a caller's own slice).
    """
    if min_crop >= 1.0:
        return batch
    b, c, t, h, w = batch.shape
    draws = torch.rand(b, 3, generator=generator) if draws is None else draws
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
# blur_p and solarize_p are (view 1, view 2). Checked against CVRL's TF2 code (tensorflow/models
# official/projects/video_ssl: dataloaders/video_ssl_input.py `_process_image`, ops/
# video_ssl_preprocess_ops.py, vision/ops/preprocess_ops_3d.py `random_crop_resize`): crop
# (tf.image.sample_distorted_bounding_box, aspect uniform in [0.5, 2], the box's height uniform
# between the area bounds, clamped to fit) and flip per view, then on [0, 1]: colour jitter p 0.8
# (brightness x [0.2, 1.8], contrast and saturation [0.2, 1.8], hue +-0.2, random order, clipped
# after each), grayscale p 0.2, blur (kernel 2 (h // 10 // 2) + 1, sigma [0.1, 2]) p 1.0 / 0.1,
# solarisation p 0.2 on the second view only; the same draw for every frame of a clip.
# Differences: saturation and hue are linear (a blend with the luma, a chroma rotation in YIQ),
# where TF goes through HSV; the blur pads by reflection, where TF's SAME pads zeros (a darker
# border); the crop is resized by bilinear grid sampling and drawn continuously, not in pixels.

_LUMA = (0.299, 0.587, 0.114)


def cvrl_params(b: int, generator: torch.Generator, view: int = 0, flip: bool = True) -> dict[str, torch.Tensor]:
    """Per-clip draws of CVRL's augmentation for `b` clips of view 0 or 1 (CPU tensors)."""
    p = CVRL
    u = torch.rand(b, 16, generator=generator)
    lo, hi = p["crop_area"]
    # TF's box: aspect (width / height) uniform, then the height uniform between the heights of the
    # smallest and largest area at that aspect, the largest clamped so the box fits the frame
    a_lo, a_hi = p["crop_aspect"]
    aspect = a_lo + (a_hi - a_lo) * u[:, 0]
    low = (lo / aspect).sqrt()
    high = torch.minimum((hi / aspect).sqrt(), torch.minimum(torch.ones_like(aspect), 1 / aspect))
    sh = torch.minimum(low + (high - low).clamp(min=0) * u[:, 1], high)  # sides as fractions of the frame
    sw = aspect * sh
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


def _hue_matrix(shift: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): rotate the chroma by shift x 2 pi in YIQ space (a linear stand-in for an HSV hue shift)."""
    to_yiq = shift.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = 2 * torch.pi * shift
    cos, sin, one, zero = angle.cos(), angle.sin(), torch.ones_like(angle), torch.zeros_like(angle)
    rot = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1),
                       torch.stack([zero, sin, cos], -1)], -2)
    return torch.linalg.inv(to_yiq) @ rot @ to_yiq


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
    x = x.add_(1).mul_(0.5).clamp_(0, 1)                                                      # [0, 1]
    u = x.reshape(b, t, c, h, w).transpose(1, 2).reshape(b, c, t * h * w)
    # Each op touches only the clips that draw it (index, change, copy back: most of the cost is
    # passes over memory). Every colour op is a per-clip 3x3 map plus an offset, so one batched
    # matmul applies the op each clip draws at each of the 4 positions (clipped to [0, 1] after
    # each, as TF): brightness f I; contrast f I about each channel's mean over the clip
    # (tf.image.adjust_contrast on CVRL's frames stacked into one image); saturation
    # f I + (1 - f) L, L every channel's luma; hue the YIQ rotation.
    luma = torch.tensor(_LUMA, device=dev, dtype=dt).expand(3, 3)

    def drawn(key):  # the clips that draw an op, from the CPU parameters (no device sync)
        return params[key].cpu().nonzero().flatten()

    chosen = drawn("jitter")
    if len(chosen):
        n, order, chosen = len(chosen), params["order"].cpu()[chosen], chosen.to(dev)
        eye = torch.eye(3, device=dev, dtype=dt).expand(n, 3, 3)
        f = {k: q[k][chosen].to(dt)[:, None, None] for k in ("brightness", "contrast", "saturation")}
        maps = torch.stack([f["brightness"] * eye, f["contrast"] * eye,
                            f["saturation"] * eye + (1 - f["saturation"]) * luma,
                            _hue_matrix(q["hue"][chosen].to(dt))], 1)                      # (n, 4, 3, 3)
        v = u[chosen]
        for position in range(4):
            op = order[:, position]
            offset = torch.zeros(n, 3, 1, device=dev, dtype=dt)
            if (op == 1).any():
                contrast = (op == 1).to(dev)[:, None, None]
                offset = torch.where(contrast, (1 - f["contrast"]) * v.mean(dim=2, keepdim=True), offset)
            v = torch.baddbmm(offset, maps[torch.arange(n, device=dev), op.to(dev)], v).clamp_(0, 1)
        u.index_copy_(0, chosen, v)
    chosen = drawn("grayscale").to(dev)
    if len(chosen):
        u.index_copy_(0, chosen, luma @ u[chosen])
    u = u.view(b, c, t, h, w)
    # Gaussian blur, kernel about 10% of the side as TF's (2 (h // 10 // 2) + 1: 3 at 32 px, 7 at
    # 64, 23 at 224; 1, no blur, below 20 px), sigma per clip; separable, by grouped convolution
    k = 2 * (int(CVRL["blur_kernel"] * h) // 2) + 1
    chosen = drawn("blur").to(dev)
    if k > 1 and len(chosen):
        n = len(chosen)
        offsets = torch.arange(k, device=dev, dtype=dt) - k // 2
        kernel = torch.exp(-offsets[None] ** 2 / (2 * q["sigma"][chosen].to(dt)[:, None] ** 2))
        kern = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c * t, dim=0)  # (n C T, k)
        planes = u[chosen].reshape(1, n * c * t, h, w)
        planes = F.conv2d(F.pad(planes, (k // 2, k // 2, 0, 0), mode="reflect"), kern[:, None, None, :], groups=n * c * t)
        planes = F.conv2d(F.pad(planes, (0, 0, k // 2, k // 2), mode="reflect"), kern[:, None, :, None], groups=n * c * t)
        u.index_copy_(0, chosen, planes.reshape(n, c, t, h, w))
    chosen = drawn("solarize").to(dev)
    if len(chosen):
        v = u[chosen]
        u.index_copy_(0, chosen, torch.where(v >= 0.5, 1 - v, v))
    return u.mul_(2).sub_(1)
