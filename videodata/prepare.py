"""Data stage: decode-once clip caches of the synthetic set, a video folder or a UCF101 split.

The synthetic UCF-style set is the default; `--videos` caches any folder or list of videos,
`--ucf101` one split of UCF101. Decoding runs in this process or as a SLURM job array.

    python -m videodata.prepare --root outputs/data/synthetic          # synthetic set + its caches
    python -m videodata.prepare --videos DIR_OR_LIST                  # every video under DIR (or listed)
    python -m videodata.prepare --ucf101 ROOT --split 1               # ROOT/UCF-101 + ROOT/ucfTrainTestlist
    python -m videodata.prepare --ucf101 ROOT --executor slurm --cluster local --size 64 --max-frames 32

Idempotent: a finished set and finished caches with the same parameters are reused, so running
it again costs a second. Resumable: a build that was killed (or whose jobs were preempted)
keeps its finished shards and builds only the others when run again. Prints where everything is.

`--executor process` (default) decodes in `--workers` processes here; `local`, `slurm` or `debug`
builds the shards as jobs of `slurm.executors.make_executor(kind, <cache-root>/jobs/%j, --cluster)`
(`--shards-per-job` shards each; on SLURM one job array) while this process waits and then writes
the index.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from runkit.cli import ArgumentParser, run
from runkit.errors import UserError
from slurm.executors import ExecutorError, make_executor
from slurm.jobs import job_runner
from videodata.cache import DEFAULT_VIDEOS_PER_SHARD, MAX_JOBS, ClipCache
from videodata.folder import list_videos
from videodata.synthetic import SyntheticConfig, generate
from videodata.sets import SETS
from videodata.sets.ucf101 import load_split

EXECUTORS = ("process", "local", "slurm", "debug")


def build_caches(sets: dict[str, list], cache_root: str, *, size: int, max_frames: int | None,
                 workers: int = 2, stride: int = 1, videos_per_shard: int = DEFAULT_VIDEOS_PER_SHARD,
                 run_jobs=None, shards_per_job: int | None = None, stabilise: str = "off",
                 show_progress: bool = True) -> dict[str, ClipCache]:
    """One cache per named list of records (built, resumed or reused). `stabilise`: "off",
    "drop" (clip by clip, failed clips left out, 2 frames skipped first: pretraining's
    `data.stabilise.enabled=true` with its other defaults) or "plain" (failed clips kept as
    decoded: the transfer recipes' `cache.stabilise=true`)."""
    config = None
    if stabilise != "off":
        from videodata.stabilise import StabiliseConfig  # OpenCV only when asked for
        config = StabiliseConfig(on_failure=stabilise, skip=2 if stabilise == "drop" else 0)
    return {name: ClipCache.build(records, cache_root, size=size, max_frames=max_frames, stride=stride,
                                  workers=workers, videos_per_shard=videos_per_shard, run_jobs=run_jobs,
                                  shards_per_job=shards_per_job, stabilise=config, show_progress=show_progress)
            for name, records in sets.items()}


def prepare(cfg: SyntheticConfig, cache_root: str, *, size: int, max_frames: int | None,
            workers: int, **build_kw) -> dict:
    """The synthetic set and its two caches ("labeled": split 1's train + test, "unlabeled").
    `build_kw`: more `build_caches` arguments (stride, videos_per_shard, run_jobs, shards_per_job)."""
    start = time.perf_counter()
    layout = generate(cfg)
    generated = time.perf_counter()
    # Split 1's train and test lists together hold every labeled video.
    labeled = [rec for side in ("train", "test")
               for rec in SETS[cfg.layout].load(layout.video_root, layout.lists_dir, 1, side)]
    unlabeled = list_videos(layout.unlabeled_dir)
    caches = build_caches({"labeled": labeled, "unlabeled": unlabeled}, cache_root, size=size,
                          max_frames=max_frames, workers=workers, **build_kw)
    return {"layout": layout, "caches": caches, "generate_s": generated - start,
            "cache_s": time.perf_counter() - generated}


def ucf101_records(root: str | Path, split: int, subset: str = "all", lists: str | Path | None = None,
                   missing: str = "error") -> tuple[list, str]:
    """(records, description) of a UCF101 split: `root` holds `UCF-101/` and `ucfTrainTestlist/`
    (or is the video folder itself, with `lists` given). subset "all": train then test, the order
    in which a transfer sweep over that one split lists its videos (so it reuses this cache)."""
    root = Path(root)
    video_root = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    lists_dir = Path(lists) if lists else root / "ucfTrainTestlist"
    sides = ("train", "test") if subset == "all" else (subset,)
    records = [rec for side in sides for rec in load_split(video_root, lists_dir, split, side, missing=missing)]
    return records, f"UCF101 split {split} {subset} ({video_root}, lists {lists_dir})"


def parse_args(argv: list[str] | None = None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_argument_group("what to cache (default: the synthetic set)")
    source.add_argument("--videos", default=None, metavar="DIR_OR_LIST",
                        help="a folder tree of videos or a text file with one path per line (labels -1)")
    source.add_argument("--ucf101", default=None, metavar="ROOT",
                        help="UCF101: ROOT holds UCF-101/ and ucfTrainTestlist/")
    source.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="UCF101 split (default 1)")
    source.add_argument("--subset", default="all", choices=("all", "train", "test"),
                        help="UCF101 side(s) of the split (default all: train then test)")
    source.add_argument("--lists", default=None, help="UCF101 split lists (default ROOT/ucfTrainTestlist)")
    source.add_argument("--missing", default="error", choices=("error", "skip"),
                        help="listed videos that are not on disk: an error, or skipped with a warning")
    synth = parser.add_argument_group("the synthetic set")
    synth.add_argument("--root", default=SyntheticConfig.root, help="synthetic set folder")
    synth.add_argument("--num-classes", type=int, default=SyntheticConfig.num_classes)
    synth.add_argument("--clips-per-group", type=int, default=SyntheticConfig.clips_per_group)
    synth.add_argument("--unlabeled-videos", type=int, default=SyntheticConfig.unlabeled_videos)
    synth.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    cache = parser.add_argument_group("the cache")
    cache.add_argument("--cache-root", default="outputs/cache", help="clip caches go here")
    cache.add_argument("--size", type=int, default=32, help="cached frame size (square crop)")
    cache.add_argument("--max-frames", type=int, default=32, help="frames cached per video (0: all)")
    cache.add_argument("--stride", type=int, default=1, help="cache every stride-th frame")
    cache.add_argument("--videos-per-shard", type=int, default=DEFAULT_VIDEOS_PER_SHARD)
    cache.add_argument("--stabilise", default="off", choices=("off", "drop", "plain"),
                       help="stabilise every video clip by clip; a clip that cannot be is dropped (as "
                            "pretraining's data.stabilise.enabled=true) or kept as decoded (as the "
                            "transfer recipes' cache.stabilise=true); default off")
    run_group = parser.add_argument_group("where the decoding runs")
    run_group.add_argument("--executor", default="process", choices=EXECUTORS,
                           help="process: --workers processes here; local/slurm/debug: a job per "
                                "--shards-per-job shards (slurm: one job array)")
    run_group.add_argument("--cluster", default="local",
                           help="cluster profile for --executor slurm (slurm/conf/cluster/<name>.yaml)")
    run_group.add_argument("--shards-per-job", type=int, default=None,
                           help=f"default: enough to stay within {MAX_JOBS} jobs")
    run_group.add_argument("--workers", type=int, default=2)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    if args.videos and args.ucf101:
        parser.error("give --videos or --ucf101, not both")
    for name in ("size", "stride", "videos_per_shard", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_frames < 0 or (args.shards_per_job is not None and args.shards_per_job < 1):
        parser.error("--max-frames must be >= 0 and --shards-per-job >= 1")
    return args


def make_job_runner(kind: str, cache_root: str | Path, cluster: str = "local"):
    """None for "process"; else a job runner (`slurm.jobs.job_runner`) over a submitit executor
    logging under `<cache_root>/jobs/<job id>`."""
    if kind == "process":
        return None
    try:  # a bad --cluster is a ProfileError, already a UserError
        return job_runner(make_executor(kind, Path(cache_root) / "jobs" / "%j", cluster, job_name="clipcache"))
    except ExecutorError as exc:  # e.g. no SLURM commands on this machine
        raise UserError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    max_frames = args.max_frames or None
    run_jobs = make_job_runner(args.executor, args.cache_root, args.cluster)
    build_kw = dict(size=args.size, max_frames=max_frames, workers=args.workers, stride=args.stride,
                    videos_per_shard=args.videos_per_shard, run_jobs=run_jobs,
                    shards_per_job=args.shards_per_job, stabilise=args.stabilise)
    if args.videos or args.ucf101:
        if args.videos:
            records, what = list_videos(args.videos, missing=args.missing), f"videos {args.videos}"
            name = "videos"
        else:
            records, what = ucf101_records(args.ucf101, args.split, args.subset, args.lists, args.missing)
            name = f"ucf101 split {args.split} ({args.subset})"
        print(f"{what}: {len(records)} videos")
        start = time.perf_counter()
        caches = build_caches({name: records}, args.cache_root, **build_kw)
        cache_s = time.perf_counter() - start
    else:
        try:
            cfg = SyntheticConfig(root=args.root, num_classes=args.num_classes,
                                  clips_per_group=args.clips_per_group, unlabeled_videos=args.unlabeled_videos,
                                  seed=args.seed, workers=args.workers)
        except ValueError as exc:  # e.g. more classes than the synthetic set has motions
            raise UserError(f"synthetic set: {exc}") from exc
        out = prepare(cfg, args.cache_root, **build_kw)
        layout, caches, cache_s = out["layout"], out["caches"], out["cache_s"]
        print(f"synthetic set   {layout.root}  (config {layout.fingerprint}, {out['generate_s']:.1f} s)")
        print(f"  videos        {layout.video_root}  ({len(layout.class_names)} classes)")
        print(f"  split lists   {layout.lists_dir}")
        print(f"  unlabeled     {layout.unlabeled_dir}")
    for name, cache in caches.items():
        h, w = cache.size
        print(f"cache {name:<10}{'' if len(name) < 10 else ' '}{cache.folder}  ({len(cache)} videos, {h}x{w}, "
              f"up to {cache.params['max_frames'] or 'all'} frames)")
    print(f"caches built or reused in {cache_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(sys.argv[1:]), sys.argv[1:]))
