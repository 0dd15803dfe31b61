"""Stabilisation: estimate the global camera motion of a video and undo it (the original VGAN's
`frames-stable-nofail` data, cvondrick/videogan `extra/stabilize_videos_many.py`; see FACTS.md).

What the original does, and what this module does the same way:
- each frame's motion to the previous frame is a homography from matched points, estimated
  robustly (`cv2.findHomography(..., cv2.RANSAC, 5.0)`, at least 10 matches);
- the homographies are chained, so every frame is warped into the first frame's coordinates;
- pixels the warp leaves uncovered keep the previous output frame's pixels (`fill="previous"`;
  the original blended them in through an eroded coverage mask; here OpenCV's BORDER_TRANSPARENT
  warp blends the one-pixel seam with them);
- a video fails (StabilisationError; the cache leaves it out: "nofail") on too few keypoints or
  inliers, and the output ends where the warp leaves the frame (the original ends the clip
  there and drops clips shorter than 16 frames).

What differs, and why:
- the whole video (or its first `max_frames` frames) is one clip with frame 0 as reference
  (the original cut each video into clips of <= 34 frames, each with its own reference, after
  skipping 2 frames): the cache stores one frame sequence per video;
- motion is estimated on a greyscale copy whose short side is `estimate_size` (default 120 px,
  half of UCF101's 240), the RANSAC threshold scaled with it (5 px at a 240-px short side); the
  warp is applied at the decoded resolution, before any resize to the training size;
- default `method="flow"`: good features tracked with pyramidal Lucas-Kanade, the tracks that
  were homography inliers carried to the next frame (re-detected when fewer than half remain).
  `"sift"` (the original's detector) and `"orb"` match descriptors with a 0.7 Lowe ratio test.
  "flow" is the one fast enough for whole-video caching (benchmarks/bench_stabilise.py);
- extra sanity limits the original lacks: a frame-to-frame warp whose affine determinant,
  perspective or corner displacement is extreme is "degenerate" (the video fails); a chained
  warp that covers less than `min_coverage` of the output window, or whose determinant or
  perspective leaves the limits, ends the video ("leaves the frame");
- a near-random set of tracks can still fit a homography with 10 inliers, so at least a quarter
  of the candidate points must be inliers too (measured: >= 43% on each of the 5,167 frame pairs
  of the 31 real UCF101 clips, ~15% between two unrelated smooth-noise frames).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Iterable

import cv2
import numpy as np

from videodata.decode import DEFAULT_THREADS, as_hw, iter_native_frames
from videodata.errors import VideoDataError

# Bump when the algorithm changes its output: it is part of `StabiliseConfig.as_dict()`, hence of
# the clip cache's fingerprint.
STABILISE_VERSION = 1
METHODS = ("flow", "orb", "sift")
FILLS = ("previous", "black")
ON_FAILURE = ("drop", "plain")
# The original's RANSAC threshold (5.0 px) was applied at UCF101's native 320x240.
REFERENCE_SHORT_SIDE = 240
LOWE_RATIO = 0.7  # the original's ratio test (orb, sift)
MIN_INLIER_FRACTION = 0.25
# Lucas-Kanade: 11x11 windows, 3 pyramid levels (tracks ~20 px/frame at the estimation size).
# Measured on the real UCF101 clips at 120 px: 15x15 windows double the LK time; re-detecting
# corners every frame instead of carrying the inlier tracks costs +0.3 ms/frame.
_LK = dict(winSize=(11, 11), maxLevel=2,
           criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03))
# LK's mean absolute patch difference (grey levels): on the real UCF101 clips median 2.3, 99th
# percentile 18.5; between two unrelated noise frames ~65.
_MAX_TRACK_ERROR = 30.0
_GFTT_QUALITY = 0.01


class StabilisationError(VideoDataError):
    """A video whose camera motion cannot be estimated reliably (too few keypoints or inliers, a
    degenerate warp, or the warp leaving the frame too early). The message says why."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(reason if self.path is None else f"cannot stabilise video {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason, self.path))


@dataclass(frozen=True)
class StabiliseConfig:
    """How to stabilise. Defaults: fast enough to cache whole UCF101 videos (see module doc).

    method: "flow" (Lucas-Kanade tracks), "sift" (the original's detector) or "orb".
    estimate_size: short side, in pixels, of the greyscale copy the motion is estimated on
      (never upscaled). 120 is exactly half of UCF101's 240: a cheap, exact 2x area reduction.
    max_features: corners tracked ("flow") or keypoints detected ("orb", "sift") per frame.
    min_inliers: RANSAC inliers a frame pair needs (the original: 10 matches).
    ransac_threshold: RANSAC reprojection threshold in pixels at a 240-pixel short side (the
      original's 5.0 on 320x240 video); scaled to the estimation size.
    max_step: largest corner displacement between consecutive frames, as a fraction of the short
      side; beyond it the warp is degenerate (the video fails).
    min_det, max_det: range of the determinant of the warp's affine part (its area scale), for a
      frame pair (outside: degenerate, fails) and for the chained warp (outside: the video ends).
    max_perspective: largest relative change of the projective divisor w over the frame's corners
      (0 for an affine warp); same two roles as the determinant. Below 1, so w > 0 on the frame.
    min_coverage: the chained warp of frame k must cover at least this fraction of the output
      window, or the video ends before frame k (the original ended at zero coverage).
    min_frames: a video that ends early (see above) with fewer frames than this fails (the
      original: 16); a video that is simply short is kept whole.
    fill: "previous" (uncovered pixels keep the previous output frame, as the original) or "black".
    on_failure: what a clip cache does with a video that cannot be stabilised: "drop" it (the
      original's "nofail" lists; for pretraining) or keep it "plain", unstabilised (for test
      sets, which must stay whole to be comparable). Either way report.json lists it with the reason.
    """

    method: str = "flow"
    estimate_size: int = 120
    max_features: int = 100
    min_inliers: int = 10
    ransac_threshold: float = 5.0
    max_step: float = 0.25
    min_det: float = 0.5
    max_det: float = 2.0
    max_perspective: float = 0.5
    min_coverage: float = 0.5
    min_frames: int = 16
    fill: str = "previous"
    on_failure: str = "drop"

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"StabiliseConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        need(self.method in METHODS, "method", f"one of {METHODS}")
        need(self.fill in FILLS, "fill", f"one of {FILLS}")
        need(self.on_failure in ON_FAILURE, "on_failure", f"one of {ON_FAILURE}")
        for name, low in (("estimate_size", 16), ("max_features", 8), ("min_inliers", 4), ("min_frames", 1)):
            value = getattr(self, name)
            need(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low,
                 name, f"an integer >= {low}")
        need(self.max_features >= self.min_inliers, "max_features", f">= min_inliers ({self.min_inliers})")
        need(_finite(self.ransac_threshold) and self.ransac_threshold > 0, "ransac_threshold", "> 0")
        need(_finite(self.max_step) and 0 < self.max_step <= 1, "max_step", "in (0, 1]")
        need(_finite(self.min_det) and 0 < self.min_det < 1, "min_det", "in (0, 1)")
        need(_finite(self.max_det) and self.max_det > 1, "max_det", "> 1")
        need(_finite(self.max_perspective) and 0 < self.max_perspective < 1, "max_perspective", "in (0, 1)")
        need(_finite(self.min_coverage) and 0 <= self.min_coverage <= 1, "min_coverage", "in [0, 1]")

    def as_dict(self) -> dict:
        """Everything that changes the output, for hashing (includes the algorithm's version)."""
        return {**asdict(self), "version": STABILISE_VERSION}


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class StabiliseReport:
    """What happened to one video: frames given and returned, RANSAC inliers of each frame pair
    (frame k to k-1, k = 1 .. frames_out - 1), and why the output stops early (None if it doesn't)."""

    frames_in: int = 0
    frames_out: int = 0
    inliers: list[int] = field(default_factory=list)
    ended: str | None = None


# ----------------------------------------------------------------------------- motion estimation

class _Fail(Exception):
    """Internal: one frame pair's estimation failed (becomes a StabilisationError)."""


class _FlowEstimator:
    """Good features in the previous frame, tracked into the current one with pyramidal LK."""

    def __init__(self, cfg: StabiliseConfig, short_side: int):
        self.cfg = cfg
        self.min_distance = max(3.0, short_side / 24)
        self.prev: np.ndarray | None = None
        self.points: np.ndarray | None = None  # inlier tracks in `prev`, carried forward

    def __call__(self, grey: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, int] | None:
        prev, self.prev = self.prev, grey
        if prev is None:
            return None
        cfg = self.cfg
        pts = self.points
        if pts is None or len(pts) < max(cfg.max_features // 2, cfg.min_inliers):
            pts = cv2.goodFeaturesToTrack(prev, cfg.max_features, _GFTT_QUALITY, self.min_distance)
            found = 0 if pts is None else len(pts)
            if found < cfg.min_inliers:
                self.points = None
                raise _Fail(f"too few keypoints at frame {k - 1} ({found} < {cfg.min_inliers})")
        nxt, status, err = cv2.calcOpticalFlowPyrLK(prev, grey, pts, None, **_LK)
        ok = (status[:, 0] == 1) & (err[:, 0] < _MAX_TRACK_ERROR)
        src, dst = nxt[ok], pts[ok]
        h, inl = _robust_homography(src, dst, threshold, cfg, k, "tracked points")
        self.points = src[inl].reshape(-1, 1, 2)
        return h, int(inl.sum())


class _FeatureEstimator:
    """Keypoints + descriptors in every frame, matched to the previous frame (Lowe ratio test)."""

    def __init__(self, cfg: StabiliseConfig, short_side: int):
        self.cfg = cfg
        if cfg.method == "sift":
            self.detector = cv2.SIFT_create(nfeatures=cfg.max_features)
            norm = cv2.NORM_L2
        else:
            self.detector = cv2.ORB_create(nfeatures=cfg.max_features, edgeThreshold=15, patchSize=15)
            norm = cv2.NORM_HAMMING
        self.matcher = cv2.BFMatcher(norm)
        self.prev: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, grey: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, int] | None:
        keypoints, desc = self.detector.detectAndCompute(grey, None)
        found = 0 if desc is None else len(keypoints)
        cur = (np.float32([kp.pt for kp in keypoints]), desc) if found >= self.cfg.min_inliers else None
        prev, self.prev = self.prev, cur
        if cur is None:
            raise _Fail(f"too few keypoints at frame {k} ({found} < {self.cfg.min_inliers})")
        if prev is None:
            return None  # frame 0 (a failed previous frame has already raised)
        pairs = self.matcher.knnMatch(cur[1], prev[1], k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < LOWE_RATIO * m[1].distance]
        src = cur[0][[m.queryIdx for m in good]].reshape(-1, 1, 2)
        dst = prev[0][[m.trainIdx for m in good]].reshape(-1, 1, 2)
        h, inl = _robust_homography(src, dst, threshold, self.cfg, k, "matches")
        return h, int(inl.sum())


def _robust_homography(src: np.ndarray, dst: np.ndarray, threshold: float, cfg: StabiliseConfig,
                       k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC homography mapping frame k's points `src` onto frame k-1's `dst`, and the inlier mask."""
    if len(src) < cfg.min_inliers:
        raise _Fail(f"too few {what} at frame {k} ({len(src)} < {cfg.min_inliers})")
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
    inliers = 0 if mask is None else int(mask.sum())
    need = max(cfg.min_inliers, math.ceil(MIN_INLIER_FRACTION * len(src)))
    if h is None or inliers < need:
        raise _Fail(f"too few inliers at frame {k} ({inliers} of {len(src)} {what}, need {need})")
    return h, mask[:, 0].astype(bool)


# ----------------------------------------------------------------------------- warp geometry

def _geometry(h: np.ndarray, width: int, height: int) -> tuple[float, float, list[tuple[float, float]]]:
    """(area scale of the affine part, perspective, the frame's corners mapped by h) of a
    homography h with h[2, 2] = 1. Perspective: the largest relative change of the divisor w over
    the corners against the centre (0 for an affine warp; >= 1 once w <= 0 at a corner).
    Python floats: this runs twice per frame, and numpy's per-call overhead dominated it."""
    (a, b, c), (d, e, f), (g, i, j) = h.tolist()
    centre = g * width / 2 + i * height / 2 + j
    mapped, persp = [], 0.0
    for x, y in ((0, 0), (width, 0), (width, height), (0, height)):
        w = g * x + i * y + j
        persp = max(persp, abs(w / centre - 1) if centre > 0 else math.inf)
        mapped.append(((a * x + b * y + c) / w, (d * x + e * y + f) / w) if w > 0 else (math.inf, math.inf))
    return (a * e - b * d) / (j * j), persp, mapped


class _Stabiliser:
    """Streams frames through estimation, chaining and the warp into a window of the reference
    frame (the whole frame, or the crop `decode_stabilised` keeps)."""

    def __init__(self, cfg: StabiliseConfig, height: int, width: int,
                 window: tuple[int, int, int, int] | None = None):
        self.cfg, self.height, self.width = cfg, height, width
        self.window = window or (0, 0, width, height)  # x, y, w, h in reference pixels
        short = min(height, width)
        scale = min(1.0, cfg.estimate_size / short)
        self.est_w, self.est_h = max(8, round(width * scale)), max(8, round(height * scale))
        sx, sy = self.est_w / width, self.est_h / height
        # native pixel -> estimation pixel (pixel centres aligned, as an area resize does)
        self.to_est = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
        self.from_est = np.linalg.inv(self.to_est)
        self.threshold = cfg.ransac_threshold * min(self.est_w, self.est_h) / REFERENCE_SHORT_SIDE
        est_cls = _FlowEstimator if cfg.method == "flow" else _FeatureEstimator
        self.estimator = est_cls(cfg, min(self.est_w, self.est_h))
        x, y, w, h = self.window
        self.shift = np.array([[1.0, 0, -x], [0, 1, -y], [0, 0, 1]])
        self.window_poly = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], np.float32)
        self.chain = np.eye(3)
        self.out: np.ndarray | None = None
        self.report = StabiliseReport()

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """The stabilised window of the next RGBA frame, or None once the video has ended there.

        RGBA, not RGB: OpenCV warps 4 channels with SIMD, 3 without (measured, 240x240 window:
        0.13 vs 0.27 ms per frame; the pixels are the same).
        """
        k = self.report.frames_in
        if frame.shape != (self.height, self.width, 4) or frame.dtype != np.uint8:
            raise StabilisationError(f"frame {k} is {frame.dtype} {frame.shape}, expected uint8 "
                                     f"{(self.height, self.width, 4)}")
        self.report.frames_in += 1
        grey = cv2.cvtColor(frame, cv2.COLOR_RGBA2GRAY)
        if (self.est_w, self.est_h) != (self.width, self.height):
            grey = cv2.resize(grey, (self.est_w, self.est_h), interpolation=cv2.INTER_AREA)
        try:
            found = self.estimator(grey, k, self.threshold)
        except _Fail as exc:
            raise StabilisationError(str(exc)) from None
        x, y, w, h = self.window
        if found is None:  # frame 0: the reference
            self.out = np.ascontiguousarray(frame[y:y + h, x:x + w])
            self.report.frames_out = 1
            return self.out
        step = self.from_est @ found[0] @ self.to_est  # frame k -> frame k-1, native pixels
        step /= step[2, 2]
        self._check_step(step, k)
        chain = self.chain @ step
        chain /= chain[2, 2]
        ended = self._check_chain(chain, k)
        if ended is not None:
            self.report.ended = ended
            if self.report.frames_out < self.cfg.min_frames:
                raise StabilisationError(f"{ended}, leaving {self.report.frames_out} stabilised frames "
                                         f"(< min_frames {self.cfg.min_frames})")
            return None
        self.chain = chain
        out = self.out.copy() if self.cfg.fill == "previous" else np.zeros_like(self.out)
        cv2.warpPerspective(frame, self.shift @ chain, (w, h), dst=out, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_TRANSPARENT)
        self.out = out
        self.report.inliers.append(found[1])
        self.report.frames_out += 1
        return out

    def _check_step(self, step: np.ndarray, k: int) -> None:
        cfg = self.cfg
        det, persp, moved = _geometry(step, self.width, self.height)
        if not cfg.min_det <= det <= cfg.max_det:
            raise StabilisationError(f"degenerate warp at frame {k}: area scale {det:.3g} to the previous "
                                     f"frame outside [{cfg.min_det}, {cfg.max_det}]")
        if persp > cfg.max_perspective:
            raise StabilisationError(f"degenerate warp at frame {k}: perspective {persp:.3g} > "
                                     f"max_perspective {cfg.max_perspective}")
        corners = ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))
        shift = max(math.hypot(mx - x, my - y) for (mx, my), (x, y) in zip(moved, corners))
        shift /= min(self.width, self.height)
        if shift > cfg.max_step:
            raise StabilisationError(f"degenerate warp at frame {k}: a corner moves {shift:.0%} of the "
                                     f"frame from the previous frame (> max_step {cfg.max_step:.0%})")

    def _check_chain(self, chain: np.ndarray, k: int) -> str | None:
        cfg = self.cfg
        det, persp, quad = _geometry(chain, self.width, self.height)
        if not cfg.min_det <= det <= cfg.max_det:
            return f"the warp leaves the frame at frame {k} (area scale {det:.3g} to frame 0)"
        if persp > cfg.max_perspective:
            return f"the warp leaves the frame at frame {k} (perspective {persp:.3g} > max_perspective)"
        area, _ = cv2.intersectConvexConvex(np.array(quad, np.float32), self.window_poly)
        coverage = area / (self.window[2] * self.window[3])
        if coverage < cfg.min_coverage:
            return f"the warp leaves the frame at frame {k} (covers {coverage:.0%} < min_coverage)"
        return None


# ----------------------------------------------------------------------------- public API

def stabilise(frames: np.ndarray | Iterable[np.ndarray], cfg: StabiliseConfig | None = None, *,
              return_report: bool = False):
    """Warp every frame into frame 0's coordinates: uint8 (T, H, W, 3) -> uint8 (T', H, W, 3).

    T' = T unless the warp leaves the frame (see StabiliseConfig.min_coverage): then the output
    stops before that frame. Raises StabilisationError saying why when the video cannot be
    stabilised. With `return_report`, returns (frames, StabiliseReport).
    """
    cfg = cfg or StabiliseConfig()
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"expected uint8 frames (T, H, W, 3) with T >= 1, got {arr.dtype} {arr.shape}")
    stab = _Stabiliser(cfg, arr.shape[1], arr.shape[2])
    out = []
    for frame in arr:
        result = stab.push(cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA))
        if result is None:
            break
        out.append(result[..., :3])
    stacked = np.stack(out)
    return (stacked, stab.report) if return_report else stacked


def crop_window(height: int, width: int, out_h: int, out_w: int, resize: str) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the source window `decode_video` scales to (out_h, out_w): the centred
    window with the target aspect ratio for "crop", the whole frame for "stretch"."""
    if resize == "stretch":
        return 0, 0, width, height
    if resize != "crop":
        raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
    if width * out_h > height * out_w:
        cw, ch = max(1, round(height * out_w / out_h)), height
    else:
        cw, ch = width, max(1, round(width * out_h / out_w))
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def decode_stabilised(path: str | os.PathLike, size, *, max_frames: int | None = None, stride: int = 1,
                      resize: str = "crop", cfg: StabiliseConfig | None = None, return_report: bool = False,
                      threads: int = DEFAULT_THREADS):
    """Decode a whole video (as `decode_video`), stabilise it at its own resolution, then resize
    (short side + centre crop, or stretch) with an area filter: uint8 (T, size, size, 3).

    Frames come out of the decoder one at a time and decoding stops where the warp leaves the
    frame; only the output window of the reference frame is warped. Raises VideoDecodeError for a
    file that cannot be decoded and StabilisationError (naming the file) for one that cannot be
    stabilised. With `return_report`, returns (frames, StabiliseReport).
    """
    cfg = cfg or StabiliseConfig()
    out_h, out_w = as_hw(size)
    if resize not in ("crop", "stretch"):
        raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
    frames = iter_native_frames(path, max_frames=max_frames, stride=stride, pix_fmt="rgba", threads=threads)
    stab: _Stabiliser | None = None
    out: list[np.ndarray] = []
    try:
        for frame in frames:
            if stab is None:
                h, w = frame.shape[:2]
                stab = _Stabiliser(cfg, h, w, crop_window(h, w, out_h, out_w, resize))
            window = stab.push(frame)
            if window is None:
                break
            out.append(cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_AREA)[..., :3])
    except StabilisationError as exc:
        raise StabilisationError(exc.reason, path) from None
    finally:
        frames.close()
    stacked = np.stack(out)
    return (stacked, stab.report) if return_report else stacked
