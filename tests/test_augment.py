"""Label-safe clip augmentations: one box per clip (motion direction kept), no flips."""
from __future__ import annotations

import torch

from videodata.augment import color_jitter, random_shift, random_zoom


def moving_squares(clips: int, frames: int, size: int, box: int, start: int, step: int) -> torch.Tensor:
    """Bright squares on black, moving right (even clips) or left (odd clips) by `step` px a frame."""
    out = -torch.ones(clips, 3, frames, size, size)
    top = (size - box) // 2
    for i in range(clips):
        for f in range(frames):
            x = start + step * f if i % 2 == 0 else start + step * (frames - 1 - f)
            out[i, :, f, top:top + box, x:x + box] = 1.0
    return out


def centroids(batch: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] -> brightness-weighted (x, y) centre per clip and frame: (B, T, 2)."""
    weight = (batch.mean(1) + 1.0).clamp_min(0) ** 4
    ys = torch.arange(batch.shape[3], dtype=torch.float32)[:, None]
    xs = torch.arange(batch.shape[4], dtype=torch.float32)[None, :]
    total = weight.sum((2, 3))
    return torch.stack([(weight * xs).sum((2, 3)) / total, (weight * ys).sum((2, 3)) / total], -1)


def test_shift_keeps_motion_and_shape():
    """One translation per clip, the same on every frame: the object's per-frame motion is kept."""
    clips = moving_squares(8, 5, 24, 4, 6, 2)
    out = random_shift(clips, 3, torch.Generator().manual_seed(0))
    assert out.shape == clips.shape and not torch.equal(out, clips)
    moved = centroids(out) - centroids(clips)                 # (clips, frames, 2)
    assert torch.allclose(moved, moved[:, :1].expand_as(moved), atol=1e-4)  # same shift on every frame
    assert moved.abs().max() <= 3 + 1e-4 and (moved.abs().sum((1, 2)) > 0).any()
    assert random_shift(clips, 0, torch.Generator()) is clips


def test_zoom_keeps_the_motion_direction():
    """A square moving right (or left) still moves right (left) after every random zoom."""
    clips = moving_squares(16, 6, 32, 5, 8, 2)
    out = random_zoom(clips, 0.6, torch.Generator().manual_seed(1))
    assert out.shape == clips.shape and not torch.equal(out, clips)
    dx = centroids(out)[:, 1:, 0] - centroids(out)[:, :-1, 0]
    dy = centroids(out)[:, 1:, 1] - centroids(out)[:, :-1, 1]
    assert (dx[0::2] > 1.0).all() and (dx[1::2] < -1.0).all()
    assert dy.abs().max() < 0.1  # no vertical motion appears
    assert random_zoom(clips, 1.0, torch.Generator()) is clips  # off: untouched, no draws


def test_zoom_is_the_same_box_on_every_frame():
    still = torch.rand(3, 3, 1, 16, 16).repeat(1, 1, 5, 1, 1) * 2 - 1
    out = random_zoom(still, 0.5, torch.Generator().manual_seed(0))
    assert torch.allclose(out, out[:, :, :1].expand_as(out))


def test_color_jitter_is_per_clip_and_keeps_the_motion():
    clips = moving_squares(6, 5, 24, 4, 6, 2) * 0.5
    out = color_jitter(clips, 0.4, torch.Generator().manual_seed(2))
    assert out.shape == clips.shape and out.min() >= -1 and out.max() <= 1 and not torch.equal(out, clips)
    # every frame of a clip is changed by the same colour transform: a still clip stays still
    still = torch.rand(4, 3, 1, 8, 8).repeat(1, 1, 5, 1, 1) * 2 - 1
    jittered = color_jitter(still, 0.4, torch.Generator().manual_seed(3))
    assert torch.allclose(jittered, jittered[:, :, :1].expand_as(jittered), atol=1e-6)
    # a monotonic change of every value: the square is where it was in every frame
    where = lambda x: x.mean(1).flatten(2).argmax(2)  # noqa: E731
    assert torch.equal(where(out), where(clips))
    assert color_jitter(clips, 0.0, torch.Generator()) is clips
