"""Planning a sweep: resolve the checkpoint, the data and the recipe, write the subset manifests,
list the cells (nothing is trained), and build the labeled clip caches the cells read.

Sweep folder `<output_root>/transfer/<data>-<pretrain run>-<recipe>[-<recipe hash>]/`: `sweep.json`
(spec, resolved recipe, checkpoint + sha256, data key, cell ids of the current plan), `manifests/`
(the split lists and every labeled subset, one text file each), `ledger/`, `cells/`, `features/`,
`jobs/`, `report/`, `report.md`, `report.html`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from pretrain.export import ExportError, latest_export, load_export
from runkit.atomic import atomic_write_json
from runkit.paths import resolve_path
from slurm.profiles import load_profile
from transfer.subsets import SubsetRule, nested_subset, write_manifest
from transfer.sweeps.cells import Cell, SweepContext, cell_key
from transfer.sweeps.recipe import Recipe, load_recipe
from transfer.sweeps.spec import SweepError, SweepSpec
from videodata.cache import ClipCache
from videodata.errors import VideoDataError
from videodata.synthetic import SyntheticConfig, generate
from videodata.ucf101 import load_split, read_class_index


def resolve_checkpoint(spec: SweepSpec) -> Path:
    if spec.checkpoint:
        path = resolve_path(spec.checkpoint)
        if not path.is_file():
            raise SweepError(f"--checkpoint {path} does not exist (expected a discriminator.pt written by "
                             f"`python pretrain/run.py`)")
        return path
    try:
        return latest_export(spec.pretrain_dir)
    except ExportError as exc:
        raise SweepError(str(exc)) from None


@dataclass(frozen=True)
class DataLayout:
    video_root: Path
    lists_dir: Path
    fingerprint: str


def resolve_data(spec: SweepSpec) -> DataLayout:
    if spec.data == "synthetic":
        root = resolve_path(spec.root) if spec.root else spec.under_outputs("data/synthetic")
        cfg = SyntheticConfig(root=str(root), progress=spec.show_progress, **spec.synthetic)
        layout = generate(cfg)
        return DataLayout(Path(layout.video_root), Path(layout.lists_dir), f"synthetic:{cfg.fingerprint}")
    root = resolve_path(spec.root)
    video_root, lists_dir = root / "UCF-101", root / "ucfTrainTestlist"
    if not lists_dir.is_dir():
        raise SweepError(f"--root {root}: no UCF101 split lists at {lists_dir} (expected <root>/ucfTrainTestlist)")
    return DataLayout(video_root, lists_dir, "ucf101")


@dataclass
class SweepPlan:
    spec: SweepSpec
    ctx: SweepContext
    cells: list[Cell]
    records: list            # every labeled video the sweep touches (train and test of its splits)
    recipe: Recipe

    @property
    def out_dir(self) -> Path:
        return Path(self.ctx.out_dir)


def recipe_digest(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.as_dict(), sort_keys=True).encode()).hexdigest()[:8]


def default_out(spec: SweepSpec, checkpoint: Path, recipe: Recipe) -> Path:
    """`<data>-<pretrain run>-<recipe>`, plus a hash of the resolved recipe when overridden."""
    name = f"{spec.data}-{checkpoint.parent.name}-{Path(spec.recipe).stem}"
    if spec.overrides:
        name += "-" + recipe_digest(recipe)
    return spec.under_outputs("transfer") / name


def _capped(spec: SweepSpec, per_split: dict) -> None:
    """--per-class beyond every class's size would silently give the same subsets as a smaller K."""
    if not spec.per_class:
        return
    for split, (train, _) in per_split.items():
        counts: dict[int, int] = {}
        for record in train:
            counts[record.label] = counts.get(record.label, 0) + 1
        largest = max(counts.values())
        too_big = [k for k in spec.per_class if k > largest]
        if too_big:
            raise SweepError(f"--per-class {','.join(map(str, too_big))}: the largest class of split {split} has "
                             f"{largest} training videos; use at most {largest} (or --fractions 1 for all of them)")


def plan_sweep(spec: SweepSpec) -> SweepPlan:
    """Resolve checkpoint and data, write manifests, enumerate cells (nothing is trained)."""
    spec.check()
    recipe = load_recipe(spec.recipe, spec.overrides)
    if spec.executor == "slurm":
        load_profile(spec.cluster)  # a missing or malformed profile fails here, before any work
    checkpoint = resolve_checkpoint(spec)
    export = load_export(checkpoint)
    data = resolve_data(spec)
    out = resolve_path(spec.out) if spec.out else default_out(spec, checkpoint, recipe)
    try:
        class_names = tuple(read_class_index(data.lists_dir))
        records, per_split = {}, {}
        for split in spec.splits:
            train = load_split(data.video_root, data.lists_dir, split, "train")
            test = load_split(data.video_root, data.lists_dir, split, "test")
            per_split[split] = (train, test)
            for record in (*train, *test):
                records.setdefault(record.relpath, record)
    except VideoDataError as exc:
        raise SweepError(str(exc)) from None
    _capped(spec, per_split)
    recipe_dict = recipe.as_dict()
    data_key = hashlib.sha256(json.dumps({"data": data.fingerprint, "videos": sorted(records),
                                          "size": export.size, "cache": recipe_dict["cache"]}).encode()).hexdigest()[:16]
    ctx = SweepContext(out_dir=str(out), checkpoint=str(checkpoint), checkpoint_sha256=export.sha256,
                       train_cache="", eval_cache="", data_key=data_key, class_names=class_names,
                       frames=export.frames, size=export.size, dataset=spec.data, recipe=recipe_dict,
                       threads=spec.threads, show_progress=spec.show_progress and spec.executor != "slurm")
    manifests = out / "manifests"
    cells = []
    full_rule = SubsetRule(fraction=1.0)
    for split, (train, test) in per_split.items():
        write_manifest(manifests, train, split=split, seed=-1, rule=full_rule, dataset=spec.data,
                       name=f"split{split}_train")
        test_manifest = write_manifest(manifests, test, split=split, seed=-1, rule=full_rule,
                                       dataset=spec.data, name=f"split{split}_test")
        for rule in spec.rules():
            for seed in spec.seeds:
                subset = nested_subset(train, rule, seed)
                manifest = write_manifest(manifests, subset, split=split, seed=seed, rule=rule, dataset=spec.data)
                for protocol in spec.protocols:
                    for init in spec.inits:
                        key = cell_key(ctx, protocol, init, split, rule, seed, manifest.sha256, test_manifest.sha256)
                        cells.append(Cell(protocol, init, split, rule.tag, rule.value, seed,
                                          f"manifests/{manifest.path.name}", manifest.sha256,
                                          f"manifests/{test_manifest.path.name}", key))
    atomic_write_json(out / "sweep.json", {"spec": _plain(spec), "recipe": recipe_dict,
                                           "checkpoint": str(checkpoint), "checkpoint_sha256": export.sha256,
                                           "data_key": data_key, "cells": [c.cell_id for c in cells]})
    return SweepPlan(spec, ctx, cells, list(records.values()), recipe)


def _plain(spec: SweepSpec) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


def build_caches(plan: SweepPlan, workers: int = 2) -> SweepPlan:
    """Decode every labeled video once at the checkpoint's resolution (reused across sweeps): the
    fine-tune training cache (first frames) and the evaluation cache (whole videos); one cache
    when both settings agree."""
    cache = plan.recipe.cache
    common = dict(size=plan.ctx.size, workers=workers, show_progress=plan.spec.show_progress)
    train = ClipCache.build(plan.records, plan.spec.cache_dir, max_frames=cache.train_max_frames, **common)
    if (cache.eval_max_frames, cache.eval_stride) == (cache.train_max_frames, 1):
        evaluation = train
    else:
        evaluation = ClipCache.build(plan.records, plan.spec.cache_dir, max_frames=cache.eval_max_frames,
                                     stride=cache.eval_stride, **common)
    plan.ctx = replace(plan.ctx, train_cache=str(train.folder), eval_cache=str(evaluation.folder))
    return plan
