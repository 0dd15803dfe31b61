"""PyAV clip reader: one code path for every way this project reads frames from a video file.

How a clip is read (PyAV's documentation of `Container.seek` and its threading options):
- open with PyAV; if the clip does not start at frame 0, seek to the keyframe at or before the
  start time (`container.seek(pts, backward=True, any_frame=False, stream=stream)`), decode
  forward and drop the frames before the start;
- frames are placed by their timestamp (`frame.time`), never by `frame.index` (which is wrong at
  the tail under threaded decoding); `container.decode` sends the final flush packet, so the last
  frames buffered inside the decoder are not lost;
- decoding stops as soon as the clip is complete, and only the frames that end up in the clip
  are converted;
- conversion to RGB at the requested size happens in ONE FFmpeg filter graph per video
  (crop -> scale -> rgb24). Converting is the expensive part, not decoding: measured on the real
  UCF101 clips, per 32-frame clip at 64x64 (2 shared cores): decode alone 2.6-4.3 ms, this graph
  8.0 ms, swscale to the scaled size + numpy crop 7.1 ms (but its crop is off-centre by a
  fraction of a pixel), decode to full-size RGB + batched torch antialiased resize 31 ms,
  `to_ndarray(width=, height=)` per frame 19 ms (and it distorts the aspect ratio).
  Side by side on the 28 real split-1 test clips: this reader (32 frames, 64x64 crop)
  6.9-7.4 ms/clip; torchvision.datasets.UCF101 (torchcodec 0.17) 8.7-12.1 ms/clip for the
  native 320x240 clip alone, 29.8 ms/clip with a torch antialiased resize to 64x64.

Geometry: "crop" resizes the short side to the target and takes the centre (the crop window is
cut from the source first, then scaled once, so it is exactly centred); "stretch" resizes
directly. A video smaller than the target is upscaled (never an error): UCF-style pipelines
feed every video at one resolution.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import av
import numpy as np

from videodata.errors import VideoDecodeError

Size = int | Sequence[int]

# A decoded frame count this far below the count in the container header means the file was
# cut short (a few frames of slack: some AVIs count empty "drop" packets as frames).
_TRUNCATION_SLACK = 0.1
# Decoder threads per open video (thread_type "AUTO"; 0 = FFmpeg picks the count). One thread
# wins for short clips: per 32-frame UCF clip at 64x64, 6.1 ms with 1 thread vs 9-17 ms with
# FFmpeg's auto count on 2 shared cores (thread start-up dominates); DataLoader workers then
# give the parallelism.
DEFAULT_THREADS = 1


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int
    fps: float
    width: int
    height: int
    duration: float


# ----------------------------------------------------------------------------- opening / probing

def _open(path: str | os.PathLike, threads: int = DEFAULT_THREADS):
    """Open `path` and return (container, video stream), or raise VideoDecodeError saying why."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise VideoDecodeError(p, "file not found")
    if os.path.isdir(p):
        raise VideoDecodeError(p, "is a directory, not a video file")
    if os.path.getsize(p) == 0:
        raise VideoDecodeError(p, "empty file (0 bytes)")
    try:
        container = av.open(p, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise VideoDecodeError(p, f"not a readable video container ({_ffmpeg_reason(exc)})") from None
    if not container.streams.video:
        found = ", ".join(f"{s.type}/{s.codec_context.name if s.codec_context else '?'}"
                          for s in container.streams) or "none"
        container.close()
        raise VideoDecodeError(p, f"no video stream (streams found: {found})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise VideoDecodeError(p, "video stream has no decoder available in this FFmpeg build")
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return container, stream


def _ffmpeg_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _stream_fps(path: str, stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    raise VideoDecodeError(path, "the video stream declares no frame rate")


def _header_frames(stream) -> int:
    """Frame count from the container header (0 when the container does not store it)."""
    return int(stream.frames or 0)


def _count_packets(path: str, container, stream) -> int:
    """Count video packets without decoding (for containers with no frame count: mkv, webm, flv)."""
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                n += 1
    except av.FFmpegError as exc:
        raise VideoDecodeError(path, f"demuxing failed ({_ffmpeg_reason(exc)})") from None
    return n


def _num_frames(path: str, container, stream) -> int:
    return _header_frames(stream) or _count_packets(path, container, stream)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps, size and duration of the first video stream (no frame is decoded)."""
    p = os.fspath(path)
    container, stream = _open(p)
    try:
        fps = _stream_fps(p, stream)
        n = _num_frames(p, container, stream)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = n / fps
        cc = stream.codec_context
        return VideoInfo(p, n, fps, cc.width, cc.height, duration)
    finally:
        container.close()


# ----------------------------------------------------------------------------- conversion

def as_hw(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


class _Resizer:
    """Crop + scale + rgb24 in one FFmpeg filter graph; rebuilt only if the frame geometry changes."""

    def __init__(self, size: Size, resize: str):
        if resize not in ("crop", "stretch"):
            raise ValueError(f"resize must be 'crop' or 'stretch', got {resize!r}")
        self.out_h, self.out_w = as_hw(size)
        self.resize = resize
        self._key = None
        self._graph = None

    def _build(self, frame) -> None:
        w, h = frame.width, frame.height
        graph = av.filter.Graph()
        src = graph.add_buffer(width=w, height=h, format=frame.format.name,
                               time_base=frame.time_base or Fraction(1, 1000))
        chain = [src]
        if self.resize == "crop":
            # Largest window with the target aspect ratio, centred; scaled once afterwards.
            if w * self.out_h > h * self.out_w:
                cw, ch = max(1, round(h * self.out_w / self.out_h)), h
            else:
                cw, ch = w, max(1, round(w * self.out_h / self.out_w))
            if (cw, ch) != (w, h):
                chain.append(graph.add("crop", f"{cw}:{ch}:{(w - cw) // 2}:{(h - ch) // 2}:exact=1"))
        # "area" averages when shrinking (no aliasing); FFmpeg falls back to bilinear when growing.
        chain.append(graph.add("scale", f"{self.out_w}:{self.out_h}:flags=area"))
        chain.append(graph.add("format", "rgb24"))
        chain.append(graph.add("buffersink"))
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        self._graph = graph
        self._key = (w, h, frame.format.name)

    def __call__(self, frame) -> np.ndarray:
        if self._key != (frame.width, frame.height, frame.format.name):
            self._build(frame)
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()


# ----------------------------------------------------------------------------- frame selection

class _Reader:
    """One open video; yields (frame index, frame) from any start and raises clear errors.

    Frame indices come from timestamps only at the anchor (the first frame decoded after a
    seek); from there frames are counted in decoder output order, which is display order. Per-
    frame pts cannot be trusted: in UCF101's Xvid AVIs with packed B-frames they come out as
    1, 2, 4, 3, 5, 7, 6, ... (they are the packets' pts), so sorting or filtering by them would
    shuffle frames. The count agrees with `decode_video`, hence with the clip cache.
    """

    def __init__(self, path: str | os.PathLike, threads: int = DEFAULT_THREADS):
        self.path = os.fspath(path)
        self.container, self.stream = _open(self.path, threads)
        self.fps = _stream_fps(self.path, self.stream)
        self._num_frames: int | None = None
        self._first_pts: int | None = None
        self._seek_is_exact: bool | None = None
        self._fresh = True  # nothing demuxed yet: no seek needed to read from the start

    def close(self) -> None:
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            n = _header_frames(self.stream)
            if not n:
                if not self._fresh:
                    self._seek_to_start()
                n = _count_packets(self.path, self.container, self.stream)
                self._fresh = False
            self._num_frames = n
        return self._num_frames

    @property
    def first_pts(self) -> int:
        """pts of the first frame shown (the smallest pts among the first packets)."""
        if self._first_pts is None:
            self._peek_packets()
        return self._first_pts

    @property
    def seek_is_exact(self) -> bool:
        """False for AVI with B-frames: AVI stores no presentation times, so after a seek the
        frame timestamps FFmpeg reconstructs are off by a frame or two (measured on Xvid files).
        Those files are read from the start and counted instead (UCF clips are short)."""
        if self._seek_is_exact is None:
            self._peek_packets()
        return self._seek_is_exact

    def _peek_packets(self) -> None:
        if not self._fresh:
            self._seek_to_start()
        seen: list[tuple[int, int | None]] = []
        try:
            for packet in self.container.demux(self.stream):
                if packet.pts is not None:
                    seen.append((packet.pts, packet.dts))
                if len(seen) >= 16 or packet.pts is None and packet.size == 0:
                    break
        except av.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"demuxing failed ({_ffmpeg_reason(exc)})") from None
        self._fresh = False
        self._first_pts = min(p for p, _ in seen) if seen else int(self.stream.start_time or 0)
        reordered = any(dts is not None and pts != dts + (seen[0][0] - (seen[0][1] or 0))
                        for pts, dts in seen[1:]) if seen else False
        avi = "avi" in self.container.format.name.split(",")
        self._seek_is_exact = not (avi and reordered)

    def _seek_to_start(self) -> None:
        # The stream start, not first_pts: AVI seeks by packet order, and a B-frame file's first
        # pts (1) would land on the second keyframe.
        start = self.stream.start_time or 0
        self._seek(min(start, self._first_pts) if self._first_pts is not None else start)

    def _seek(self, pts: int) -> None:
        try:
            self.container.seek(max(int(pts), 0), backward=True, any_frame=False, stream=self.stream)
        except av.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"seek failed ({_ffmpeg_reason(exc)})") from None
        self._fresh = False

    def frames_from(self, start_index: int) -> Iterator[tuple[int, "av.VideoFrame"]]:
        """Yield (index, frame) for frames start_index, start_index + 1, ... to the end."""
        tb = self.stream.time_base
        anchored_at_start = start_index == 0 or not self.seek_is_exact
        if anchored_at_start:
            if not self._fresh:
                self._seek_to_start()
        else:
            first = self.first_pts
            self._seek(first + int(math.floor(start_index / self.fps / tb)))
        self._fresh = False
        index = None
        try:
            for frame in self.container.decode(self.stream):
                if index is None:
                    if anchored_at_start or frame.pts is None:
                        index = 0
                        if frame.pts is None and not anchored_at_start:
                            # No timestamp to anchor on: restart from the file's first frame.
                            self._seek_to_start()
                            yield from self._count_from_start(start_index)
                            return
                    else:
                        index = max(0, round(float((frame.pts - self.first_pts) * tb) * self.fps))
                        if index > start_index:
                            # The seek overshot the start: decode from the beginning instead.
                            self._seek_to_start()
                            yield from self._count_from_start(start_index)
                            return
                else:
                    index += 1
                if index >= start_index:
                    yield index, frame
        except av.FFmpegError as exc:
            raise VideoDecodeError(self.path, f"decoding failed after frame {index or 0} "
                                              f"({_ffmpeg_reason(exc)})") from None

    def _count_from_start(self, start_index: int) -> Iterator[tuple[int, "av.VideoFrame"]]:
        for index, frame in enumerate(self.container.decode(self.stream)):
            if index >= start_index:
                yield index, frame

    def check_not_truncated(self, decoded_until: int) -> None:
        """Raise if decoding ended (at frame `decoded_until`) well before the header's frame count."""
        expected = _header_frames(self.stream)
        if expected and decoded_until < expected - max(2, _TRUNCATION_SLACK * expected):
            raise VideoDecodeError(self.path, f"file is truncated or corrupt: the header announces "
                                              f"{expected} frames but decoding ended at frame {decoded_until}")


def _resolve_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _span_frames(num_frames: int, stride: int, target_fps: float | None, fps: float) -> int:
    """How many source frames one clip covers."""
    if target_fps is None:
        return (num_frames - 1) * stride + 1
    return int(math.floor((num_frames - 1) * stride / target_fps * fps + 1e-6)) + 1


def _check_args(num_frames: int, stride: int, target_fps: float | None) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if target_fps is not None and target_fps <= 0:
        raise ValueError(f"target_fps must be > 0, got {target_fps}")


def _wanted_indices(start_index: int, num_frames: int, stride: int, target_fps: float | None,
                    fps: float) -> list[int]:
    """Source frame index for each clip frame. With target_fps, clip frame k shows the source
    frame on screen at time k * stride / target_fps after the start (resampling by time)."""
    if target_fps is None:
        return [start_index + k * stride for k in range(num_frames)]
    return [start_index + int(math.floor(k * stride / target_fps * fps + 1e-6))
            for k in range(num_frames)]


def _read_from(reader: _Reader, start_index: int, num_frames: int, resizer: _Resizer,
               stride: int, target_fps: float | None) -> np.ndarray:
    """Decode one clip starting at `start_index`; pad with the last frame when the video ends."""
    wanted = _wanted_indices(start_index, num_frames, stride, target_fps, reader.fps)
    out: list[np.ndarray] = []
    end = start_index  # one past the last frame decoded
    for index, frame in reader.frames_from(start_index):
        end = index + 1
        if index == wanted[len(out)]:
            rgb = resizer(frame)
            while len(out) < num_frames and wanted[len(out)] == index:  # upsampled: repeat
                out.append(rgb)
            if len(out) == num_frames:
                break
    if len(out) < num_frames:
        reader.check_not_truncated(end)
        if not out:
            raise VideoDecodeError(reader.path, f"no decodable frame at or after frame {start_index} "
                                                f"(the video has {end} frames)")
        out.extend([out[-1]] * (num_frames - len(out)))  # short video: repeat the last frame
    return np.stack(out)


# ----------------------------------------------------------------------------- public API

def read_clip(path: str | os.PathLike, num_frames: int, size: Size, *, start="first",
              stride: int = 1, target_fps: float | None = None, resize: str = "crop",
              rng=None, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """Read one clip as uint8 (T, H, W, 3).

    start: "first" (frame 0: the paper's protocol), "random" (uniform over the starts that fit,
    drawn from `rng`: a numpy Generator, a seed or None) or a frame index (at the stream fps).
    stride: keep every stride-th frame. target_fps: resample by time to this rate first (stride
    then steps over the resampled frames). A video shorter than the clip repeats its last frame.
    """
    _check_args(num_frames, stride, target_fps)
    resizer = _Resizer(size, resize)
    with _Reader(path, threads) as reader:
        if start == "first":
            start_index = 0
        elif start == "random":
            span = _span_frames(num_frames, stride, target_fps, reader.fps)
            start_index = int(_resolve_rng(rng).integers(0, max(0, reader.num_frames - span) + 1))
        elif isinstance(start, (int, np.integer)) and not isinstance(start, bool):
            if start < 0:
                raise ValueError(f"start must be >= 0, got {start}")
            start_index = int(start)
        else:
            raise ValueError(f"start must be 'first', 'random' or a frame index, got {start!r}")
        return _read_from(reader, start_index, num_frames, resizer, stride, target_fps)


def uniform_starts(total_frames: int, num_clips: int, span: int) -> list[int]:
    """`num_clips` start indices evenly spaced so the clips cover the video (first at 0, last at the end)."""
    last = max(0, total_frames - span)
    if num_clips == 1:
        return [last // 2]
    return [int(round(i * last / (num_clips - 1))) for i in range(num_clips)]


def read_uniform_clips(path: str | os.PathLike, num_clips: int, num_frames: int, size: Size, *,
                       stride: int = 1, target_fps: float | None = None, resize: str = "crop",
                       threads: int = DEFAULT_THREADS) -> np.ndarray:
    """`num_clips` clips evenly spaced over the video, as uint8 (N, T, H, W, 3); one open file."""
    _check_args(num_frames, stride, target_fps)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    resizer = _Resizer(size, resize)
    with _Reader(path, threads) as reader:
        span = _span_frames(num_frames, stride, target_fps, reader.fps)
        starts = uniform_starts(reader.num_frames, num_clips, span)
        return np.stack([_read_from(reader, s, num_frames, resizer, stride, target_fps)
                         for s in starts])


def decode_video(path: str | os.PathLike, size: Size, *, max_frames: int | None = None,
                 stride: int = 1, resize: str = "crop", threads: int = DEFAULT_THREADS) -> np.ndarray:
    """Decode a whole video once (every stride-th frame, at most `max_frames`) as uint8 (T, H, W, 3).

    No padding: T is what the video holds. Raises VideoDecodeError for a truncated file (decoding
    ends well before the header's frame count) or one with no decodable frame.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    resizer = _Resizer(size, resize)
    out: list[np.ndarray] = []
    with _Reader(path, threads) as reader:
        end = 0
        for index, frame in reader.frames_from(0):
            end = index + 1
            if index % stride == 0:
                out.append(resizer(frame))
                if max_frames is not None and len(out) == max_frames:
                    break
        else:
            reader.check_not_truncated(end)
        if not out:
            raise VideoDecodeError(reader.path, "no decodable video frame")
    return np.stack(out)


class _NativeRGB:
    """rgb24 (or rgba) at the frame's own size through an FFmpeg filter graph (the same
    conversion as `_Resizer`'s last step). Measured on the real UCF101 clips (320x240, 1 thread):
    decode + this 0.21 ms/frame; PyAV's `frame.to_ndarray(format="rgb24")` 1.09 ms/frame for
    identical pixels."""

    def __init__(self, pix_fmt: str = "rgb24"):
        if pix_fmt not in ("rgb24", "rgba"):
            raise ValueError(f"pix_fmt must be 'rgb24' or 'rgba', got {pix_fmt!r}")
        self.pix_fmt = pix_fmt
        self._key = None
        self._graph = None

    def __call__(self, frame) -> np.ndarray:
        key = (frame.width, frame.height, frame.format.name)
        if self._key != key:
            graph = av.filter.Graph()
            src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                   time_base=frame.time_base or Fraction(1, 1000))
            fmt, sink = graph.add("format", self.pix_fmt), graph.add("buffersink")
            src.link_to(fmt)
            fmt.link_to(sink)
            graph.configure()
            self._graph, self._key = graph, key
        self._graph.push(frame)
        return self._graph.pull().to_ndarray()


def iter_native_frames(path: str | os.PathLike, *, max_frames: int | None = None, stride: int = 1,
                       pix_fmt: str = "rgb24", threads: int = DEFAULT_THREADS) -> Iterator[np.ndarray]:
    """The frames `decode_video` keeps (every stride-th, at most `max_frames`), one at a time, as
    uint8 (H, W, 3) RGB at the video's own size (for work that must happen before the resize,
    e.g. stabilisation); pix_fmt="rgba" gives (H, W, 4) with an opaque alpha channel. Same errors
    as `decode_video`; closing the generator early closes the file.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    convert = _NativeRGB(pix_fmt)
    kept = 0
    with _Reader(path, threads) as reader:
        end = 0
        for index, frame in reader.frames_from(0):
            end = index + 1
            if index % stride == 0:
                yield convert(frame)
                kept += 1
                if max_frames is not None and kept == max_frames:
                    return
        reader.check_not_truncated(end)
        if not kept:
            raise VideoDecodeError(reader.path, "no decodable video frame")
