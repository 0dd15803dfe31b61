"""Stabilisation: decode + stabilise + resize whole videos to 64x64, clip by clip
(`decode_stabilised`), next to plain decoding of the same videos (`decode_video`, the peer), one
thread; what each keeps (frames in stabilised clips, clips dropped) and how still the kept clips
are (residual global motion between consecutive frames); the original's settings (SIFT on the
native frame) and the whole video chained to frame 0 (this suite's stabiliser before per-clip
references) beside the fast default; plus the projected time to build a stabilised UCF101 clip
cache on one and on eight 16-core nodes.

    python benchmarks/bench_stabilise.py [--videos ../shared/data] [--rounds 3] [--quick] [--no-variants]

Two video sets: every real UCF101 clip under ../shared/data/UCF-101 when present (31 clips,
320x240), and a synthetic set with camera motion (pans, zooms, shakes, rotations) written to a
temporary folder. `run(args)` returns the numbers as data and `section(...)` renders a
RESULTS.md section.
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
import numpy as np

from benchmarks import common
from runkit.cli import ArgumentParser
from benchmarks.common import (busy_note, fmt_num, fmt_ratio, fmt_seconds, machine_info, md_table, notes, ratio,
                               stamp)
from videodata.decode import decode_video
from videodata.stabilise import StabilisationError, StabiliseConfig, decode_stabilised

SIZE = 64
# UCF101: 13,320 videos, ~186 frames on average (7.2 s at 25-30 fps).
UCF_VIDEOS, UCF_MEAN_FRAMES = 13_320, 186
NODE_CORES, NODES = 16, 8
VIDEOS_PER_SHARD = 64  # videodata.cache.DEFAULT_VIDEOS_PER_SHARD: one shard is one worker's unit
AIM_VIDEOS_PER_S = 5.0

HEADING = "Stabilisation"
# The original's settings (cvondrick/videogan extra/stabilize_videos_many.py; the vgan_paper preset).
ORIGINAL = dict(method="sift", estimate_size=0, max_features=0, min_inliers=4, min_inlier_fraction=0.0,
                check_steps=False, min_coverage=0.0)
# (key, label, config overrides): measured beside the default.
VARIANTS = (
    ("whole", "flow, whole video chained to frame 0 (before per-clip references)",
     dict(clip_frames=1_000_000, max_clips=1)),
    ("original", "SIFT, native frame, every keypoint, the original's checks (the paper preset)", ORIGINAL),
    ("flow240", "flow, native 240 px, 100 corners", dict(estimate_size=0)),
    ("orb", "ORB, 120 px, 300 keypoints", dict(method="orb", max_features=300)),
    ("sift120", "SIFT, 120 px, 300 keypoints", dict(method="sift", max_features=300)),
)
QUICK_VARIANTS = ("whole",)
CAVEATS = (
    "Every row decodes whole videos (no `max_frames`) with one decoder thread and "
    "`cv2.setNumThreads(1)`, like one cache-build worker; a video is cut into clips of 34 frames "
    "after skipping 2 (the original's), each stabilised against its own first frame. \"kept\": frames "
    "in clips that survived (a failed frame pair drops its clip; so does a clip shorter than 16 "
    "frames, e.g. a video's last few frames). The whole-video row chains every frame to frame 0 "
    "and stops decoding where the warp leaves the frame (what this suite did before); its kept share "
    "is of every frame of the videos, like the other rows'.",
    "Residual motion: the mean global shift (phase correlation, px at 64x64) between consecutive "
    "frames inside kept clips; the peer's row is the camera motion of the plain decode. Object "
    "motion adds to it on real videos, so it is a comparison between rows, not zero for a perfect "
    "stabiliser.",
    "Projections use the time per decoded frame times UCF101's mean length (every frame decoded "
    "and stabilised), one cache-build process per core and perfect scaling; the shard column "
    "adds the granularity of 64-video shards (a worker builds whole shards; 209 shards for "
    "UCF101). Across nodes the shards run as a SLURM job array (`python -m videodata.prepare "
    "--executor slurm`: one array task per group of shards, building them one after another on one "
    "core). Writing the shards (393 KB per video at 32 frames of 64x64, 2.3 MB for a whole 186-frame "
    "video) is not included.",
)


def video_sets(shared: Path, scratch: Path, quick: bool) -> list[tuple[str, str, list[str]]]:
    """(key, description, paths): the real UCF101 clips when present, and a synthetic set with
    camera motion."""
    from videodata.synthetic import SyntheticConfig, generate

    sets = []
    root = shared / "UCF-101"
    paths = sorted(str(p) for p in root.glob("*/*.avi")) if root.is_dir() else []
    if paths:
        sets.append(("real", f"real UCF101 clips ({root})", paths[:8] if quick else paths))
    cfg = SyntheticConfig(root=str(scratch / "synthetic"), num_classes=4, clips_per_group=1,
                          unlabeled_videos=0, frames=96, frame_width=320, frame_height=240, camera="mixed",
                          camera_amplitude=0.2, background_texture=0.3, speed_range=(0.01, 0.02),
                          workers=1, progress=False)
    layout = generate(cfg)
    paths = sorted(str(p) for p in layout.video_root.glob("*/*.avi"))[:4 if quick else 16]
    sets.append(("synthetic", f"synthetic set with camera motion ({len(paths)} videos, 320x240, {cfg.frames} "
                              f"frames, camera \"mixed\" at amplitude {cfg.camera_amplitude})", paths))
    return sets


def residual_shifts(clip: np.ndarray) -> list[float]:
    """|global shift| in pixels between consecutive frames of a clip (phase correlation)."""
    if len(clip) < 2:
        return []
    window = cv2.createHanningWindow((clip.shape[2], clip.shape[1]), cv2.CV_32F)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in clip]
    return [float(np.hypot(*cv2.phaseCorrelate(a, b, window)[0])) for a, b in zip(grey, grey[1:])]


def _time_stabilised(paths: list[str], cfg: StabiliseConfig) -> dict:
    """Seconds, frames decoded and kept, clips kept and dropped, residual shifts (measured after
    the timing), and why videos failed (no clip kept)."""
    decoded = kept = clips = dropped = failed = 0
    seconds = 0.0
    reasons: list[str] = []
    shifts: list[float] = []
    for path in paths:
        start = time.perf_counter()
        try:
            frames, report = decode_stabilised(path, SIZE, cfg=cfg, return_report=True)
        except StabilisationError as exc:
            seconds += time.perf_counter() - start
            failed += 1
            reasons.append(f"{Path(path).name}: {exc.reason}")
            continue
        seconds += time.perf_counter() - start
        decoded += report.frames_in
        kept += frames.shape[0]
        clips += report.count("stabilised")
        dropped += report.count("dropped")
        for offset, n, _ in report.kept():
            shifts += residual_shifts(frames[offset:offset + n])
    return {"seconds": seconds, "decoded": decoded, "kept": kept, "clips": clips, "dropped": dropped,
            "failed": failed, "reasons": reasons, "shifts": shifts}


def _time_plain(paths: list[str]) -> dict:
    start, decoded, shifts = time.perf_counter(), 0, []
    videos = []
    for p in paths:
        videos.append(decode_video(p, SIZE))
    seconds = time.perf_counter() - start
    for video in videos:
        decoded += video.shape[0]
        shifts += residual_shifts(video)
    return {"seconds": seconds, "decoded": decoded, "kept": decoded, "clips": 0, "dropped": 0, "failed": 0,
            "reasons": [], "shifts": shifts}


def _row(key: str, label: str, role: str, runs: list[dict], n: int, cfg: StabiliseConfig | None) -> dict:
    first = runs[0]  # frame counts and outcomes are deterministic: the same in every round
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"key": key, "label": label, "role": role, "config": cfg.as_dict() if cfg else None,
            "seconds": seconds, "all_seconds": [r["seconds"] for r in runs], "videos": n,
            "s_per_video": seconds / n, "videos_per_s": n / seconds, "decoded_frames": first["decoded"],
            "ms_per_frame": seconds / max(first["decoded"], 1) * 1000, "kept_frames": first["kept"],
            "kept_share": first["kept"] / max(first["decoded"], 1), "clips": first["clips"],
            "dropped": first["dropped"], "failed": first["failed"], "reasons": first["reasons"],
            "residual_px": statistics.fmean(first["shifts"]) if first["shifts"] else float("nan")}


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
    parser.add_argument("--quick", action="store_true", help="one round, fewer videos, the whole-video variant only (a smoke run)")
    parser.add_argument("--no-variants", dest="variants", action="store_false",
                        help="measure only the default configuration and the peer")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--write", action="store_true", help=f"replace the '{HEADING}' section of RESULTS.md")
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


def _measure_set(paths: list[str], configs: list[tuple[str, str, StabiliseConfig]], rounds: int, name: str) -> list[dict]:
    n = len(paths)
    runs: dict[str, list[dict]] = {"peer": []} | {key: [] for key, _, _ in configs}
    for r in range(rounds):  # interleaved, so load drift hits every row alike
        runs["peer"].append(_time_plain(paths))
        for key, _, cfg in configs:
            if key == "default" or r == 0:  # the variants once: they are for tuning, not the record
                runs[key].append(_time_stabilised(paths, cfg))
        print(f"{name} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f} s"
                                                          for k, v in runs.items() if len(v) == r + 1),
              file=sys.stderr)
    rows = [_row("peer", "`decode_video` (no stabilisation)", "peer", runs["peer"], n, None)]
    rows += [_row(key, label, "ours" if key == "default" else "variant", runs[key], n, cfg)
             for key, label, cfg in configs]
    for row in rows:  # against the peer's time in the same rounds (the variants run in round 1 only)
        row["kept_share"] = row["kept_frames"] / rows[0]["decoded_frames"]  # of every frame of the videos
        peer = _row("peer", "", "peer", runs["peer"][:len(row["all_seconds"])], n, None)
        row["vs_peer"] = ratio(row["videos_per_s"], peer["videos_per_s"])
        row["frames_vs_peer"] = ratio(peer["ms_per_frame"], row["ms_per_frame"])
    return rows


def run(args) -> dict:
    """Time the peer, the default configuration and (optionally) the variants on the same videos."""
    cv2.setNumThreads(1)
    default = StabiliseConfig(skip=2)  # the pretraining cache's (data.skip_frames=2)
    configs = [("default", f"`decode_stabilised` (default: {default.method}, {default.estimate_size} px, "
                           f"{default.max_features} corners, per clip)", default)]
    configs += [(key, label, replace(default, **over)) for key, label, over in VARIANTS
                if args.variants or key in QUICK_VARIANTS]
    result: dict = {"stage": "stabilise", "command": _command(args), "quick": args.quick, "rounds": args.rounds,
                    "size": SIZE, "machine": machine_info(), "sets": []}
    with tempfile.TemporaryDirectory(prefix="bench_stabilise_") as scratch:
        for key, what, paths in video_sets(Path(args.videos), Path(scratch), args.quick):
            print(f"videos: {what}: {len(paths)} whole videos at {SIZE}x{SIZE}", file=sys.stderr)
            rows = _measure_set(paths, configs, args.rounds, key)
            result["sets"].append({"key": key, "videos": what, "n": len(paths), "rows": rows})
    first = result["sets"][0]["rows"]  # the real clips when present
    result["projection"] = {"off": project(first[0]["ms_per_frame"]), "on": project(first[1]["ms_per_frame"])}
    return result


def _set_table(rows: list[dict]) -> str:
    cells = []
    for r in rows:
        label = r["label"] + (" **(peer)**" if r["role"] == "peer" else "")
        kept = "all (not stabilised)" if r["role"] == "peer" else f"{r['kept_frames']:,} ({r['kept_share']:.0%})"
        clips = "" if r["role"] == "peer" else f"{r['clips']} / {r['dropped']} / {r['failed']}"
        cells.append((label, fmt_num(r["s_per_video"]), fmt_num(r["ms_per_frame"]), f"{r['decoded_frames']:,}",
                      kept, clips, f"{r['residual_px']:.2f}",
                      "1 (peer)" if r["role"] == "peer" else fmt_ratio(r["vs_peer"])))
    return md_table(["method (whole videos to 64x64, 1 thread)", "s/video", "ms/decoded frame", "frames decoded",
                     "frames kept in stabilised clips (of all)", "clips kept / dropped / videos failed",
                     "residual motion, mean (px)", "ours/peer (videos/s)"], cells)


def section(result: dict, info: dict | None = None, load_end=None) -> str:
    """The "## Stabilisation" section, from `run`'s result."""
    info = info or result["machine"]
    parts = []
    found = []
    for video_set in result["sets"]:
        parts += [f"{video_set['videos']}: {video_set['n']} whole videos.", _set_table(video_set["rows"])]
        by_key = {r["key"]: r for r in video_set["rows"]}
        ours = by_key["default"]
        line = (f"{video_set['key'].capitalize()} set: the default keeps {ours['kept_share']:.0%} of the frames in "
                f"{ours['clips']} stabilised clips ({ours['dropped']} dropped), residual motion "
                f"{ours['residual_px']:.2f} px against {by_key['peer']['residual_px']:.2f} px unstabilised")
        if "whole" in by_key:
            whole = by_key["whole"]
            line += (f"; chained to frame 0 over the whole video it kept {whole['kept_share']:.0%} "
                     f"({whole['failed']} videos failed), residual {whole['residual_px']:.2f} px")
        if "original" in by_key:
            orig = by_key["original"]
            line += (f"; the original's SIFT settings keep {orig['kept_share']:.0%} at "
                     f"{fmt_num(orig['s_per_video'])} s per video against {fmt_num(ours['s_per_video'])} s "
                     f"({fmt_ratio(ratio(orig['s_per_video'], ours['s_per_video']))} the default's time)")
        found.append(line + "." + (f" Failures: {'; '.join(ours['reasons'])}." if ours["reasons"] else ""))
    proj = result["projection"]
    prow = []
    for key, label in (("off", "stabilisation off (`decode_video`)"), ("on", "stabilisation on (default)")):
        p = proj[key]
        prow.append((label, fmt_num(p["s_per_video"]), fmt_num(p["videos_per_s"]),
                     *(f"{fmt_seconds(p[c]['ideal_s'])} ({fmt_seconds(p[c]['shards_s'])})" for c in ("core", "node", "nodes"))))
    projection = md_table(
        ["UCF101 cache build (13,320 videos x 186 frames)", "s/video", "videos/s per core", "1 core",
         f"1 node ({NODE_CORES} cores)", f"{NODES} nodes ({NODE_CORES * NODES} cores)"], prow)
    on_rate = proj["on"]["videos_per_s"]
    found += [
        f"Projected on full-length UCF101 videos the default stabilises {fmt_num(on_rate)} videos/s per core "
        f"({'meets' if on_rate >= AIM_VIDEOS_PER_S else 'misses'} the aim of {AIM_VIDEOS_PER_S:g}).",
        "Projection cells: perfect scaling, then (in brackets) whole 64-video shards per worker.",
    ]
    return common.section(
        HEADING,
        f"`{result['command']}`.",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"Peer and default: median over {result['rounds']} round(s); the variants once, in the first "
        f"round, and compared with the peer's first round.",
        *parts, projection,
        notes([*found, busy_note(info, load_end), *CAVEATS]))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
