"""Stabilisation cost: decode + stabilise + resize whole videos to 64x64 (`decode_stabilised`) next
to plain decoding of the same videos at 64x64 (`decode_video`, the peer), one thread; plus the
projected time to build a stabilised UCF101 clip cache on one and on eight 16-core nodes.

    python benchmarks/bench_stabilise.py [--videos ../shared/data] [--rounds 3] [--quick] [--no-variants]

Uses every real UCF101 clip under ../shared/data/UCF-101 when present (31 clips, 320x240), else
a small synthetic set with camera motion in a temporary folder. `run(args)` returns the numbers
as data and `section(...)` renders a RESULTS.md section.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2

from benchmarks import common
from runkit.cli import ArgumentParser
from benchmarks.common import (busy_note, fmt_num, fmt_ratio, fmt_seconds, load_average, machine_info, md_table,
                               notes, ratio, stamp)
from videodata.decode import decode_video
from videodata.stabilise import StabilisationError, StabiliseConfig, decode_stabilised

SIZE = 64
# UCF101: 13,320 videos, ~186 frames on average (7.2 s at 25-30 fps).
UCF_VIDEOS, UCF_MEAN_FRAMES = 13_320, 186
NODE_CORES, NODES = 16, 8
VIDEOS_PER_SHARD = 64  # videodata.cache.DEFAULT_VIDEOS_PER_SHARD: one shard is one worker's unit
AIM_VIDEOS_PER_S = 5.0

HEADING = "Stabilisation"
# (key, label, config overrides): the tuning choices measured beside the default.
VARIANTS = (
    ("flow60", "flow, 120 px, 60 corners", dict(max_features=60)),
    ("flow160", "flow, 160 px, 100 corners", dict(estimate_size=160)),
    ("flow240", "flow, native 240 px, 100 corners", dict(estimate_size=240)),
    ("orb", "ORB, 120 px, 300 keypoints", dict(method="orb", max_features=300)),
    ("sift120", "SIFT, 120 px, 300 keypoints", dict(method="sift", max_features=300)),
    ("sift240", "SIFT, native 240 px, 500 keypoints (nearest to the original)",
     dict(method="sift", estimate_size=240, max_features=500)),
)
CAVEATS = (
    "Both rows decode whole videos (no `max_frames`) with one decoder thread and "
    "`cv2.setNumThreads(1)`, like one cache-build worker. `decode_stabilised` stops decoding where "
    "the warp leaves the frame (the rest of that video is not used), so its per-video time on this "
    "sample depends on how many videos end early; the projections use the time per decoded frame "
    "times UCF101's mean length instead (every frame decoded and stabilised: an upper bound).",
    "Projections assume one cache-build process per core and perfect scaling; the shard column "
    "adds the granularity of 64-video shards (a worker builds whole shards; 209 shards for "
    "UCF101). Across nodes the shards run as a SLURM job array (`python -m videodata.prepare "
    "--executor slurm`: one array task per group of shards, building them one after another on one "
    "core), so the scheduler spreads them over whatever nodes are free. Writing the shards (393 KB per video at 32 frames of 64x64, 2.3 MB for a whole 186-frame "
    "video) is not included.",
)


def pick_videos(shared: Path, scratch: Path) -> tuple[str, list[str]]:
    root = shared / "UCF-101"
    paths = sorted(str(p) for p in root.glob("*/*.avi")) if root.is_dir() else []
    if paths:
        return f"real UCF101 clips ({root})", paths
    from videodata.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(root=str(scratch / "synthetic"), num_classes=2, clips_per_group=1,
                          unlabeled_videos=0, frames=96, frame_width=320, frame_height=240, camera="mixed",
                          camera_amplitude=0.2, background_texture=0.3, speed_range=(0.01, 0.02),
                          workers=1, progress=False)
    layout = generate(cfg)
    paths = sorted(str(p) for p in layout.video_root.glob("*/*.avi"))[:16]
    return (f"synthetic set ({len(paths)} videos, 320x240, {cfg.frames} frames, camera motion; no "
            f"real UCF101 under {shared})"), paths


def _time_stabilised(paths: list[str], cfg: StabiliseConfig) -> dict:
    """Total seconds, and seconds + decoded frames of the videos that did not fail (a failed
    video's decoded frame count is unknown, so the time per frame leaves failures out)."""
    decoded = kept = failed = ended = 0
    ok_seconds = seconds = 0.0
    reasons: list[str] = []
    for path in paths:
        start = time.perf_counter()
        try:
            frames, report = decode_stabilised(path, SIZE, cfg=cfg, return_report=True)
        except StabilisationError as exc:
            seconds += time.perf_counter() - start
            failed += 1
            reasons.append(f"{Path(path).name}: {exc.reason}")
            continue
        took = time.perf_counter() - start
        seconds, ok_seconds = seconds + took, ok_seconds + took
        decoded += report.frames_in
        kept += frames.shape[0]
        ended += report.ended is not None
    return {"seconds": seconds, "ok_seconds": ok_seconds, "decoded": decoded, "kept": kept,
            "failed": failed, "ended": ended, "reasons": reasons}


def _time_plain(paths: list[str]) -> dict:
    start = time.perf_counter()
    decoded = sum(decode_video(p, SIZE).shape[0] for p in paths)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "ok_seconds": seconds, "decoded": decoded, "kept": decoded, "failed": 0,
            "ended": 0, "reasons": []}


def _row(key: str, label: str, role: str, runs: list[dict], n: int, cfg: StabiliseConfig | None) -> dict:
    first = runs[0]  # frame counts and outcomes are deterministic: the same in every round
    seconds = statistics.median(r["seconds"] for r in runs)
    ok_seconds = statistics.median(r["ok_seconds"] for r in runs)
    return {"key": key, "label": label, "role": role, "config": cfg.as_dict() if cfg else None,
            "seconds": seconds, "all_seconds": [r["seconds"] for r in runs], "videos": n,
            "s_per_video": seconds / n, "videos_per_s": n / seconds, "decoded_frames": first["decoded"],
            "ms_per_frame": ok_seconds / max(first["decoded"], 1) * 1000, "kept_frames": first["kept"],
            "failed": first["failed"], "ended": first["ended"], "reasons": first["reasons"]}


def project(ms_per_frame: float) -> dict:
    """Time to build the UCF101 cache at this per-core rate: 1 core, 1 node, 8 nodes."""
    per_video = ms_per_frame / 1000 * UCF_MEAN_FRAMES
    shards = math.ceil(UCF_VIDEOS / VIDEOS_PER_SHARD)
    out = {"s_per_video": per_video, "videos_per_s": 1 / per_video}
    for name, cores in (("core", 1), ("node", NODE_CORES), ("nodes", NODE_CORES * NODES)):
        out[name] = {"cores": cores, "ideal_s": UCF_VIDEOS * per_video / cores,
                     "shards_s": math.ceil(shards / cores) * VIDEOS_PER_SHARD * per_video}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog=common.prog(__file__), description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding UCF-101/")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="one round, no variants (a smoke run)")
    parser.add_argument("--no-variants", dest="variants", action="store_false",
                        help="measure only the default configuration and the peer")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.quick:
        args.variants = False
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def _command(args) -> str:
    flags = ["--quick"] if args.quick else []
    if args.rounds != (1 if args.quick else 3):
        flags += ["--rounds", str(args.rounds)]
    if not args.variants and not args.quick:
        flags.append("--no-variants")
    return " ".join(["python benchmarks/bench_stabilise.py", *flags])


def run(args) -> dict:
    """Time the peer, the default configuration and (optionally) the variants on the same videos."""
    cv2.setNumThreads(1)
    default = StabiliseConfig()
    configs = [("default", f"`decode_stabilised` (default: {default.method}, {default.estimate_size} px, "
                           f"{default.max_features} corners)", default)]
    if args.variants:
        configs += [(key, label, replace(default, **over)) for key, label, over in VARIANTS]
    result: dict = {"stage": "stabilise", "command": _command(args), "quick": args.quick, "rounds": args.rounds,
                    "size": SIZE, "machine": machine_info(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_stabilise_") as scratch:
        what, paths = pick_videos(Path(args.videos), Path(scratch))
        n = len(paths)
        result.update(videos=what, n=n, real_ucf101=what.startswith("real"))
        print(f"videos: {what}: {n} whole videos at {SIZE}x{SIZE}", file=sys.stderr)
        runs: dict[str, list[dict]] = {"peer": []} | {key: [] for key, _, _ in configs}
        for r in range(args.rounds):  # interleaved, so load drift hits every row alike
            runs["peer"].append(_time_plain(paths))
            for key, _, cfg in configs:
                if key == "default" or r == 0:  # the variants once: they are for tuning, not the record
                    runs[key].append(_time_stabilised(paths, cfg))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in runs.items()
                                                               if len(v) == r + 1), file=sys.stderr)
    rows = [_row("peer", "`decode_video` (no stabilisation)", "peer", runs["peer"], n, None)]
    rows += [_row(key, label, "ours" if key == "default" else "variant", runs[key], n, cfg)
             for key, label, cfg in configs]
    for row in rows:  # against the peer's time in the same rounds (the variants run in round 1 only)
        peer = _row("peer", "", "peer", runs["peer"][:len(row["all_seconds"])], n, None)
        row["vs_peer"] = ratio(row["videos_per_s"], peer["videos_per_s"])
        row["frames_vs_peer"] = ratio(peer["ms_per_frame"], row["ms_per_frame"])
    result["rows"] = rows
    result["projection"] = {"off": project(rows[0]["ms_per_frame"]), "on": project(rows[1]["ms_per_frame"])}
    return result


def section(result: dict, info: dict | None = None, load_end=None) -> str:
    """The "## Stabilisation" section, from `run`'s result."""
    info = info or result["machine"]
    rows = []
    for r in result["rows"]:
        label = r["label"] + (" **(peer)**" if r["role"] == "peer" else "")
        rows.append((label, fmt_num(r["s_per_video"]), fmt_num(r["videos_per_s"]), fmt_num(r["ms_per_frame"]),
                     f"{r['decoded_frames']:,}", f"{r['failed']} / {r['ended']}",
                     "1 (peer)" if r["role"] == "peer" else fmt_ratio(r["vs_peer"]),
                     "1 (peer)" if r["role"] == "peer" else fmt_ratio(r["frames_vs_peer"])))
    table = md_table(["method (whole videos to 64x64, 1 thread)", "s/video", "videos/s per core",
                      "ms/decoded frame", "frames decoded (not failed)", "failed / ended early",
                      "ours/peer (videos/s)", "ours/peer (frames/s)"], rows)
    proj = result["projection"]
    prow = []
    for key, label in (("off", "stabilisation off (`decode_video`)"), ("on", "stabilisation on (default)")):
        p = proj[key]
        prow.append((label, fmt_num(p["s_per_video"]), fmt_num(p["videos_per_s"]),
                     *(f"{fmt_seconds(p[c]['ideal_s'])} ({fmt_seconds(p[c]['shards_s'])})" for c in ("core", "node", "nodes"))))
    projection = md_table(
        ["UCF101 cache build (13,320 videos x 186 frames)", "s/video", "videos/s per core", "1 core",
         f"1 node ({NODE_CORES} cores)", f"{NODES} nodes ({NODE_CORES * NODES} cores)"], prow)
    by_key = {r["key"]: r for r in result["rows"]}
    ours = by_key["default"]
    on_rate = proj["on"]["videos_per_s"]
    found = [
        f"Stabilised whole videos take {fmt_num(ours['s_per_video'])} s each here ({fmt_num(ours['videos_per_s'])} "
        f"videos/s per core, {fmt_ratio(ours['vs_peer'])} the peer's rate); per decoded frame it is "
        f"{fmt_num(ours['ms_per_frame'])} ms against {fmt_num(by_key['peer']['ms_per_frame'])} ms, i.e. "
        f"{fmt_num(on_rate)} videos/s per core on full-length UCF101 videos "
        f"({'meets' if on_rate >= AIM_VIDEOS_PER_S else 'misses'} the aim of {AIM_VIDEOS_PER_S:g}).",
        f"Of the {result['n']} videos, {ours['failed']} failed and {ours['ended']} ended early (the warp left "
        f"the frame); {ours['kept_frames']:,} of {by_key['peer']['decoded_frames']:,} frames kept."
        + (f" Failures: {'; '.join(ours['reasons'])}." if ours["reasons"] else ""),
        "Projection cells: perfect scaling, then (in brackets) whole 64-video shards per worker.",
    ]
    return common.section(
        HEADING,
        f"`{result['command']}`.",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"Videos: {result['videos']}: {result['n']} whole videos; peer and default: median over "
        f"{result['rounds']} round(s); the variants (tuning choices) once, in the first round, and "
        f"compared with the peer's first round.",
        table, projection,
        notes([*found, busy_note(info, load_end), *CAVEATS]))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
