"""Transfer-stage benchmark: fine-tune step throughput and the feature cache's worth.

    python benchmarks/bench_transfer.py [--quick] [--write]

1. Fine-tune throughput (clips/s) of `transfer.finetune.finetune` — the real loop (sampler, clip
   reads, augmentation off, Adam step) — for a width-16 discriminator on 16x32x32 clips, batch 32,
   from an in-memory clip source; its peer is the bare model step on a batch already in memory.
2. A linear-probe sweep of `cells` cells (fractions x seeds) two ways, in the same run: with the
   feature cache (extract the train and test features once, then fit every cell) and
   re-extracting per cell. Printed as a ratio against its peer.

`--write` replaces the "## Transfer" section of benchmarks/RESULTS.md with the numbers (the same as
`python benchmarks/run_all.py --only transfer`). `run(args)` returns the numbers as data and
`section(...)` renders the section.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks import common
from runkit.cli import ArgumentParser
from benchmarks.common import (RESULTS_PATH, busy_note, fmt_num, fmt_ratio, load_average, machine_info, md_table,
                               notes, ratio, stamp, update_sections)
from dataclasses import asdict

from pretrain.export import export_random, load_export
from runkit.device import DevicePolicy
from transfer.classifier import build_backbone, build_classifier
from transfer.features import FeatureKey, FeatureSpec, cached_features, extract_features
from transfer.finetune import FinetuneRecipe, finetune
from transfer.probe import ProbeRecipe, fit_linear_probe
from transfer.subsets import SubsetRule, nested_subset
from videodata.clips import ClipDataset
from videodata.clips import to_model_input

CPU = DevicePolicy.create("cpu")


class RandomClips:
    """An in-memory stand-in for a ClipCache: random uint8 videos with labels."""

    def __init__(self, videos: int, frames: int, size: int, classes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 255, (videos, frames, size, size, 3), dtype=np.uint8)
        self.labels = np.arange(videos) % classes
        self.records = [_Rec(f"v{i}.avi", int(label)) for i, label in enumerate(self.labels)]

    def __len__(self) -> int:
        return len(self.records)

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
        dataset = ClipDataset(source, export.frames, sampling="random")
        finetune(model, dataset, warm, policy=CPU, workdir=Path(tmp) / "warm", seed=0, show_progress=False)
        start = time.perf_counter()
        finetune(model, dataset, recipe, policy=CPU, workdir=Path(tmp) / "run", seed=0, show_progress=False)
        seconds = time.perf_counter() - start
    return {"steps": steps, "batch": batch, "seconds": seconds, "clips_per_s": steps * batch / seconds,
            "s_per_step": seconds / steps}


def bench_bare_step(export, source, steps: int, batch: int, frames: int) -> dict:
    """The fine-tune loop's peer: the same model, batch shape and Adam step on one batch already
    in memory as a float tensor (no sampling, clip reads, conversion, logging or checkpoints)."""
    torch.manual_seed(0)
    model = build_classifier(export, "random", 10)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    x = to_model_input(source.data[:batch, :frames])
    y = torch.from_numpy(source.labels[:batch].astype(np.int64))

    def step():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"steps": steps, "batch": batch, "seconds": seconds, "clips_per_s": steps * batch / seconds,
            "s_per_step": seconds / steps}


def bench_probe_sweep(export, train: RandomClips, test: RandomClips, fractions, seeds, spec: FeatureSpec,
                      recipe: ProbeRecipe) -> dict:
    records = train.records
    cells = [(f, s) for f in fractions for s in seeds]
    backbone = build_backbone(export, "pretrained")

    def extract_all():
        return tuple(extract_features(backbone, ClipDataset(source, export.frames, sampling="uniform",
                                                            num_clips=spec.num_clips), spec, CPU)
                     for source in (train, test))

    def fit(train_feats, test_feats, fraction, seed):
        subset = nested_subset(records, SubsetRule(fraction=fraction), seed)
        rows = [int(r.relpath[1:-4]) for r in subset]
        fit_linear_probe(train_feats[rows], train.labels[rows], None, 10, recipe, seed).predict_proba(test_feats)

    start = time.perf_counter()
    for fraction, seed in cells:  # peer: every cell extracts its own features
        train_feats, test_feats = extract_all()
        fit(train_feats, test_feats, fraction, seed)
    per_cell = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        def key(name):
            return FeatureKey(export.sha256, "pretrained", -1, name, name, export.frames, export.size, "bench", asdict(spec))

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


HEADING = "Transfer"
CAVEATS = (
    "Fine-tune: `transfer.finetune.finetune`, the sweep's real loop (batch sampler, random-start clip "
    "reads from an in-memory uint8 source, conversion to float, Adam step, checkpoint at the end), for "
    "a width-16 discriminator on 16x32x32 clips; its peer is the bare forward/backward/Adam step of the "
    "same model on one batch already in memory, so the ratio is the loop's efficiency (1 = no overhead).",
    "Linear-probe sweep: the same cells (label fractions x seeds) fitted twice in the same run, with the "
    "sweep's feature cache (train and test features extracted once, then every cell fits on them) and, "
    "as the peer, re-extracting the features for every cell. Random clips and a tiny export (random "
    "weights): the figure is about time, not accuracy.",
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(prog=common.prog(__file__), description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and videos (a smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update the Transfer section of RESULTS.md")
    return parser.parse_args(argv)


def run(args) -> dict:
    """Measure both figures with their peers; returns plain data (see `section`)."""
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        export = load_export(export_random(Path(tmp) / "d.pt", {"width": 16, "frames": 16, "size": 32}))
    steps = 10 if args.quick else 40
    videos = 100 if args.quick else 300
    train = RandomClips(videos, 32, 32, 10, seed=1)
    test = RandomClips(videos // 3, 32, 32, 10, seed=2)
    ft = bench_finetune(export, train, steps, 32)
    bare = bench_bare_step(export, train, steps, 32, export.frames)
    ft["vs_peer"] = ratio(ft["clips_per_s"], bare["clips_per_s"])
    probe = bench_probe_sweep(export, train, test, (0.1, 0.5, 1.0), (0, 1),
                              FeatureSpec(num_clips=4 if args.quick else 10, batch_size=160),
                              ProbeRecipe(c_grid=(0.1,), max_iter=100, train_clips=3))
    command = "python benchmarks/bench_transfer.py" + (" --quick" if args.quick else "") + \
        (f" --threads {args.threads}" if args.threads != 2 else "")
    return {"stage": "transfer", "command": command, "quick": args.quick, "threads": torch.get_num_threads(),
            "videos": videos, "test_videos": videos // 3, "finetune": ft, "bare_step": bare, "probe": probe}


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## Transfer" section of RESULTS.md, from `run`'s result."""
    ft, bare, probe = result["finetune"], result["bare_step"], result["probe"]
    table = md_table(
        ["measure", "ours", "peer", "ours/peer"],
        [(f"fine-tune loop, width-16 D, 16x32x32, batch {ft['batch']}, {ft['steps']} steps",
          f"{fmt_num(ft['clips_per_s'])} clips/s ({fmt_num(ft['s_per_step'])} s/step)",
          f"bare step on an in-memory batch: {fmt_num(bare['clips_per_s'])} clips/s "
          f"({fmt_num(bare['s_per_step'])} s/step)", fmt_ratio(ft["vs_peer"]) + " (clips/s)"),
         (f"linear-probe sweep, {probe['cells']} cells, feature cache (extractions: {probe['cached_extractions']})",
          f"{fmt_num(probe['cached_s'])} s", f"re-extract per cell: {fmt_num(probe['per_cell_s'])} s",
          fmt_ratio(probe["speedup"]) + " (cells/s)")],
        "lllr")
    found = [f"The feature cache makes the {probe['cells']}-cell probe sweep {fmt_ratio(probe['speedup'])} as fast "
             f"as re-extracting per cell, with {probe['cached_extractions']} extractions (train + test) instead "
             f"of {2 * probe['cells']}; the gain grows with the number of cells sharing one extraction.",
             f"The fine-tune loop runs at {fmt_ratio(ft['vs_peer'])} the bare step's rate: "
             + ("reading, converting and sampling clips cost little next to the model step."
                if ft["vs_peer"] and ft["vs_peer"] >= 0.8 else
                "the loop's clip reads, conversion and bookkeeping are a visible share of each step.")]
    return common.section(
        HEADING,
        f"`{result['command']}` (or `python benchmarks/run_all.py --only transfer`).",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"torch threads: {result['threads']}; {result['videos']} train / {result['test_videos']} test random "
        f"videos of 32 frames at 32x32, 10 classes.",
        table,
        notes([*found, busy_note(info, load_end), *CAVEATS]))


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
