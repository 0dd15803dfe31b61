"""Data loading, side by side on the same videos: torchvision UCF101 (torchcodec) vs this suite's
direct PyAV decode vs the decode-once clip cache; plus the cache build rate.

    python benchmarks/bench_data.py [--videos ../shared/data] [--rounds 3]

Uses the real UCF101 clips of split 1's test side under ../shared/data when present, else a small
synthetic set in a temporary folder. Every method returns the same clip: the first 32 frames at
64x64 (short-side resize + centre crop), uint8, one clip per video, one thread, like one
DataLoader worker. torchvision's dataset returns native-size frames, so its time includes a
torch antialiased resize to 64x64 (shown separately as well).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from videodata.cache import CachedClipDataset, ClipCache
from videodata.decode import read_clip
from videodata.synthetic import SyntheticConfig, generate
from videodata.ucf101 import load_split

FRAMES, SIZE = 32, 64


def pick_videos(shared: Path, scratch: Path):
    """(description, video_root, lists_dir, records) for split 1's test side."""
    video_root, lists = shared / "UCF-101", shared / "ucfTrainTestlist"
    if video_root.is_dir() and (lists / "classInd.txt").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # only a few of the 3,783 listed clips are present
            records = load_split(video_root, lists, 1, "test", missing="skip")
        return f"real UCF101 clips ({video_root}, split 1 test side)", video_root, lists, records
    cfg = SyntheticConfig(root=str(scratch / "synthetic"), clips_per_group=1, unlabeled_videos=0,
                          frames=48, width=320, height=240)
    layout = generate(cfg)
    records = load_split(layout.video_root, layout.lists_dir, 1, "test")
    return (f"synthetic set ({len(records)} videos, 320x240, {cfg.frames} frames; no real UCF101 "
            f"under {shared})", layout.video_root, layout.lists_dir, records)


def crop_resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, H, W, C) -> (T, size, size, C): short side to `size`, centre crop (as read_clip)."""
    t, h, w, _ = video.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = video[:, top:top + side, left:left + side].permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def per_clip_ms(read, n: int, rounds: int, repeat: int = 1) -> float:
    """Median over rounds of the mean time per clip, in ms."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            for i in range(n):
                read(i)
        times.append((time.perf_counter() - start) / (n * repeat) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding UCF-101/ and ucfTrainTestlist/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1,
                        help="cache build processes (1: the per-core rate, without pool start-up)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="bench_data_") as scratch:
        scratch = Path(scratch)
        what, video_root, lists, records = pick_videos(Path(args.videos), scratch)
        n = len(records)
        print(f"videos: {what}: {n} clips of {FRAMES} frames at {SIZE}x{SIZE}, first frames\n")
        rows = []

        try:
            import torchcodec  # noqa: F401  (torchvision's video datasets decode through it)
            from torchvision.datasets import UCF101
        except ImportError as exc:
            print(f"torchvision UCF101: SKIPPED, torchcodec is missing ({exc}).\n"
                  f"  install it with: .venv/bin/pip install torchcodec  (0.17.0 works with torch "
                  f"2.14.1; needs a system FFmpeg, e.g. apt-get install ffmpeg)\n")
        else:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tv = UCF101(str(video_root), str(lists), frames_per_clip=FRAMES,
                            step_between_clips=10**9, fold=1, train=False, num_workers=0,
                            output_format="THWC")
            index_s = time.perf_counter() - start
            if len(tv) != n:
                sys.exit(f"torchvision UCF101 found {len(tv)} clips, this suite {n}: not the same videos")
            order = {Path(p).resolve(): i for i, p in enumerate(tv.video_clips.video_paths)}
            if set(order) != {Path(r.path).resolve() for r in records}:
                sys.exit("torchvision UCF101 and this suite picked different videos")
            rows.append(("torchvision UCF101 (torchcodec), native size",
                         per_clip_ms(lambda i: tv[i], n, args.rounds)))
            rows.append(("torchvision UCF101 (torchcodec) + resize 64x64",
                         per_clip_ms(lambda i: crop_resize(tv[i][0], SIZE), n, args.rounds)))
            print(f"torchvision UCF101 index (timestamps of every video): {index_s:.2f} s")

        rows.append(("videodata.read_clip (PyAV, 64x64)",
                     per_clip_ms(lambda i: read_clip(records[i].path, FRAMES, SIZE), n, args.rounds)))

        start = time.perf_counter()
        cache = ClipCache.build(records, scratch / "cache", size=SIZE, max_frames=FRAMES,
                                workers=args.workers, videos_per_shard=8, show_progress=False)
        build_s = time.perf_counter() - start
        assert len(cache) == n, "some benchmark videos failed to decode"
        np.testing.assert_array_equal(cache.clip(0, FRAMES), read_clip(records[0].path, FRAMES, SIZE))
        rows.append(("ClipCache.clip (uint8 memmap, 64x64)",
                     per_clip_ms(lambda i: cache.clip(i, FRAMES), n, args.rounds, repeat=20)))
        dataset = CachedClipDataset(cache, FRAMES)
        rows.append(("CachedClipDataset item (+ float CxTxHxW in [-1,1])",
                     per_clip_ms(lambda i: dataset[i], n, args.rounds, repeat=20)))

    reference = rows[1][1] if rows[0][0].startswith("torchvision") else None
    print(f"\n{'method':<50}{'ms/clip':>10}{'vs torchvision':>17}")
    for name, ms in rows:
        ratio = "n/a" if not reference else ("reference" if ms == reference else f"{reference / ms:.1f}x faster")
        print(f"{name:<50}{ms:>10.3f}{ratio:>17}")
    print(f"\ncache build: {n} videos in {build_s:.2f} s = {n / build_s:.1f} videos/s "
          f"({'in this process' if args.workers <= 1 else f'{args.workers} processes, incl. start-up'}; "
          f"decode + {SIZE}x{SIZE} conversion + atomic shard writes)")
    if reference:
        print("(ratios against torchvision + resize, the same 64x64 output as the other two)")


if __name__ == "__main__":
    main()
