"""Transfer-stage benchmark: fine-tune step throughput and the feature cache's worth.

    python benchmarks/bench_transfer.py [--quick] [--write]

1. Fine-tune throughput (clips/s) of `transfer.finetune.finetune` — the real loop (sampler, clip
   reads, augmentation off, Adam step) — for a width-16 discriminator on 16x32x32 clips, batch 32,
   from an in-memory clip source.
2. A linear-probe sweep of `cells` cells (fractions x seeds) two ways, in the same run: with the
   feature cache (extract the train and test features once, then fit every cell) and
   re-extracting per cell. Printed as a ratio against its peer.

`--write` replaces the "## Transfer" section of benchmarks/RESULTS.md with the numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from runkit.atomic import atomic_write_text
from transfer.classifier import build_backbone, build_classifier, load_export
from transfer.features import FeatureKey, FeatureSpec, cached_features, extract_features
from transfer.finetune import FinetuneRecipe, finetune
from transfer.probe import ProbeRecipe, linear_probe
from transfer.subsets import SubsetRule, nested_subset
from transfer.testing import write_tiny_export

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


class RandomClips:
    def __init__(self, videos: int, frames: int, size: int, classes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 255, (videos, frames, size, size, 3), dtype=np.uint8)
        self.labels = np.arange(videos) % classes

    def clip(self, i, num_frames, start="first", rng=None):
        begin = 0 if start == "first" else int(rng.integers(0, self.data.shape[1] - num_frames + 1))
        return self.data[i, begin:begin + num_frames]

    def uniform_clips(self, i, num_clips, num_frames):
        starts = np.linspace(0, self.data.shape[1] - num_frames, num_clips).round().astype(int)
        return np.stack([self.data[i, s:s + num_frames] for s in starts])


class _Rec:
    def __init__(self, relpath, label):
        self.relpath, self.label = relpath, label


def bench_finetune(export, source, steps: int, batch: int) -> dict:
    recipe = FinetuneRecipe(iterations=steps, batch_size=batch, lr=1e-3, sampling="random",
                            checkpoint_every=10**9, log_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_classifier(export, "random", 10)
        warm = FinetuneRecipe(iterations=2, batch_size=batch, checkpoint_every=10**9, log_every=10**9)
        finetune(model, source, range(len(source.labels)), source.labels, warm, frames=export.frames,
                 workdir=Path(tmp) / "warm", seed=0, show_progress=False)
        start = time.perf_counter()
        finetune(model, source, range(len(source.labels)), source.labels, recipe, frames=export.frames,
                 workdir=Path(tmp) / "run", seed=0, show_progress=False)
        seconds = time.perf_counter() - start
    return {"steps": steps, "batch": batch, "seconds": seconds, "clips_per_s": steps * batch / seconds,
            "s_per_step": seconds / steps}


def bench_probe_sweep(export, train: RandomClips, test: RandomClips, fractions, seeds, spec: FeatureSpec,
                      recipe: ProbeRecipe) -> dict:
    records = [_Rec(f"v{i}.avi", int(l)) for i, l in enumerate(train.labels)]
    cells = [(f, s) for f in fractions for s in seeds]
    backbone = build_backbone(export, "pretrained")

    def extract_all():
        return (extract_features(backbone, train, range(len(train.labels)), frames=export.frames, spec=spec),
                extract_features(backbone, test, range(len(test.labels)), frames=export.frames, spec=spec))

    def fit(train_feats, test_feats, fraction, seed):
        subset = nested_subset(records, SubsetRule(fraction=fraction), seed)
        rows = [int(r.relpath[1:-4]) for r in subset]
        linear_probe(train_feats[rows], train.labels[rows], test_feats, 10, recipe, seed)

    start = time.perf_counter()
    for fraction, seed in cells:  # peer: every cell extracts its own features
        train_feats, test_feats = extract_all()
        fit(train_feats, test_feats, fraction, seed)
    per_cell = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        def key(name):
            return FeatureKey(export.sha256, "pretrained", -1, name, name, export.frames, export.size, "bench", spec)

        start = time.perf_counter()
        extractions = 0
        for fraction, seed in cells:
            tr, fresh_tr = cached_features(tmp, key("train"), lambda: (extract_all()[0], train.labels, [r.relpath for r in records]))
            te, fresh_te = cached_features(tmp, key("test"), lambda: (extract_all()[1], test.labels, [f"t{i}" for i in range(len(test.labels))]))
            extractions += fresh_tr + fresh_te
            fit(tr.features, te.features, fraction, seed)
        cached = time.perf_counter() - start
    return {"cells": len(cells), "per_cell_s": per_cell, "cached_s": cached, "speedup": per_cell / cached,
            "cached_extractions": extractions}


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads"


def write_section(text: str) -> None:
    old = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    pattern = re.compile(r"^## Transfer\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text, old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    atomic_write_text(RESULTS, new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and videos (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update the Transfer section of RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        export = load_export(write_tiny_export(Path(tmp) / "d.pt", width=16, frames=16, size=32))
    steps = 10 if args.quick else 40
    videos = 100 if args.quick else 300
    train = RandomClips(videos, 32, 32, 10, seed=1)
    test = RandomClips(videos // 3, 32, 32, 10, seed=2)
    ft = bench_finetune(export, train, steps, 32)
    probe = bench_probe_sweep(export, train, test, (0.1, 0.5, 1.0), (0, 1),
                              FeatureSpec(num_clips=4 if args.quick else 10, batch_size=160),
                              ProbeRecipe(c_grid=(0.1,), max_iter=100, train_clips=3))
    text = (
        "## Transfer\n\n"
        f"`python benchmarks/bench_transfer.py{' --quick' if args.quick else ''}` on {machine()}.\n\n"
        "| measure | value | peer | ratio |\n|---|---|---|---|\n"
        f"| fine-tune step, width-16 D, 16x32x32, batch {ft['batch']} | {ft['clips_per_s']:.0f} clips/s "
        f"({ft['s_per_step']:.3f} s/step) | — | — |\n"
        f"| linear-probe sweep, {probe['cells']} cells, feature cache (extractions: "
        f"{probe['cached_extractions']}) | {probe['cached_s']:.1f} s | re-extract per cell: "
        f"{probe['per_cell_s']:.1f} s | {probe['speedup']:.1f}x faster |\n")
    print(text)
    if args.write:
        write_section(text)
        print(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
