"""Data loading, side by side on the same videos: torchvision UCF101 (torchcodec) vs this suite's
direct PyAV decode vs the decode-once clip cache; plus the cache build rate against decoding the
same clips on the fly (its peer).

    python benchmarks/bench_data.py [--videos ../shared/data] [--rounds 3] [--quick]

Uses the real UCF101 clips of split 1's test side under ../shared/data when present, else a small
synthetic set in a temporary folder. Every method returns the same clip: the first 32 frames at
64x64 (short-side resize + centre crop), uint8, one clip per video, one thread, like one
DataLoader worker. torchvision's dataset returns native-size frames, so its time includes a
torch antialiased resize to 64x64 (shown separately as well). `run(args)` returns the numbers as
data and `section(...)` renders the RESULTS.md section (benchmarks/run_all.py calls both).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import common
from runkit.cli import ArgumentParser
from benchmarks.common import busy_note, fmt_num, fmt_ratio, load_average, machine_info, md_table, notes, ratio, stamp
from videodata.cache import ClipCache
from videodata.clips import ClipDataset
from videodata.clips import to_model_input
from videodata.decode import read_clip
from videodata.synthetic import SyntheticConfig, generate
from videodata.sets.ucf101 import load_split

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
                          frames=48, frame_width=320, frame_height=240)
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


HEADING = "Data loading"
CAVEATS = (
    "Every method returns the same clip: the first 32 frames at 64x64 (short-side resize + centre "
    "crop), uint8, one clip per video, one thread per reader (like one DataLoader worker). "
    "torchvision's `datasets.UCF101` returns native-size frames, so its comparable row (the peer) "
    "adds a torch antialiased resize; the native-size row is shown for reference only.",
    "torchvision 0.28+ decodes its video datasets through torchcodec (it needs a system FFmpeg); "
    "PyAV wheels bundle their own FFmpeg, so PyAV is this suite's default reader. Conversion to "
    "64x64, not decoding, is most of a clip's cost (measured by this benchmark): `read_clip` scales in one FFmpeg "
    "filter graph.",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=common.prog(__file__), description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding UCF-101/ and ucfTrainTestlist/")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, --quick 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="cache build processes (1: the per-core rate, without pool start-up)")
    parser.add_argument("--quick", action="store_true", help="one round of everything (a smoke run)")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1 or args.workers < 1:
        parser.error("--rounds and --workers must be >= 1")
    return args


def _command(args) -> str:
    flags = ["--quick"] if args.quick else []
    if args.rounds != (1 if args.quick else 3):
        flags += ["--rounds", str(args.rounds)]
    if args.workers != 1:
        flags += ["--workers", str(args.workers)]
    return " ".join(["python benchmarks/bench_data.py", *flags])


def run(args) -> dict:
    """Measure every reader on the same videos; returns plain data (see `section`)."""
    torch.set_num_threads(1)
    result: dict = {"stage": "data", "command": _command(args), "quick": args.quick,
                    "rounds": args.rounds, "frames": FRAMES, "size": SIZE, "workers": args.workers,
                    "rows": [], "torchvision": None, "torchvision_skipped": None}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as scratch:
        scratch = Path(scratch)
        what, video_root, lists, records = pick_videos(Path(args.videos), scratch)
        n = len(records)
        result.update(videos=what, n=n, real_ucf101=what.startswith("real"))
        print(f"videos: {what}: {n} clips of {FRAMES} frames at {SIZE}x{SIZE}, first frames", file=sys.stderr)
        rows = result["rows"]

        try:
            import torchcodec  # noqa: F401  (torchvision's video datasets decode through it)
            from torchvision.datasets import UCF101
        except ImportError as exc:
            result["torchvision_skipped"] = (
                f"torchcodec is missing ({exc}); install it with `.venv/bin/pip install torchcodec` "
                f"(needs a system FFmpeg, e.g. `apt-get install ffmpeg`)")
            print(f"torchvision UCF101: SKIPPED, {result['torchvision_skipped']}", file=sys.stderr)
        else:
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tv = UCF101(str(video_root), str(lists), frames_per_clip=FRAMES,
                            step_between_clips=10**9, fold=1, train=False, num_workers=0,
                            output_format="THWC")
            result["torchvision"] = {"index_s": time.perf_counter() - start}
            if len(tv) != n:
                raise RuntimeError(f"torchvision UCF101 found {len(tv)} clips, this suite {n}: not the same videos")
            order = {Path(p).resolve(): i for i, p in enumerate(tv.video_clips.video_paths)}
            if set(order) != {Path(r.path).resolve() for r in records}:
                raise RuntimeError("torchvision UCF101 and this suite picked different videos")
            rows.append({"key": "tv_native", "method": "torchvision `datasets.UCF101` (torchcodec), native size, no resize",
                         "role": "info", "ms_per_clip": per_clip_ms(lambda i: tv[i], n, args.rounds)})
            rows.append({"key": "tv_resize", "method": "torchvision `datasets.UCF101` (torchcodec) + resize to 64x64",
                         "role": "peer", "ms_per_clip": per_clip_ms(lambda i: crop_resize(tv[i][0], SIZE), n, args.rounds)})

        rows.append({"key": "read_clip", "method": "`videodata.decode.read_clip` (PyAV, one filter graph)",
                     "role": "ours", "ms_per_clip": per_clip_ms(lambda i: read_clip(records[i].path, FRAMES, SIZE), n, args.rounds)})

        builds = []
        for r in range(args.rounds):  # each round builds a fresh cache (a finished one is reused)
            start = time.perf_counter()
            cache = ClipCache.build(records, scratch / f"cache{r}", size=SIZE, max_frames=FRAMES,
                                    workers=args.workers, videos_per_shard=8, show_progress=False)
            builds.append(time.perf_counter() - start)
        if len(cache) != n:
            raise RuntimeError(f"the cache holds {len(cache)} of {n} videos: some failed to decode")
        np.testing.assert_array_equal(cache.clip(0, FRAMES), read_clip(records[0].path, FRAMES, SIZE))
        frames = sum(cache.num_frames(i) for i in range(n))
        rows.append({"key": "cache_clip", "method": "`ClipCache.clip` (uint8 memmap)", "role": "ours",
                     "ms_per_clip": per_clip_ms(lambda i: cache.clip(i, FRAMES), n, args.rounds, repeat=20)})
        dataset = ClipDataset(cache, FRAMES)
        rows.append({"key": "cache_item",
                     "method": "`ClipDataset[i]` + `to_model_input` (float CxTxHxW in [-1, 1])", "role": "ours",
                     "ms_per_clip": per_clip_ms(lambda i: to_model_input(dataset[i][0]), n, args.rounds, repeat=20)})

    peer = next((r["ms_per_clip"] for r in rows if r["role"] == "peer"), None)
    for row in rows:
        row["vs_peer"] = ratio(peer, row["ms_per_clip"])  # clips/s ours / clips/s peer
    build_s = statistics.median(builds)
    decode_ms = next(r["ms_per_clip"] for r in rows if r["key"] == "read_clip")
    cache_ms = next(r["ms_per_clip"] for r in rows if r["key"] == "cache_clip")
    result["build"] = {
        "seconds": build_s, "all_seconds": builds, "videos": n, "frames": frames,
        "videos_per_s": n / build_s, "frames_per_s": frames / build_s,
        "peer_videos_per_s": 1000 / decode_ms, "peer_frames_per_s": 1000 / decode_ms * frames / n,
        "vs_peer": ratio(n / build_s, 1000 / decode_ms),
        # epochs of on-the-fly decoding whose savings repay one build
        "break_even_epochs": build_s / (n * (decode_ms - cache_ms) / 1000) if decode_ms > cache_ms else None,
    }
    return result


# Clips/s the paper-size GAN step eats on an H100 in bf16 (issue 10's sizing figure): the loader
# note says how many workers that takes at the measured per-worker rate.
GPU_APPETITE = 14_000


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## Data loading" section of RESULTS.md, from `run`'s result."""
    rows = [(r["method"] + (" **(peer)**" if r["role"] == "peer" else ""), fmt_num(r["ms_per_clip"]),
             fmt_num(1000 / r["ms_per_clip"]),
             "1 (peer)" if r["role"] == "peer" else ("-" if r["role"] == "info" else fmt_ratio(r["vs_peer"])))
            for r in result["rows"]]
    loader = md_table(["method (same clip: first 32 frames at 64x64, uint8)", "ms/clip", "clips/s",
                       "ours/peer (clips/s)"], rows)
    b = result["build"]
    build = md_table(
        ["cache build (the same videos, 32 frames at 64x64)", "seconds", "videos/s (= 32-frame clips/s)",
         "frames/s", "ours/peer (videos/s)"],
        [(f"`ClipCache.build` ({'in this process' if result['workers'] <= 1 else str(result['workers']) + ' processes'}: "
          f"decode + convert + atomic shard writes)", fmt_num(b["seconds"]), fmt_num(b["videos_per_s"]),
          fmt_num(b["frames_per_s"]), fmt_ratio(b["vs_peer"])),
         ("peer: decode the same clips on the fly with `read_clip` (one pass)",
          fmt_num(b["videos"] / b["peer_videos_per_s"]), fmt_num(b["peer_videos_per_s"]),
          fmt_num(b["peer_frames_per_s"]), "1 (peer)")])
    by_key = {r["key"]: r for r in result["rows"]}
    found = []
    if result["torchvision_skipped"]:
        found.append(f"torchvision `datasets.UCF101` was not measured: {result['torchvision_skipped']}; "
                     f"the loader ratios are n/a.")
    else:
        found.append(f"Before its first clip, torchvision's dataset indexes the timestamps of every video: "
                     f"{fmt_num(result['torchvision']['index_s'])} s for {result['n']} videos (not in the per-clip times).")
        found.append(f"`read_clip` (PyAV) delivers the 64x64 clip at {fmt_ratio(by_key['read_clip']['vs_peer'])} "
                     f"the rate of torchvision + resize; reading it back from the clip cache is "
                     f"{fmt_ratio(by_key['cache_clip']['vs_peer'])} (uint8) and "
                     f"{fmt_ratio(by_key['cache_item']['vs_peer'])} (float tensor) the peer's rate.")
    if "cache_item" in by_key:
        per_worker = 1000 / by_key["cache_item"]["ms_per_clip"]
        found.append(f"One loader worker (one core) turns cached clips into float model input at "
                     f"{fmt_num(per_worker)} clips/s, so feeding {GPU_APPETITE:,} clips/s (the paper-size GAN "
                     f"step's appetite on an H100, the estimate this suite sizes for) takes "
                     f"{math.ceil(GPU_APPETITE / per_worker)} DataLoader workers, as many cores beside the GPU; "
                     f"`benchmarks/gpu_check.py` measures the loader with workers against the step timed on the card.")
    if b["break_even_epochs"] is not None:
        found.append(f"Building the cache runs at {fmt_ratio(b['vs_peer'])} the rate of decoding the same clips "
                     f"on the fly, so it pays for itself after {b['break_even_epochs']:.1f} epoch(s) of "
                     f"on-the-fly reading; every later epoch reads at the cache's rate. Build times over "
                     f"{len(b['all_seconds'])} round(s): {', '.join(fmt_num(s) for s in b['all_seconds'])} s.")
    return common.section(
        HEADING,
        f"`{result['command']}` (or `python benchmarks/run_all.py --only data`).",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"Videos: {result['videos']}: {result['n']} clips; median over {result['rounds']} round(s).",
        loader, build,
        notes([*found, busy_note(info, load_end), *CAVEATS]))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
