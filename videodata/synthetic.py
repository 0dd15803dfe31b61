"""Synthetic UCF-style video set: the suite's embedded default data.

Writes real encoded videos (mpeg4 in .avi, like UCF101) in exactly the UCF101 layout, so the
same code path reads it and the real data set:

    <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    <root>/ucfTrainTestlist/classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt (CRLF)
    <root>/unlabeled/vid_NNNNNN.avi          the pretraining pool (no labels, other seeds)

`layout=` any other set of `videodata.sets.SETS` writes that set's layout and list formats instead
(its module's synthetic twin: class names, file names, containers, list files), with the same
videos: 25 groups per class, split k testing groups 7(k-1)+1 .. 7k (a one-split set: split 1's).

Classes differ by MOTION only. Every appearance factor (background, object shape, colours,
size, position, orientation) is drawn independently of the class, and each class's motion is
built so that the distribution of a single frame is the same for every class (random start
position on a wrap-around canvas, random phase for periodic motions, log-uniform size for all
classes including the grow/shrink sawtooth). A single frame therefore carries no class signal;
the motion between frames carries all of it.

Learnability (a width-16 3D CNN on 16x32x32 clips must learn it from ~70 videos per class):
large objects (>= 1/3 of the frame height), several pixels of motion per frame, periods short
enough that any 16-frame window shows the motion, and smooth low-contrast backgrounds so the
moving object dominates. Busy textured backgrounds made a small 3D CNN memorise backgrounds.

Generation is deterministic by seed, parallel, resumable (each video is written atomically and
existing ones are kept when the config is unchanged) and idempotent (a stamp file holds the
config hash; a finished set with the same hash is reused, a different hash regenerates).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from runkit.atomic import atomic_open, atomic_write_json
from runkit.logging import progress
from runkit.processes import worker_context
from videodata.errors import VideoDataError
from videodata.records import VideoRecord
from videodata.sets import SETS

# Bump when rendering changes: it is part of the config hash, so old sets regenerate.
GENERATOR_VERSION = 2
STAMP_NAME = "synthetic.json"
NUM_GROUPS = 25  # UCF101 has 25 groups; split k tests on groups 7(k-1)+1 .. 7k
SPLITS = (1, 2, 3)

# Motion families, in class order. The first ten are the default set.
MOTIONS = (
    "MoveLeft",
    "MoveRight",
    "MoveUp",
    "MoveDown",
    "MoveUpLeft",
    "MoveUpRight",
    "MoveDownLeft",
    "MoveDownRight",
    "ShakeHorizontal",
    "ShakeVertical",
    # Harder families, only with num_classes > 10. A width-16 3D CNN (the paper's D, random
    # init, Adam 2e-4, batch 32, 16x32x32 clips, 72 videos/class) kept these four confused with
    # one another (~30% each after 500 iterations) while the ten above reach 90-92% test
    # accuracy after 500-700 iterations, so the default set leaves them out.
    "Grow",
    "Shrink",
    "RotateClockwise",
    "RotateCounterclockwise",
)
SHAPES = ("rectangle", "ellipse", "triangle", "cross", "diamond")
# The target sets whose layout the generator writes (each module's synthetic twin); motion family
# i is class i of the layout's class names.
LAYOUTS = tuple(SETS)
# Whole-frame camera motion (background and object together), for the stabilisation tests.
CAMERAS = ("none", "pan", "zoom", "shake", "mixed")
_SUPERSAMPLE = 2  # anti-aliased edges, so sub-pixel motion stays smooth
_FRAMES_PER_PASS = 8


@dataclass
class SyntheticConfig:
    """Knobs of the synthetic set; the defaults are the suite's demo set. It is also the schema of
    pretraining's `data.synthetic` config (pretrain/schema.py), so the two cannot drift apart.

    Sizes are fractions of the frame height so the set looks the same at any resolution.
    `speed_range` is the object speed in frame heights per frame (0.07-0.12 of 48 px is 3.4-5.8 px,
    i.e. 2.2-3.8 px/frame once resized to 32 px).
    """

    root: str = "outputs/data/synthetic"
    num_classes: int = 10
    clips_per_group: int = 4
    unlabeled_videos: int = 2000
    frames: int = 32
    frame_width: int = 64     # pixels of the encoded videos (not channels: cf. model.width)
    frame_height: int = 48
    fps: int = 25
    speed_range: tuple[float, float] = (0.07, 0.12)
    size_range: tuple[float, float] = (0.36, 0.8)  # object diameter / frame height
    background_contrast: float = 0.15  # 0 = flat background, 1 = full-range gradients and blobs
    bit_rate: int = 600_000
    # Camera motion over the whole scene, deterministic by each video's seed: "pan" (constant
    # velocity, random direction, `camera_amplitude` frame heights from first to last frame),
    # "zoom" (scale 1 -> 1 + amplitude or 1 / (1 + amplitude)), "shake" (independent jitter of
    # up to `camera_amplitude` frame heights every frame), "mixed" (half a pan, half a zoom, a
    # quarter of the shake and a rotation of up to amplitude / 2 radians). "none": a static camera.
    camera: str = "none"
    camera_amplitude: float = 0.3
    # A static fine texture on the background (cells of 1/16 frame height, +-texture * 255 grey
    # levels), so that camera motion can be tracked: the smooth default backgrounds have no
    # corners, and a stabiliser tracks the (independently moving) object instead. 0: none.
    background_texture: float = 0.0
    # a key of videodata.sets.SETS: "ucf101": UCF-101/<Class>/v_<Class>_gXX_cYY.avi + ucfTrainTestlist/;
    # "hmdb51": hmdb51/<class>/<source>_<class>_..._<n>.avi + testTrainMulti_7030_splits/ (fold k tests
    # the same groups as UCF101's split k); "ssv2", "diving48": their JSON lists, one split
    layout: str = "ucf101"
    seed: int = 0
    workers: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        self.speed_range = tuple(float(v) for v in self.speed_range)  # lists from YAML / OmegaConf
        self.size_range = tuple(float(v) for v in self.size_range)
        if len(self.speed_range) != 2 or len(self.size_range) != 2:
            raise ValueError(f"speed_range and size_range are (low, high) pairs, got {self.speed_range}, "
                             f"{self.size_range}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not 2 <= self.num_classes <= len(MOTIONS):
            raise ValueError(f"num_classes must be in 2..{len(MOTIONS)}, got {self.num_classes}")
        if self.clips_per_group < 1 or self.unlabeled_videos < 0:
            raise ValueError("clips_per_group must be >= 1 and unlabeled_videos >= 0")
        if self.frames < 2 or self.frame_width < 16 or self.frame_height < 16:
            raise ValueError(f"need frames >= 2 and a frame of at least 16x16, got "
                             f"{self.frames} frames of {self.frame_width}x{self.frame_height}")
        if self.frame_width % 2 or self.frame_height % 2:
            raise ValueError(f"frame_width and frame_height must be even for yuv420p, got "
                             f"{self.frame_width}x{self.frame_height}")
        lo, hi = self.speed_range
        if not 0 < lo <= hi:
            raise ValueError(f"speed_range must satisfy 0 < lo <= hi, got {self.speed_range}")
        lo, hi = self.size_range
        if not 0 < lo < hi < 1:
            raise ValueError(f"size_range must satisfy 0 < lo < hi < 1, got {self.size_range}")
        if not 0 <= self.background_contrast <= 1:
            raise ValueError(f"background_contrast must be in [0, 1], got {self.background_contrast}")
        if self.camera not in CAMERAS:
            raise ValueError(f"camera must be one of {CAMERAS}, got {self.camera!r}")
        if not 0 < self.camera_amplitude <= 1:
            raise ValueError(f"camera_amplitude must be in (0, 1] (frame heights), got {self.camera_amplitude}")
        if not 0 <= self.background_texture <= 1:
            raise ValueError(f"background_texture must be in [0, 1], got {self.background_texture}")

    @property
    def class_names(self) -> list[str]:
        names = SETS[self.layout].synthetic_classes or MOTIONS
        return list(names[: self.num_classes])

    def content_dict(self) -> dict:
        """Everything that changes the files' content (not where they go or how fast)."""
        data = dataclasses.asdict(self)
        for key in ("root", "workers", "progress"):
            data.pop(key)
        if self.camera == "none":  # a static camera hashes as before the camera existed
            for key in ("camera", "camera_amplitude"):
                data.pop(key)
        if not self.background_texture:
            data.pop("background_texture")
        if self.layout == "ucf101":  # the original layout hashes as before layouts existed
            data.pop("layout")
        data["speed_range"] = list(self.speed_range)
        data["size_range"] = list(self.size_range)
        # the frame size's keys as they were first named, so existing sets keep their fingerprint
        data["width"], data["height"] = data.pop("frame_width"), data.pop("frame_height")
        data["generator_version"] = GENERATOR_VERSION
        return data

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.content_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class SyntheticLayout:
    root: Path
    video_root: Path
    lists_dir: Path
    unlabeled_dir: Path
    class_names: tuple[str, ...] = ()
    fingerprint: str = ""


@dataclass(frozen=True)
class VideoSpec:
    """One video to render: where it goes, its motion family and its seed key."""

    relpath: str  # relative to the set's root
    motion: int
    seed_key: tuple[int, ...] = field(default=())


def layout_for(cfg: SyntheticConfig) -> SyntheticLayout:
    root, target = Path(cfg.root), SETS[cfg.layout]
    return SyntheticLayout(root=root, video_root=target.video_root(root), lists_dir=target.lists_dir(root),
                           unlabeled_dir=root / "unlabeled", class_names=tuple(cfg.class_names),
                           fingerprint=cfg.fingerprint)


def labeled_specs(cfg: SyntheticConfig) -> list[VideoSpec]:
    target = SETS[cfg.layout]
    specs = []
    for label, name in enumerate(cfg.class_names):
        for group in range(1, NUM_GROUPS + 1):
            for clip in range(1, cfg.clips_per_group + 1):
                file = target.synthetic_file(name, label, group, clip)
                specs.append(VideoSpec(f"{target.videos}/{file}", label, (cfg.seed, 0, label, group, clip)))
    return specs


def unlabeled_specs(cfg: SyntheticConfig) -> list[VideoSpec]:
    # Balanced over motion families; different seed stream from the labeled videos.
    return [VideoSpec(f"unlabeled/vid_{i:06d}.avi", i % cfg.num_classes, (cfg.seed, 1, i))
            for i in range(cfg.unlabeled_videos)]


def split_groups(split: int) -> range:
    """Groups held out for testing in UCF101 split `split` (1-based)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split}")
    return range(7 * (split - 1) + 1, 7 * split + 1)


# ----------------------------------------------------------------------------- rendering

def _background(rng: np.random.Generator, cfg: SyntheticConfig):
    """Smooth, dark, low-contrast background of any hue: a colour gradient plus soft blobs.

    Backgrounds stay darker than every object. A fixed brightness polarity (bright object on a
    darker scene) lets a small 3D CNN learn one set of moving-edge detectors instead of
    memorising each video's colours (measured: with free polarity it memorised, 16% test).

    Returns (the frame's background, float32 (H, W, 3); `paint(ys, xs)`, the same analytic
    scene at any coordinates in frame heights, for a moving camera).
    """
    h, w = cfg.frame_height, cfg.frame_width
    amp = 255.0 * cfg.background_contrast
    base = rng.uniform(10, 100, size=3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = (ys + 0.5) / h, (xs + 0.5) / h  # height units
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * xs + np.sin(theta) * ys)
    mean, spread = ramp.mean(), max(float(np.ptp(ramp)), 1e-6)  # normalised on the frame
    tint = rng.uniform(-1, 1, size=3)
    blobs = [(rng.uniform(0, 1), rng.uniform(0, w / h), rng.uniform(0.15, 0.35),
              rng.uniform(-0.6, 0.6, size=3)) for _ in range(rng.integers(2, 5))]

    def paint(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        ramp = (np.cos(theta) * xs + np.sin(theta) * ys)
        ramp = (ramp - mean) / spread  # in [-0.5, 0.5] on the frame
        img = base + ramp[..., None] * tint * amp
        for cy, cx, sigma, colour in blobs:
            blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
            img = img + blob[..., None] * colour * amp
        return np.clip(img, 0, 130).astype(np.float32)

    return paint(ys, xs), paint


def _camera(spec: VideoSpec, cfg: SyntheticConfig):
    """None for a static camera, else `view(i, xs, ys) -> (xs, ys)`: frame i's pixel coordinates
    mapped to scene coordinates (pixels, float32). Its own seed stream (the scene's draws, hence
    the scene, are those of the same video without camera motion)."""
    if cfg.camera == "none":
        return None
    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed_key, 0xCA3E7A]))
    h, w, amp = cfg.frame_height, cfg.frame_width, cfg.camera_amplitude
    u = np.arange(cfg.frames, dtype=np.float64) / (cfg.frames - 1)  # 0 .. 1 over the video
    dx, dy = np.zeros_like(u), np.zeros_like(u)
    log_scale, angle = np.zeros_like(u), np.zeros_like(u)
    weights = {"pan": (1, 0, 0, 0), "zoom": (0, 1, 0, 0), "shake": (0, 0, 1, 0),
               "mixed": (0.5, 0.5, 0.25, 0.5)}[cfg.camera]
    pan, zoom, shake, turn = (wgt * amp for wgt in weights)
    if pan:
        phi = rng.uniform(0, 2 * np.pi)
        dx, dy = dx + pan * h * u * np.cos(phi), dy + pan * h * u * np.sin(phi)
    if zoom:
        log_scale = log_scale + rng.choice([-1.0, 1.0]) * np.log1p(zoom) * u
    if shake:
        radius = shake * h * np.sqrt(rng.uniform(0, 1, cfg.frames))
        phi = rng.uniform(0, 2 * np.pi, cfg.frames)
        dx, dy = dx + radius * np.cos(phi), dy + radius * np.sin(phi)
    if turn:
        angle = angle + rng.choice([-1.0, 1.0]) * turn * u
    cx, cy = w / 2, h / 2

    def view(i: int, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = float(np.exp(log_scale[i]))
        c, n = s * float(np.cos(angle[i])), s * float(np.sin(angle[i]))
        x0, y0 = xs - cx, ys - cy
        return (cx + float(dx[i]) + c * x0 - n * y0), (cy + float(dy[i]) + n * x0 + c * y0)

    return view


def _texture(spec: VideoSpec, cfg: SyntheticConfig):
    """None without texture, else `texture(xs, ys)`: a static grey texture (smooth random values
    on a grid of 1/16 frame height, cubic-interpolated, mirrored beyond the frame) at any scene
    coordinates in pixels, as float32 (..., 1). Its own seed stream, like the camera."""
    if not cfg.background_texture:
        return None
    import cv2

    rng = np.random.default_rng(np.random.SeedSequence([*spec.seed_key, 0x7E87]))
    cell = cfg.frame_height / 16
    grid = rng.uniform(-1, 1, (int(np.ceil(cfg.frame_height / cell)) + 2, int(np.ceil(cfg.frame_width / cell)) + 2))
    grid = (grid * 255.0 * cfg.background_texture).astype(np.float32)

    def texture(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        out = cv2.remap(grid, (xs / cell).astype(np.float32), (ys / cell).astype(np.float32),
                        cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        return out[..., None]

    return texture


def _object_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright body of any hue and a darker tip of another hue (still brighter than the scene)."""
    body = rng.uniform(0, 1, size=3)
    body = 150 + 105 * body / body.max()  # brightest channel at 255, others >= 150
    tip = rng.uniform(0, 1, size=3)
    tip = 60 + 80 * tip / tip.max()
    return body.astype(np.float32), tip.astype(np.float32)


def _inside(shape: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Shape membership in object coordinates (u along the object's axis, unit half-length)."""
    if shape == "rectangle":
        return (np.abs(u) <= 1) & (np.abs(v) <= aspect)
    if shape == "ellipse":
        return u**2 + (v / aspect) ** 2 <= 1
    if shape == "triangle":
        return (u >= -0.7) & (np.abs(v) <= 0.9 * (1 - u) / 1.7)
    if shape == "cross":
        return ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | ((np.abs(v) <= 0.8) & (np.abs(u + 0.25) <= 0.3))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) / aspect <= 1
    raise ValueError(f"unknown shape {shape!r}")


def _trajectory(motion: str, rng: np.random.Generator, cfg: SyntheticConfig
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, y (pixels, wrapped later), radius (pixels) and angle (radians).

    Each motion is parameterised so that frame 0 has the same distribution for every class.
    """
    t = np.arange(cfg.frames, dtype=np.float64)
    h, w = cfg.frame_height, cfg.frame_width
    speed = rng.uniform(*cfg.speed_range) * h  # pixels per frame
    log_lo, log_hi = np.log(0.5 * cfg.size_range[0] * h), np.log(0.5 * cfg.size_range[1] * h)
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    angle0 = rng.uniform(0, 2 * np.pi)
    radius = np.full_like(t, np.exp(rng.uniform(log_lo, log_hi)))
    x, y, angle = np.full_like(t, x0), np.full_like(t, y0), np.full_like(t, angle0)
    if motion.startswith("Move"):
        dx = ("Right" in motion) - ("Left" in motion)
        dy = ("Down" in motion) - ("Up" in motion)  # image y points down
        norm = np.hypot(dx, dy)
        x = x0 + speed * dx / norm * t
        y = y0 + speed * dy / norm * t
    elif motion in ("Grow", "Shrink"):
        # Sawtooth in log size with a random phase: log-uniform size in every frame, like the
        # other classes, and a full growth (or shrink) sweep every 8-12 frames.
        period = rng.uniform(8, 12)
        sign = 1.0 if motion == "Grow" else -1.0
        phase = np.mod(rng.uniform(0, 1) + sign * t / period, 1.0)
        radius = np.exp(log_lo + phase * (log_hi - log_lo))
    elif motion in ("RotateClockwise", "RotateCounterclockwise"):
        # The object's tip moves at about `speed`; image y points down, so +angle is clockwise.
        omega = np.clip(speed / (0.8 * radius[0]), 0.14, 0.45)
        angle = angle0 + (omega if motion == "RotateClockwise" else -omega) * t
    elif motion in ("ShakeHorizontal", "ShakeVertical"):
        # The direction flips every 3.2-4.5 frames: within any short window a shake differs
        # from a translation on the same axis (periods 8-12 got confused with translations;
        # periods 5-8 with small amplitude blurred horizontal vs vertical).
        period = rng.uniform(6.5, 9)
        amplitude = speed * period / np.pi  # peak speed 2 * speed
        offset = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        if motion == "ShakeHorizontal":
            x = x0 + offset
        else:
            y = y0 + offset
    else:
        raise ValueError(f"unknown motion {motion!r}")
    return x, y, radius, angle


def render(spec: VideoSpec, cfg: SyntheticConfig) -> np.ndarray:
    """Draw one video in memory: uint8 (T, H, W, 3). Deterministic in (spec.seed_key, cfg)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(spec.seed_key)))
    h, w, ss = cfg.frame_height, cfg.frame_width, _SUPERSAMPLE
    # Appearance first, then motion: appearance draws never depend on the class.
    bg, paint = _background(rng, cfg)
    body, stripe = _object_colours(rng)
    shape = SHAPES[rng.integers(len(SHAPES))]
    aspect = rng.uniform(0.45, 0.7)
    x, y, radius, angle = _trajectory(MOTIONS[spec.motion], rng, cfg)

    # Supersampled pixel centres: a row of x and a column of y (they broadcast to the grid), so
    # the wrap-around below runs on W + H values per frame, not W * H.
    gx = (np.arange(w * ss, dtype=np.float32)[None, :] + 0.5) / ss
    gy = (np.arange(h * ss, dtype=np.float32)[:, None] + 0.5) / ss
    view, texture = _camera(spec, cfg), _texture(spec, cfg)
    if view is not None or texture is not None:
        py, px = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # pixel centres
    if view is not None:  # a moving camera maps every subpixel on its own: the whole grid
        full_x, full_y = np.broadcast_arrays(gx, gy)
    if texture is not None:
        bg = np.clip(bg + texture(px, py), 0, 130)
    # Per-frame object pose as float32 (frames, 1, 1): the grid math below stays in float32.
    pose = np.stack([x - w / 2, y - h / 2, np.cos(angle) / radius, np.sin(angle) / radius])
    off_x, off_y, cos_r, sin_r = pose.astype(np.float32)[:, :, None, None]
    frames = np.empty((cfg.frames, h, w, 3), dtype=np.uint8)
    # A few frames at a time: numpy's per-call cost is spread over frames, memory stays bounded.
    for lo in range(0, cfg.frames, _FRAMES_PER_PASS):
        at = slice(lo, min(lo + _FRAMES_PER_PASS, cfg.frames))
        sx, sy, scene = gx, gy, bg
        if view is not None:  # the camera moves: sample the (static) scene where it looks now
            frame_ids = range(at.start, at.stop)
            sx, sy = (np.stack(axis) for axis in zip(*(view(i, full_x, full_y) for i in frame_ids)))
            scenes = []
            for i in frame_ids:
                bx, by = view(i, px, py)
                scene_i = paint(by / h, bx / h)
                scenes.append(scene_i if texture is None else np.clip(scene_i + texture(bx, by), 0, 130))
            scene = np.stack(scenes)
        # Wrap-around canvas: an object leaving one side re-enters on the other.
        dx = np.mod(sx - off_x[at], w) - w / 2
        dy = np.mod(sy - off_y[at], h) - h / 2
        u = cos_r[at] * dx + sin_r[at] * dy
        v = cos_r[at] * dy - sin_r[at] * dx
        inside = _inside(shape, u, v, aspect)
        tip = inside & (u > 0.35)  # a second colour at one end shows rotation and orientation
        a_all, a_tip = _coverage(inside, ss)[..., None], _coverage(tip, ss)[..., None]
        img = scene * (1 - a_all) + body * (a_all - a_tip) + stripe * a_tip
        frames[at] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return frames


def _coverage(mask: np.ndarray, ss: int) -> np.ndarray:
    """(..., H*ss, W*ss) bool -> float32 (..., H, W): the covered fraction of each pixel's ss x ss
    subpixels (summed as small integers: exact, and faster than a float mean over a reshape)."""
    as_int = mask.view(np.uint8)
    count = sum(as_int[..., i::ss, j::ss] for i in range(ss) for j in range(ss))
    return count.astype(np.float32) / (ss * ss)


# container by file extension: (format, codec); .avi is UCF101's and HMDB51's codec family
CONTAINERS = {".avi": ("avi", "mpeg4"), ".mp4": ("mp4", "mpeg4"), ".webm": ("webm", "libvpx")}


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int, bit_rate: int = 600_000) -> None:
    """Encode uint8 (T, H, W, 3) frames, atomically: mpeg4 in AVI (UCF101's codec family), or by the
    extension as in `CONTAINERS` (mpeg4 in .mp4, VP8 in .webm)."""
    container_format, codec = CONTAINERS[Path(path).suffix.lower()]
    with atomic_open(path, "wb") as handle:
        with av.open(handle, mode="w", format=container_format) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.bit_rate = bit_rate
            stream.codec_context.gop_size = 12
            stream.codec_context.thread_count = 1  # workers already use every core
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def _write_chunk(cfg_dict: dict, specs: list[VideoSpec]) -> int:
    cfg = SyntheticConfig(**cfg_dict)
    root = Path(cfg.root)
    written = 0
    for spec in specs:
        path = root / spec.relpath
        if path.is_file():  # written atomically, so an existing file is complete
            continue
        write_video(path, render(spec, cfg), cfg.fps, cfg.bit_rate)
        written += 1
    return written


# ----------------------------------------------------------------------------- split files

def write_split_files(cfg: SyntheticConfig) -> None:
    """The layout's official list files (its module's `write_synthetic_lists`): a video is on the
    test side of split k when its group is one of `split_groups(k)`."""
    target, layout = SETS[cfg.layout], layout_for(cfg)
    names = cfg.class_names
    records = [VideoRecord(spec.relpath, spec.relpath.split("/", 1)[1], spec.motion, names[spec.motion],
                           spec.seed_key[3], spec.seed_key[4]) for spec in labeled_specs(cfg)]
    layout.lists_dir.mkdir(parents=True, exist_ok=True)
    target.write_synthetic_lists(layout.lists_dir, names, records, lambda split, group: group in split_groups(split))


def _ours(cfg: SyntheticConfig, layout: SyntheticLayout) -> list[Path]:
    """What the generator writes under the root: the video and unlabeled folders, and the list
    folder or (a set whose lists lie in the root itself) the list files."""
    lists = [layout.lists_dir] if layout.lists_dir != layout.root else \
        [layout.lists_dir / name for name in SETS[cfg.layout].list_files]
    return [layout.video_root, *lists, layout.unlabeled_dir]


# ----------------------------------------------------------------------------- driver

class SyntheticSetError(VideoDataError, ValueError):
    """The root holds something this generator cannot reuse or replace (names the fix)."""


def _read_stamp(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):  # none yet (or a bad root: mkdir will say)
        return None
    except (OSError, ValueError) as exc:
        raise SyntheticSetError(f"unreadable synthetic-set stamp {path}: {exc}; delete it to regenerate") from exc


def generate(cfg: SyntheticConfig = SyntheticConfig()) -> SyntheticLayout:
    """Generate the set under `cfg.root` (or reuse a finished one with the same config).

    A set left half-written by a killed run with the same config resumes (finished videos are
    kept); a set from a different config is deleted and regenerated. Folders that this
    generator did not create (no stamp file) are never deleted: that is an error instead.
    """
    layout = layout_for(cfg)
    root = layout.root
    stamp_path = root / STAMP_NAME
    stamp = _read_stamp(stamp_path)
    if stamp and stamp.get("fingerprint") == cfg.fingerprint and stamp.get("complete"):
        return layout
    ours = _ours(cfg, layout)
    if stamp is None:
        present = [str(p) for p in ours if p.exists()]
        if present:
            raise SyntheticSetError(f"{root} holds {', '.join(present)} but no {STAMP_NAME}: not a "
                                  f"synthetic set this generator wrote; choose another root")
    elif stamp.get("fingerprint") != cfg.fingerprint:
        for folder in ours:  # a different config: its videos are stale
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
    atomic_write_json(stamp_path, {"fingerprint": cfg.fingerprint, "config": cfg.content_dict(),
                                   "complete": False})

    specs = labeled_specs(cfg) + unlabeled_specs(cfg)
    for folder in sorted({(root / s.relpath).parent for s in specs}):
        folder.mkdir(parents=True, exist_ok=True)
    layout.unlabeled_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if not (root / s.relpath).is_file()]
    cfg_dict = dataclasses.asdict(cfg)
    bar = progress(total=len(specs), initial=len(specs) - len(todo), desc="synthetic videos",
                   unit="video", disable=not cfg.progress)
    chunk = 25
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    try:
        if cfg.workers <= 1 or len(chunks) <= 1:
            for part in chunks:
                _write_chunk(cfg_dict, part)
                bar.update(len(part))
        else:
            with ProcessPoolExecutor(cfg.workers, mp_context=worker_context()) as pool:
                futures = {pool.submit(_write_chunk, cfg_dict, part): len(part) for part in chunks}
                for future in as_completed(futures):
                    future.result()
                    bar.update(futures[future])
    finally:
        bar.close()
    write_split_files(cfg)
    atomic_write_json(stamp_path, {"fingerprint": cfg.fingerprint, "config": cfg.content_dict(),
                                   "complete": True, "labeled_videos": len(specs) - cfg.unlabeled_videos,
                                   "unlabeled_videos": cfg.unlabeled_videos})
    return layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic UCF-style video set.")
    parser.add_argument("--root", default=SyntheticConfig.root)
    parser.add_argument("--num-classes", type=int, default=SyntheticConfig.num_classes)
    parser.add_argument("--clips-per-group", type=int, default=SyntheticConfig.clips_per_group)
    parser.add_argument("--unlabeled-videos", type=int, default=SyntheticConfig.unlabeled_videos)
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    parser.add_argument("--workers", type=int, default=SyntheticConfig.workers)
    args = parser.parse_args(argv)
    layout = generate(SyntheticConfig(root=args.root, num_classes=args.num_classes,
                                      clips_per_group=args.clips_per_group,
                                      unlabeled_videos=args.unlabeled_videos, seed=args.seed,
                                      workers=args.workers))
    print(f"synthetic set {layout.fingerprint} at {layout.root}")


if __name__ == "__main__":
    main()
