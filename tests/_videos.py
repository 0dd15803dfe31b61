"""Write small real encoded videos with PyAV for tests (no external tool, nothing downloaded)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


BITS = 6


def index_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame i shows its index in binary as BITS horizontal bands (white = 1): it survives lossy
    coding, any crop that keeps the full height, and resizing."""
    assert n <= 2 ** BITS
    frames = np.full((n, h, w, 3), 16, np.uint8)
    band = h // BITS
    for i in range(n):
        for b in range(BITS):
            if i >> b & 1:
                frames[i, b * band:(b + 1) * band] = 235
    return frames


def read_index(clip: np.ndarray) -> list[int]:
    """Inverse of index_frames for a decoded (T, H, W, 3) clip at any size."""
    h = clip.shape[1]
    rows = clip[..., 0].astype(float).mean(axis=2)          # (T, H)
    centres = [int((b + 0.5) * h / BITS) for b in range(BITS)]
    bits = rows[:, centres] > 125
    return [int(sum(int(v) << b for b, v in enumerate(row))) for row in bits]


def block_frames(n: int, h: int = 32, w: int = 48) -> np.ndarray:
    """Solid colour blocks (2x3 grid) whose colours change with the frame index."""
    rng = np.random.default_rng(0)
    colours = rng.integers(20, 236, size=(n, 2, 3, 3))
    return np.repeat(np.repeat(colours, h // 2, axis=1), w // 3, axis=2).astype(np.uint8)


def write_video(path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4",
                b_frames: int = 0) -> Path:
    """Encode uint8 (T, H, W, 3) frames; mpeg4 in .avi mirrors UCF101's Xvid files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps, 1))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.options = {"qscale": "2"}  # near-lossless: decoded values stay close
        elif codec == "libx264":
            stream.options = {"crf": "12", "preset": "ultrafast" if not b_frames else "fast"}
        if b_frames:
            stream.codec_context.max_b_frames = b_frames
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path, seconds: float = 0.5) -> Path:
    """A file with one audio stream and no video (e.g. a .mp4 holding only AAC)."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 10) * 0.3).astype(np.float32)
        for start in range(0, len(samples), 1024):
            chunk = samples[None, start:start + 1024]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
