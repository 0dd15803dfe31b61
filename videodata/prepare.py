"""Data stage: generate the synthetic UCF-style set and build its decode-once clip caches.

    python -m videodata.prepare --root outputs/data/synthetic

Idempotent: a finished set and finished caches with the same parameters are reused, so running
it again costs a second. Prints where everything is.
"""
from __future__ import annotations

import argparse
import time

from videodata.cache import ClipCache
from videodata.folder import list_videos
from videodata.synthetic import SyntheticConfig, generate
from videodata.ucf101 import load_split


def prepare(cfg: SyntheticConfig, cache_root: str, *, size: int, max_frames: int | None,
            workers: int) -> dict:
    start = time.perf_counter()
    layout = generate(cfg)
    generated = time.perf_counter()
    # Split 1's train and test lists together hold every labeled video.
    labeled = (load_split(layout.video_root, layout.lists_dir, 1, "train")
               + load_split(layout.video_root, layout.lists_dir, 1, "test"))
    unlabeled = list_videos(layout.unlabeled_dir)
    caches = {name: ClipCache.build(recs, cache_root, size=size, max_frames=max_frames, workers=workers)
              for name, recs in (("labeled", labeled), ("unlabeled", unlabeled))}
    return {"layout": layout, "caches": caches, "generate_s": generated - start,
            "cache_s": time.perf_counter() - generated}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=SyntheticConfig.root, help="synthetic set folder")
    parser.add_argument("--cache-root", default="outputs/cache", help="clip caches go here")
    parser.add_argument("--size", type=int, default=32, help="cached frame size (square crop)")
    parser.add_argument("--max-frames", type=int, default=32, help="frames cached per video")
    parser.add_argument("--num-classes", type=int, default=SyntheticConfig.num_classes)
    parser.add_argument("--clips-per-group", type=int, default=SyntheticConfig.clips_per_group)
    parser.add_argument("--unlabeled-videos", type=int, default=SyntheticConfig.unlabeled_videos)
    parser.add_argument("--seed", type=int, default=SyntheticConfig.seed)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(root=args.root, num_classes=args.num_classes,
                          clips_per_group=args.clips_per_group, unlabeled_videos=args.unlabeled_videos,
                          seed=args.seed, workers=args.workers)
    out = prepare(cfg, args.cache_root, size=args.size, max_frames=args.max_frames, workers=args.workers)
    layout = out["layout"]
    print(f"synthetic set   {layout.root}  (config {layout.fingerprint}, {out['generate_s']:.1f} s)")
    print(f"  videos        {layout.video_root}  ({len(layout.class_names)} classes)")
    print(f"  split lists   {layout.lists_dir}")
    print(f"  unlabeled     {layout.unlabeled_dir}")
    for name, cache in out["caches"].items():
        h, w = cache.size
        print(f"cache {name:<10}{cache.folder}  ({len(cache)} videos, {h}x{w}, "
              f"up to {cache.params['max_frames']} frames)")
    print(f"caches built or reused in {out['cache_s']:.1f} s")


if __name__ == "__main__":
    main()
