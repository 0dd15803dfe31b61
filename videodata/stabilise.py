"""Stabilisation: estimate the global camera motion of each clip of a video and undo it (the
original VGAN's data, cvondrick/videogan `extra/stabilize_videos_many.py`).

What the original does, and what this module does the same way:
- after skipping the first `skip` frames (the original: FRAMES_DELAY = 2), the video is cut into
  up to `max_clips` clips (the original: `for _ in range(100)`), each stabilised against its own
  first frame: a new reference per clip;
- each frame's motion to the previous frame is a homography from matched points, estimated
  robustly (`cv2.findHomography(..., cv2.RANSAC, 5.0)`, at least `min_matches` = 10 matches),
  chained to the clip's reference;
- pixels the warp leaves uncovered keep the previous output frame's pixels (`fill="previous"`;
  the original blended them through an eroded coverage mask; here OpenCV's BORDER_TRANSPARENT
  warp blends the one-pixel seam);
- a clip ends after `clip_frames` frames (the original: 34, the reference and MAX_FRAMES = 33
  more), at the end of the video, or where the chained warp leaves the output window (the
  original: the eroded coverage mask is empty; that frame is thrown away);
- a frame pair that cannot be matched fails its clip only ("aborting movie clip"): the clip is
  dropped (`on_failure="drop"`, the pretraining pool) and the next clip starts at the next frame;
  so is a clip shorter than `min_frames` (the original: 16).

What differs, and why (the paper preset `experiment=vgan_paper` sets the original's values of
every knob below; the defaults are the fast ones):
- labeled videos (`on_failure="plain"`, the transfer caches) must keep every frame position to
  stay comparable: a failed clip's frames are kept as decoded (counted), a clip that ends where
  the warp leaves the frame hands that frame to the next clip as its reference, and every clip
  is kept whatever its length;
- default `method="flow"`: good features tracked with pyramidal Lucas-Kanade, the tracks that
  were homography inliers carried to the next frame (re-detected when fewer than half remain).
  `"sift"` (the original's detector) and `"orb"` match descriptors with a 0.7 Lowe ratio test
  (the original's). The original's matcher, `FlannBasedMatcher` with `FLANN_INDEX_KDTREE = 0`,
  is FLANN's linear index (0 is `FLANN_INDEX_LINEAR`; kd-trees are 1): an exact search, so
  brute force (`matcher="bf"`) finds the same neighbours; `"flann_kdtree"` is the approximate
  kd-tree search the name suggests;
- motion is estimated on a greyscale copy whose short side is `estimate_size` (default 120 px,
  half of UCF101's 240; 0: the native frame, as the original), the RANSAC threshold scaled with
  it (5 px at a 240-px short side); the warp is applied at the decoded resolution, before any
  resize to the training size (the original resized after warping too);
- extra sanity limits the original lacks, on by default (`check_steps`): at least `min_inliers`
  RANSAC inliers and a `min_inlier_fraction` of the candidate points (a near-random set of
  tracks can fit a homography with 10 inliers: measured >= 43% inliers on each of the 5,167
  frame pairs of the 31 real UCF101 clips, ~15% between two unrelated smooth-noise frames); a
  frame-to-frame warp whose affine determinant, perspective or corner displacement is extreme is
  "degenerate" (the clip fails). Always on: a chained warp whose determinant or perspective
  leaves [min_det, max_det] / max_perspective ends the clip like leaving the window (the
  coverage test needs w > 0 over the frame); `min_coverage` > 0 ends a clip before the
  coverage reaches 0 (the original: 0, i.e. only an empty window ends it; the 2-pixel erosion of
  its mask is not modelled).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from videodata.decode import DEFAULT_THREADS, as_hw, iter_native_frames
from videodata.errors import VideoDataError

# Bump when the algorithm changes its output: it is part of `StabiliseConfig.as_dict()`, hence of
# the clip cache's fingerprint. 2: per-clip references (1: the whole video chained to frame 0).
STABILISE_VERSION = 2
METHODS = ("flow", "orb", "sift")
MATCHERS = ("bf", "flann_kdtree")
FILLS = ("previous", "black")
ON_FAILURE = ("drop", "plain")
STATUSES = ("stabilised", "plain", "dropped")
# The original's RANSAC threshold (5.0 px) was applied at UCF101's native 320x240.
REFERENCE_SHORT_SIDE = 240
LOWE_RATIO = 0.7  # the original's ratio test (orb, sift)
_FLANN_KDTREE = 1  # FLANN's enum value for randomised kd-trees
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
    """A video none of whose clips could be stabilised (with on_failure="drop"), or a frame the
    stabiliser cannot take. The message says why (the first clip's reason)."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None):
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        super().__init__(reason if self.path is None else f"cannot stabilise video {self.path!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.reason, self.path))


@dataclass(frozen=True)
class StabiliseConfig:
    """How to stabilise. Defaults: fast enough to cache whole UCF101 videos (see module doc); the
    original's values in brackets.

    method: "flow" (Lucas-Kanade tracks), "sift" (the original's detector) or "orb".
    matcher: descriptor matching for sift/orb: "bf" (exact; [the original's linear FLANN index])
      or "flann_kdtree" (approximate).
    estimate_size: short side, in pixels, of the greyscale copy the motion is estimated on
      (never upscaled); 0: the native frame [0]. 120 is exactly half of UCF101's 240.
    max_features: corners tracked ("flow") or keypoints detected ("orb", "sift") per frame;
      0 (sift only): every keypoint SIFT finds [0].
    min_matches: candidate point pairs (tracks or ratio-test matches) a frame pair needs [10].
    min_inliers, min_inlier_fraction: RANSAC inliers a frame pair needs, as a count and as a share
      of its candidates [4 (RANSAC's minimum) and 0: the original checks neither].
    ransac_threshold: RANSAC reprojection threshold in pixels at a 240-pixel short side [5.0 on
      320x240 video]; scaled to the estimation size.
    check_steps: fail a clip on a degenerate frame-to-frame warp: area scale outside
      [min_det, max_det], perspective above max_perspective, a corner moving more than `max_step`
      of the short side [False].
    min_det, max_det, max_perspective: also end a clip when the chained warp leaves them.
    min_coverage: the chained warp of a frame must cover at least this fraction of the output
      window, else the clip ends before that frame; 0: only an empty window ends it [0].
    clip_frames: frames per clip, its reference included [34].
    min_frames: a clip shorter than this is dropped [16] (on_failure="plain" keeps it).
    max_clips: clips tried per video [100]; with on_failure="plain", every frame is used instead.
    skip: frames dropped before the first clip [2].
    fill: "previous" (uncovered pixels keep the previous output frame [as the original]) or "black".
    on_failure: "drop" a clip that cannot be stabilised (the pretraining pool) or keep it "plain",
      as decoded (labeled sets, which must stay whole to be comparable); counted either way.
    """

    method: str = "flow"
    matcher: str = "bf"
    estimate_size: int = 120
    max_features: int = 100
    min_matches: int = 10
    min_inliers: int = 10
    min_inlier_fraction: float = 0.25
    ransac_threshold: float = 5.0
    check_steps: bool = True
    max_step: float = 0.25
    min_det: float = 0.5
    max_det: float = 2.0
    max_perspective: float = 0.5
    min_coverage: float = 0.5
    clip_frames: int = 34
    min_frames: int = 16
    max_clips: int = 100
    skip: int = 0
    fill: str = "previous"
    on_failure: str = "drop"

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"StabiliseConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        def integer(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        need(self.method in METHODS, "method", f"one of {METHODS}")
        need(self.matcher in MATCHERS, "matcher", f"one of {MATCHERS}")
        need(self.fill in FILLS, "fill", f"one of {FILLS}")
        need(self.on_failure in ON_FAILURE, "on_failure", f"one of {ON_FAILURE}")
        need(isinstance(self.check_steps, bool), "check_steps", "true or false")
        need(integer(self.estimate_size) and (self.estimate_size == 0 or self.estimate_size >= 16),
             "estimate_size", "0 (native) or an integer >= 16")
        need(integer(self.max_features) and (self.max_features >= 8 or (self.max_features == 0 and self.method == "sift")),
             "max_features", "an integer >= 8 (or 0 with method sift: every keypoint)")
        for name, low in (("min_matches", 4), ("min_inliers", 4), ("clip_frames", 2), ("min_frames", 1),
                          ("max_clips", 1), ("skip", 0)):
            need(integer(getattr(self, name)) and getattr(self, name) >= low, name, f"an integer >= {low}")
        need(self.max_features == 0 or self.max_features >= self.min_matches, "max_features",
             f">= min_matches ({self.min_matches})")
        need(self.min_frames <= self.clip_frames, "min_frames", f"<= clip_frames ({self.clip_frames})")
        need(_finite(self.min_inlier_fraction) and 0 <= self.min_inlier_fraction <= 1, "min_inlier_fraction",
             "in [0, 1]")
        need(_finite(self.ransac_threshold) and self.ransac_threshold > 0, "ransac_threshold", "> 0")
        need(_finite(self.max_step) and 0 < self.max_step <= 1, "max_step", "in (0, 1]")
        need(_finite(self.min_det) and 0 < self.min_det < 1, "min_det", "in (0, 1)")
        need(_finite(self.max_det) and self.max_det > 1, "max_det", "> 1")
        need(_finite(self.max_perspective) and 0 < self.max_perspective < 1, "max_perspective", "in (0, 1)")
        need(_finite(self.min_coverage) and 0 <= self.min_coverage <= 1, "min_coverage", "in [0, 1]")

    def as_dict(self) -> dict:
        """Everything that changes the output, for hashing (includes the algorithm's version)."""
        return {**asdict(self), "version": STABILISE_VERSION}

    def frames_needed(self) -> int:
        """Decoded frames that can reach a clip: the skip and `max_clips` whole clips."""
        return self.skip + self.max_clips * self.clip_frames


def _finite(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ClipReport:
    """One clip: its reference's index among the decoded frames, the frames it gives (0 when
    dropped), "stabilised" | "plain" | "dropped", why (a failure, a short clip, or why a kept
    clip ended before `clip_frames`; None otherwise), and the RANSAC inliers of each frame pair."""

    start: int
    frames: int = 0
    status: str = "stabilised"
    reason: str | None = None
    inliers: list[int] = field(default_factory=list)


@dataclass
class StabiliseReport:
    """What happened to one video: frames decoded (the skip included) and every clip tried."""

    frames_in: int = 0
    clips: list[ClipReport] = field(default_factory=list)

    @property
    def frames_out(self) -> int:
        return sum(c.frames for c in self.clips)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.clips)

    def kept(self) -> list[tuple[int, int, str]]:
        """(offset in the output, frames, status) of every clip that gave frames, in order."""
        out, offset = [], 0
        for clip in self.clips:
            if clip.frames:
                out.append((offset, clip.frames, clip.status))
                offset += clip.frames
        return out

    def first_reason(self) -> str:
        return next((c.reason for c in self.clips if c.status != "stabilised" and c.reason), "no clip")


# ----------------------------------------------------------------------------- motion estimation

class _Fail(Exception):
    """Internal: one frame pair's estimation failed: the clip it belongs to fails."""


class _FlowEstimator:
    """Good features in the previous frame, tracked into the current one with pyramidal LK."""

    def __init__(self, cfg: StabiliseConfig, short_side: int):
        self.cfg = cfg
        self.min_distance = max(3.0, short_side / 24)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next frame is a new clip's reference."""
        self.prev: np.ndarray | None = None
        self.points: np.ndarray | None = None  # inlier tracks in `prev`, carried forward

    def __call__(self, grey: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, int] | None:
        prev, self.prev = self.prev, grey
        if prev is None:
            return None
        cfg = self.cfg
        pts = self.points
        if pts is None or len(pts) < max(cfg.max_features // 2, cfg.min_matches):
            pts = cv2.goodFeaturesToTrack(prev, cfg.max_features, _GFTT_QUALITY, self.min_distance)
            found = 0 if pts is None else len(pts)
            if found < cfg.min_matches:
                self.points = None
                raise _Fail(f"too few keypoints at frame {k - 1} ({found} < {cfg.min_matches})")
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
        if cfg.method == "sift":  # nfeatures=0: every keypoint (the original's cv2.SIFT())
            self.detector = cv2.SIFT_create(nfeatures=cfg.max_features)
            norm = cv2.NORM_L2
        else:
            self.detector = cv2.ORB_create(nfeatures=cfg.max_features, edgeThreshold=15, patchSize=15)
            norm = cv2.NORM_HAMMING
        if cfg.matcher == "flann_kdtree":  # approximate: 5 randomised kd-trees, 50 checks
            self.matcher = cv2.FlannBasedMatcher({"algorithm": _FLANN_KDTREE, "trees": 5}, {"checks": 50})
        else:
            self.matcher = cv2.BFMatcher(norm)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame: the next frame is a new clip's reference."""
        self.prev: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, grey: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, int] | None:
        keypoints, desc = self.detector.detectAndCompute(grey, None)
        found = 0 if desc is None else len(keypoints)
        if self.cfg.matcher == "flann_kdtree" and desc is not None:
            desc = desc.astype(np.float32)
        cur = (np.float32([kp.pt for kp in keypoints]), desc) if found >= self.cfg.min_matches else None
        prev, self.prev = self.prev, cur
        if cur is None:
            raise _Fail(f"too few keypoints at frame {k} ({found} < {self.cfg.min_matches})")
        if prev is None:
            return None  # the clip's reference (a failed previous frame has already raised)
        pairs = self.matcher.knnMatch(cur[1], prev[1], k=2)
        good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < LOWE_RATIO * m[1].distance]
        src = cur[0][[m.queryIdx for m in good]].reshape(-1, 1, 2)
        dst = prev[0][[m.trainIdx for m in good]].reshape(-1, 1, 2)
        h, inl = _robust_homography(src, dst, threshold, self.cfg, k, "matches")
        return h, int(inl.sum())


def _robust_homography(src: np.ndarray, dst: np.ndarray, threshold: float, cfg: StabiliseConfig,
                       k: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC homography mapping frame k's points `src` onto frame k-1's `dst`, and the inlier mask."""
    if len(src) < cfg.min_matches:
        raise _Fail(f"too few {what} at frame {k} ({len(src)} < {cfg.min_matches})")
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, threshold)
    inliers = 0 if mask is None else int(mask.sum())
    need = max(cfg.min_inliers, math.ceil(cfg.min_inlier_fraction * len(src)))
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
    """Warps the frames of one clip at a time into a window of the clip's reference frame (the
    whole frame, or the crop `decode_stabilised` keeps): `begin` takes a reference, `push` the
    clip's next frame."""

    def __init__(self, cfg: StabiliseConfig, height: int, width: int,
                 window: tuple[int, int, int, int] | None = None):
        self.cfg, self.height, self.width = cfg, height, width
        self.window = window or (0, 0, width, height)  # x, y, w, h in reference pixels
        short = min(height, width)
        scale = 1.0 if cfg.estimate_size == 0 else min(1.0, cfg.estimate_size / short)
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

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The output window of a frame as decoded (unstabilised)."""
        x, y, w, h = self.window
        return frame[y:y + h, x:x + w]

    def _grey(self, frame: np.ndarray, k: int) -> np.ndarray:
        if frame.shape != (self.height, self.width, 4) or frame.dtype != np.uint8:
            raise StabilisationError(f"frame {k} is {frame.dtype} {frame.shape}, expected uint8 "
                                     f"{(self.height, self.width, 4)}")
        grey = cv2.cvtColor(frame, cv2.COLOR_RGBA2GRAY)
        if (self.est_w, self.est_h) != (self.width, self.height):
            grey = cv2.resize(grey, (self.est_w, self.est_h), interpolation=cv2.INTER_AREA)
        return grey

    def begin(self, frame: np.ndarray, k: int) -> None:
        """Frame k is a new clip's reference. Raises _Fail when it has too few keypoints (sift, orb)."""
        self.estimator.reset()
        self.chain = np.eye(3)
        self.out = None
        self.estimator(self._grey(frame, k), k, self.threshold)
        self.out = np.ascontiguousarray(self.crop(frame))

    def push(self, frame: np.ndarray, k: int) -> tuple[np.ndarray | None, int, str | None]:
        """(the stabilised window of RGBA frame k, the pair's RANSAC inliers, None), or
        (None, inliers, why) once the chained warp leaves the window (the clip ends before frame
        k). Raises _Fail when the frame pair cannot be matched or its warp is degenerate.

        RGBA, not RGB: OpenCV warps 4 channels with SIMD, 3 without (measured, 240x240 window:
        0.13 vs 0.27 ms per frame; the pixels are the same).
        """
        h_est, inliers = self.estimator(self._grey(frame, k), k, self.threshold)
        step = self.from_est @ h_est @ self.to_est  # frame k -> frame k-1, native pixels
        step /= step[2, 2]
        if self.cfg.check_steps:
            self._check_step(step, k)
        chain = self.chain @ step
        chain /= chain[2, 2]
        ended = self._check_chain(chain, k)
        if ended is not None:
            return None, inliers, ended
        self.chain = chain
        x, y, w, h = self.window
        out = self.out.copy() if self.cfg.fill == "previous" else np.zeros_like(self.out)
        cv2.warpPerspective(frame, self.shift @ chain, (w, h), dst=out, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_TRANSPARENT)
        self.out = out
        return out, inliers, None

    def _check_step(self, step: np.ndarray, k: int) -> None:
        cfg = self.cfg
        det, persp, moved = _geometry(step, self.width, self.height)
        if not cfg.min_det <= det <= cfg.max_det:
            raise _Fail(f"degenerate warp at frame {k}: area scale {det:.3g} to the previous "
                        f"frame outside [{cfg.min_det}, {cfg.max_det}]")
        if persp > cfg.max_perspective:
            raise _Fail(f"degenerate warp at frame {k}: perspective {persp:.3g} > "
                        f"max_perspective {cfg.max_perspective}")
        corners = ((0, 0), (self.width, 0), (self.width, self.height), (0, self.height))
        shift = max(math.hypot(mx - x, my - y) for (mx, my), (x, y) in zip(moved, corners))
        shift /= min(self.width, self.height)
        if shift > cfg.max_step:
            raise _Fail(f"degenerate warp at frame {k}: a corner moves {shift:.0%} of the "
                        f"frame from the previous frame (> max_step {cfg.max_step:.0%})")

    def _check_chain(self, chain: np.ndarray, k: int) -> str | None:
        cfg = self.cfg
        det, persp, quad = _geometry(chain, self.width, self.height)
        if not cfg.min_det <= det <= cfg.max_det:
            return f"the warp leaves the frame at frame {k} (area scale {det:.3g} to the clip's reference)"
        if persp > cfg.max_perspective:
            return f"the warp leaves the frame at frame {k} (perspective {persp:.3g} > max_perspective)"
        area, _ = cv2.intersectConvexConvex(np.array(quad, np.float32), self.window_poly)
        coverage = area / (self.window[2] * self.window[3])
        if coverage <= 0 or coverage < cfg.min_coverage:
            return f"the warp leaves the frame at frame {k} (covers {coverage:.0%} of the window)"
        return None


def _stabilised_clips(frames: Iterator[np.ndarray], cfg: StabiliseConfig,
                      make: Callable[[np.ndarray], _Stabiliser], finish: Callable[[np.ndarray], np.ndarray],
                      report: StabiliseReport) -> Iterator[np.ndarray]:
    """Cut a stream of RGBA native frames into clips and stabilise each (module doc); yields the
    output frames of every kept clip (`finish` turns a window into an output frame) and fills
    `report` as it goes. The stabiliser is made from the first frame (`make`)."""
    plain = cfg.on_failure == "plain"

    def read() -> np.ndarray | None:
        frame = next(frames, None)
        if frame is not None:
            report.frames_in += 1
        return frame

    for _ in range(cfg.skip):
        if read() is None:
            return
    stab: _Stabiliser | None = None
    carry = None  # plain: the frame that left the previous clip's window starts the next clip
    while plain or len(report.clips) < cfg.max_clips:
        ref = carry if carry is not None else read()
        carry = None
        if ref is None:
            return
        k = report.frames_in - 1
        stab = stab or make(ref)
        clip = ClipReport(start=k)
        report.clips.append(clip)
        out: list[np.ndarray] = []
        raw: list[np.ndarray] = []  # plain: the clip as decoded, should it fail
        try:
            first = finish(stab.crop(ref))
            if plain:
                raw.append(first)
            stab.begin(ref, k)
            out.append(first)
            while len(out) < cfg.clip_frames:
                frame = read()
                if frame is None:
                    break
                k = report.frames_in - 1
                if plain:
                    raw.append(finish(stab.crop(frame)))
                warped, inliers, ended = stab.push(frame, k)
                if ended is not None:
                    clip.reason = ended
                    if plain:
                        carry, raw = frame, raw[:-1]
                    break
                clip.inliers.append(inliers)
                out.append(finish(warped))
        except _Fail as exc:
            clip.reason = str(exc)
            clip.status = "plain" if plain else "dropped"
            if plain:
                clip.frames = len(raw)
                yield from raw
            continue
        if len(out) < cfg.min_frames and not plain:
            clip.status = "dropped"
            clip.reason = (f"{clip.reason}, " if clip.reason else "the video ends, ") + \
                f"leaving {len(out)} frames (< min_frames {cfg.min_frames})"
            continue
        clip.frames = len(out)
        yield from out


def _finish_report(report: StabiliseReport, cfg: StabiliseConfig, path=None) -> None:
    if cfg.on_failure == "drop" and report.frames_out == 0:
        raise StabilisationError(f"no clip could be stabilised ({len(report.clips)} tried; first: "
                                 f"{report.first_reason()})", path)


# ----------------------------------------------------------------------------- public API

def stabilise(frames: np.ndarray | Iterable[np.ndarray], cfg: StabiliseConfig | None = None, *,
              return_report: bool = False):
    """Stabilise every clip of a video (module doc): uint8 (T, H, W, 3) -> uint8 (T', H, W, 3),
    the kept clips one after another (`StabiliseReport.kept()` says where each starts).

    Raises StabilisationError when no clip could be stabilised (on_failure="drop"). With
    `return_report`, returns (frames, StabiliseReport).
    """
    cfg = cfg or StabiliseConfig()
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"expected uint8 frames (T, H, W, 3) with T >= 1, got {arr.dtype} {arr.shape}")
    report = StabiliseReport()
    rgba = (cv2.cvtColor(frame, cv2.COLOR_RGB2RGBA) for frame in arr)
    out = list(_stabilised_clips(rgba, cfg, lambda f: _Stabiliser(cfg, *f.shape[:2]),
                                 lambda window: window[..., :3].copy(), report))
    _finish_report(report, cfg)
    stacked = np.stack(out) if out else np.zeros((0, *arr.shape[1:]), np.uint8)
    return (stacked, report) if return_report else stacked


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
    """Decode a video (as `decode_video`), stabilise each clip at the video's own resolution, then
    resize (short side + centre crop, or stretch) with an area filter: uint8 (T', size, size, 3),
    the kept clips one after another.

    Frames come out of the decoder one at a time and decoding stops after `max_clips` clips (drop
    mode); only the output window of each reference frame is warped. Raises VideoDecodeError for a
    file that cannot be decoded and StabilisationError (naming the file) when no clip of it could
    be stabilised (on_failure="drop"). With `return_report`, returns (frames, StabiliseReport).
    """
    cfg = cfg or StabiliseConfig()
    out_h, out_w = as_hw(size)
    if resize not in ("crop", "stretch"):
        raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
    frames = iter_native_frames(path, max_frames=max_frames, stride=stride, pix_fmt="rgba", threads=threads)

    def make(frame: np.ndarray) -> _Stabiliser:
        h, w = frame.shape[:2]
        return _Stabiliser(cfg, h, w, crop_window(h, w, out_h, out_w, resize))

    def finish(window: np.ndarray) -> np.ndarray:
        return cv2.resize(window, (out_w, out_h), interpolation=cv2.INTER_AREA)[..., :3]

    report = StabiliseReport()
    try:
        out = list(_stabilised_clips(frames, cfg, make, finish, report))
        _finish_report(report, cfg, path)
    except StabilisationError as exc:
        raise StabilisationError(exc.reason, path) from None
    finally:
        frames.close()
    stacked = np.stack(out) if out else np.zeros((0, out_h, out_w, 3), np.uint8)
    return (stacked, report) if return_report else stacked
