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

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pretrain.data import select_records
from pretrain.export import BackboneExport, ExportError, export_torchvision, latest_export, load_export
from pretrain.torchvision_video import SPEC_PREFIX
from pretrain.schema import DataConfig
from runkit.atomic import atomic_write_json
from runkit.cli import one_line
from runkit.device import DevicePolicy
from runkit.paths import resolve_path
from slurm.executors import make_executor
from slurm.jobs import job_runner
from slurm.profiles import load_profile
from transfer.canonical import CanonicalError, canonical_subset
from transfer.subsets import (SubsetRule, listed_subset, nested_subset, read_subset_list, validation_split,
                              write_manifest)
from transfer.sweeps.cells import Cell, SweepContext, cell_key
from transfer.sweeps.protocols import PROTOCOLS
from transfer.sweeps.recipe import Recipe, load_recipe
from transfer.sweeps.spec import SweepError, SweepSpec
from transfer.sweeps.trajectory import snapshot_hashes
from videodata.audit import AuditResult, audit_pool, check
from videodata.cache import ClipCache
from videodata.errors import VideoDataError
from videodata.labeled import LabeledData, labeled_set
from videodata.synthetic import SyntheticConfig, generate


def resolve_checkpoint(spec: SweepSpec, given: str | None = None) -> Path:
    """One --checkpoint entry (default: the LATEST export under the pretraining outputs)."""
    if given and given.startswith(SPEC_PREFIX):  # torchvision:<name>[=weights]
        return export_torchvision(given, spec.under_outputs("backbones"))
    if given:
        path = resolve_path(given)
        if not path.is_file():
            raise SweepError(f"--checkpoint {path} does not exist (expected a discriminator.pt written by "
                             f"`python pretrain/run.py`)")
        return path
    try:
        return latest_export(spec.pretrain_dir)
    except ExportError as exc:
        raise SweepError(str(exc)) from None


def resolve_replicates(spec: SweepSpec) -> list[tuple[Path, BackboneExport]]:
    """Every pretraining run of the sweep, loaded: they must share clip shape (one clip cache)."""
    paths = [resolve_checkpoint(spec, given) for given in spec.checkpoints() or [None]]
    runs = [(path, load_export(path)) for path in paths]
    if len({export.sha256 for _, export in runs}) != len(runs):
        raise SweepError("--checkpoint: two of the exports are the same file contents (each pretraining run once)")
    first_path, first = runs[0]
    for path, export in runs[1:]:
        if (export.frames, export.size) != (first.frames, first.size):
            raise SweepError(f"--checkpoint: {path} takes {export.frames}x{export.size}^2 clips but {first_path} "
                             f"{first.frames}x{first.size}^2; the pretraining runs of one sweep share a clip shape")
    return runs


def resolve_data(spec: SweepSpec) -> LabeledData:
    if spec.data == "synthetic":
        root = resolve_path(spec.root) if spec.root else spec.under_outputs("data/synthetic")
        cfg = SyntheticConfig(root=str(root), progress=spec.show_progress, **spec.synthetic)
        generate(cfg)
        return labeled_set(cfg.layout, root, f"synthetic:{cfg.fingerprint}")
    try:
        return labeled_set(spec.data, resolve_path(spec.root))
    except VideoDataError as exc:
        raise SweepError(f"--root: {exc}") from None


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


def default_out(spec: SweepSpec, checkpoint: Path, recipe: Recipe, runs: int = 1) -> Path:
    """`<data>-<pretrain run>[-<n>runs]-<recipe>`, plus a hash of the resolved recipe when overridden."""
    name = f"{spec.data}-{checkpoint.parent.name}{f'-{runs}runs' if runs > 1 else ''}-{Path(spec.recipe).stem}"
    if spec.validate:
        name += "-validate"
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
    """Resolve checkpoint and data, write manifests, enumerate cells (nothing is trained).

    With `spec.trajectory`, every pretrained cell has a "selected" twin whose job chooses a
    snapshot of its pretraining run on its own subset's validation folds (`trajectory`)."""
    spec.check()
    recipe = load_recipe(spec.recipe, spec.overrides)
    runtime = recipe.runtime
    DevicePolicy.create(runtime.device, runtime.precision, runtime.channels_last, runtime.compile)
    if spec.executor == "slurm":
        load_profile(spec.cluster)  # a missing or malformed profile fails here, before any work
    runs = resolve_replicates(spec)
    checkpoint, export = runs[0]
    data = resolve_data(spec)
    out = resolve_path(spec.out) if spec.out else default_out(spec, checkpoint, recipe, len(runs))
    try:
        class_names = tuple(data.class_names())
        records, per_split = {}, {}
        for split in spec.splits:
            train, test = _train_and_evaluation(spec, data, split)
            per_split[split] = (train, test)
            for record in (*train, *test):
                records.setdefault(record.relpath, record)
    except VideoDataError as exc:
        raise SweepError(str(exc)) from None
    _capped(spec, per_split)
    inits, snapshot_sets = tuple(spec.inits), [()] * len(runs)
    if spec.trajectory:
        inits += ("selected",)
        snapshot_sets = [snapshot_hashes(path) for path, _ in runs]
        for (path, _), hashes in zip(runs, snapshot_sets):
            if len(hashes) < 2:
                raise SweepError(f"--trajectory: {path.parent} keeps no snapshots (pretrain with "
                                 f"trainer.snapshot_every > 0; the CPU demos keep one every 50 steps)")
    tests = {split: test for split, (_, test) in per_split.items()}
    audits = []
    for path, run_export in runs:
        audits.append(audit_checkpoint(run_export, data, tests))
        check(audits[-1], spec.on_leak, f"checkpoint {path}")
    leakage = audits[0]
    recipe_dict = recipe.as_dict()
    data_key = hashlib.sha256(json.dumps({"data": data.fingerprint, "videos": sorted(records),
                                          "size": export.size, "cache": recipe_dict["cache"]}).encode()).hexdigest()[:16]
    ctx = SweepContext(out_dir=str(out), checkpoint=str(checkpoint), checkpoint_sha256=export.sha256,
                       train_cache="", eval_cache="", data_key=data_key, class_names=class_names,
                       frames=export.frames, size=export.size, dataset=spec.data, recipe=recipe_dict,
                       threads=spec.threads, show_progress=spec.show_progress and spec.executor != "slurm",
                       replicates=tuple((str(path), e.sha256) for path, e in runs) if len(runs) > 1 else ())
    manifests = out / "manifests"
    cells = []
    full_rule = SubsetRule(fraction=1.0)
    listed = [(rule, read_subset_list(path)) for rule, path in spec.listed()]
    for split, (train, test) in per_split.items():
        write_manifest(manifests, train, split=split, seed=-1, rule=full_rule, dataset=spec.data,
                       name=f"split{split}_train")
        test_manifest = write_manifest(manifests, test, split=split, seed=-1, rule=full_rule,
                                       dataset=spec.data, name=spec.evaluation_list(split),
                                       source="" if spec.validate else data.target.test_list)
        subsets = [(rule, sub, seed, *_draw(spec, split, rule, sub, train))
                   for rule in spec.rules() for sub, seed in spec.seed_pairs()]
        for rule, names in listed:
            try:
                chosen = listed_subset(train, names, f"--subset-list {rule.listed}")
            except ValueError as exc:
                raise SweepError(str(exc)) from None
            subsets += [(rule, -1, seed, chosen, f"list {rule.listed}") for seed in spec.seeds]
        for rule, sub, seed, subset, source in subsets:
            name = f"split{split}_{rule.tag}" if rule.listed else None
            manifest = write_manifest(manifests, subset, split=split, seed=sub, rule=rule, dataset=spec.data,
                                      name=name, source=source)
            for replicate in range(len(runs)):
                for protocol in spec.protocols:
                    for init in inits:
                        key = cell_key(ctx.for_replicate(replicate), protocol, init, split, rule, sub, seed,
                                       manifest.sha256, test_manifest.sha256, replicate,
                                       snapshot_sets[replicate] if init == "selected" else (),
                                       sections=PROTOCOLS[protocol].sections)
                        cells.append(Cell(protocol, init, split, rule.tag, rule.value, sub, seed,
                                          f"manifests/{manifest.path.name}", manifest.sha256,
                                          f"manifests/{test_manifest.path.name}", key, replicate))
    atomic_write_json(out / "sweep.json", {"spec": _plain(spec), "recipe": recipe_dict,
                                           "checkpoint": str(checkpoint), "checkpoint_sha256": export.sha256,
                                           "data_key": data_key, "crossed": spec.crossed,
                                           "audit": leakage.as_dict(), "trajectory": spec.trajectory,
                                           "validate": spec.validate,
                                           # what the report needs of each protocol, so it reads no code
                                           "protocols": {name: {"title": PROTOCOLS[name].title, "job": PROTOCOLS[name].job,
                                                                "sections": list(PROTOCOLS[name].sections),
                                                                "style": PROTOCOLS[name].style}
                                                         for name in spec.protocols},
                                           "replicates": [{"checkpoint": str(path), "checkpoint_sha256": e.sha256,
                                                           "audit": a.as_dict()} for (path, e), a in zip(runs, audits)],
                                           "cells": [c.cell_id for c in cells]})
    return SweepPlan(spec, ctx, cells, list(records.values()), recipe)


def _draw(spec: SweepSpec, split: int, rule: SubsetRule, draw: int, train: list) -> tuple[list, str]:
    """Subset draw `draw` of `rule`: the nested sampler's, or the shipped canonical list (--canonical)."""
    if not spec.canonical:
        return nested_subset(train, rule, draw), f"seeded draw {draw}"
    try:
        return canonical_subset(spec.data, split, rule, draw, train)
    except CanonicalError as exc:
        raise SweepError(f"--canonical: {exc}") from None


def _train_and_evaluation(spec: SweepSpec, data: LabeledData, split: int) -> tuple[list, list]:
    """A split's training list and the list its cells are scored on: the test list, or with
    --validate a group-disjoint part held out of the training list (the test list is not read)."""
    train = data.split(split, "train")
    if not spec.validate:
        return train, data.split(split, "test")
    try:
        return validation_split(train, seed=split)
    except ValueError as exc:
        raise SweepError(f"--validate, split {split}: {exc}") from None


def audit_checkpoint(export: BackboneExport, data: LabeledData, tests: dict[int, list]) -> AuditResult:
    """The leakage audit of the checkpoint's pretraining pool (from the data config stored in the
    export) against the sweep's test lists; a pool that cannot be listed any more is said so."""
    target = f"{data.style} ({data.video_root})"
    empty = AuditResult(target, sorted(tests), 0, sum(len(t) for t in tests.values()))
    data_cfg = export.config.get("data") if isinstance(export.config, dict) else None
    if not data_cfg:
        empty.note = "not applicable: the checkpoint records no pretraining data (e.g. a random-init export)"
        return empty
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), data_cfg)
        pool = (list(ClipCache.open(resolve_path(cfg.cache_dir)).records) if cfg.source == "cache"
                else select_records(cfg)[0])
    except (VideoDataError, ValueError, OSError, OmegaConfBaseException) as exc:
        empty.note = f"not checked: the pretraining pool cannot be listed here ({one_line(str(exc))[:200]})"
        return empty
    return audit_pool(pool, tests, target=target, ucf_groups=data.target.name_groups)


def _plain(spec: SweepSpec) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


def build_caches(plan: SweepPlan, workers: int = 2) -> SweepPlan:
    """Decode every labeled video once at the checkpoint's resolution (reused across sweeps): the
    fine-tune training cache (first frames) and the evaluation cache (whole videos); one cache
    when both settings agree. A SLURM sweep decodes its missing shards as a job array on the
    cluster (`slurm.jobs.job_runner`), not on the submitting host."""
    cache = plan.recipe.cache
    run_jobs = None
    if plan.spec.executor == "slurm":
        run_jobs = job_runner(make_executor("slurm", plan.spec.cache_dir / "jobs" / "%j", plan.spec.cluster,
                                            job_name="clipcache"))
    common = dict(size=plan.ctx.size, workers=workers, show_progress=plan.spec.show_progress,
                  stabilise=cache.stabilise_config(), run_jobs=run_jobs)
    train = ClipCache.build(plan.records, plan.spec.cache_dir, max_frames=cache.train_max_frames, **common)
    if (cache.eval_max_frames, cache.eval_stride) == (cache.train_max_frames, 1):
        evaluation = train
    else:
        evaluation = ClipCache.build(plan.records, plan.spec.cache_dir, max_frames=cache.eval_max_frames,
                                     stride=cache.eval_stride, **common)
    plan.ctx = replace(plan.ctx, train_cache=str(train.folder), eval_cache=str(evaluation.folder))
    return plan
