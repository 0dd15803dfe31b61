"""Sample grids of generated videos (GIF + MP4) and the training-health figure.

Each grid row is one sample: the composite video, then (two-stream) its mask as grey and its
static background, side by side, so a collapsed mask or a frozen foreground is visible at once.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from runkit.atomic import atomic_write_bytes

PAD = 2


def _to_uint8(x: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    x = (x.detach().float().cpu().clamp(lo, hi) - lo) / (hi - lo)
    return (x * 255).round().to(torch.uint8).numpy()


def grid_frames(video: torch.Tensor, mask: torch.Tensor | None = None,
                background: torch.Tensor | None = None) -> np.ndarray:
    """(B,3,T,H,W) [-1,1] (+ mask (B,1,T,H,W) [0,1], background (B,3,H,W)) -> uint8 (T, GH, GW, 3)."""
    b, _, t, h, w = video.shape
    panels = [_to_uint8(video).transpose(0, 2, 3, 4, 1)]                       # B,T,H,W,3
    if mask is not None:
        panels.append(np.repeat(_to_uint8(mask, 0.0, 1.0).transpose(0, 2, 3, 4, 1), 3, axis=-1))
    if background is not None:
        bg = _to_uint8(background).transpose(0, 2, 3, 1)                        # B,H,W,3
        panels.append(np.broadcast_to(bg[:, None], (b, t, h, w, 3)))
    cols = len(panels)
    gh, gw = b * (h + PAD) + PAD, cols * (w + PAD) + PAD
    gh, gw = gh + gh % 2, gw + gw % 2  # even sizes for yuv420p
    grid = np.full((t, gh, gw, 3), 255, dtype=np.uint8)
    for row in range(b):
        for col, panel in enumerate(panels):
            y, x = PAD + row * (h + PAD), PAD + col * (w + PAD)
            grid[:, y:y + h, x:x + w] = panel[row]
    return grid


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    return frames if factor <= 1 else frames.repeat(factor, axis=1).repeat(factor, axis=2)


def write_gif(frames: np.ndarray, path: str | Path, fps: int = 8) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8) -> None:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    atomic_write_bytes(path, buf.getvalue())


def save_samples(output, stem: str | Path, fps: int = 8, scale: int = 2) -> list[Path]:
    """Write `<stem>.gif` and `<stem>.mp4` from a GeneratorOutput; returns the paths."""
    frames = upscale(grid_frames(output.video, output.mask, output.background), scale)
    stem = Path(stem)
    gif, mp4 = stem.with_suffix(".gif"), stem.with_suffix(".mp4")
    write_gif(frames, gif, fps)
    write_mp4(frames, mp4, fps)
    return [gif, mp4]


Panels = tuple  # ((title, ((metric key, label), ...)), ...)


def plot_health(rows: Sequence[dict], panels: Panels, path: str | Path) -> Path:
    """Training-health curves against step, one panel per (title, metrics) of the method, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("no metric rows to plot")
    step = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key, label in keys:
            if any(key in r for r in rows):
                ax.plot(step, [r.get(key, np.nan) for r in rows], label=label)
        if "acc" in title or "mask" in title:
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
