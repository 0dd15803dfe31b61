"""One cell of the sweep = checkpoint × protocol × init × split × labels × seed, run as one job.

`SweepContext` is everything a job needs, as plain picklable values (paths are strings), so a
cell runs the same in this process (debug executor), in a subprocess (local) or on a SLURM node.
`run_cell(ctx, cell)` is the job: it skips a cell the ledger already has as done, marks it
running, runs the protocol and records done (metrics) or failed (error and traceback tail) —
an exception in one cell never stops the others. A fine-tune cell keeps its checkpoints under
`cells/<cell_id>/ckpt`, so a killed or preempted cell resumes where it stopped; a preemption
request leaves the entry `running` (it is not a failure) and hands over to submitit's requeue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from runkit.checkpoint import seed_everything
from runkit.preemption import Preempted
from transfer.evaluate import evaluate_clip_scores, save_confusion
from transfer.ledger import Ledger
from transfer.subsets import SubsetRule, read_manifest

log = logging.getLogger(__name__)

PROTOCOLS = ("finetune", "linear", "knn")
FEATURE_PROTOCOLS = ("linear", "knn")
# random-init features come from one fixed draw of the weights, shared by every seed, so a
# linear-probe sweep extracts them once; the cell seed still changes the subset and the probe
RANDOM_FEATURE_SEED = 0


@dataclass(frozen=True)
class SweepContext:
    out_dir: str
    checkpoint: str
    checkpoint_sha256: str
    cache_dir: str
    cache_fingerprint: str
    class_names: tuple[str, ...]
    frames: int
    size: int
    dataset: str
    finetune: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    threads: int = 2
    show_progress: bool = False

    @property
    def ledger(self) -> Ledger:
        return Ledger(Path(self.out_dir) / "ledger")

    def path(self, relative: str) -> Path:
        return Path(self.out_dir) / relative


@dataclass(frozen=True)
class Cell:
    protocol: str
    init: str
    split: int
    rule_tag: str
    rule_value: float
    seed: int
    manifest: str            # relative to the sweep's out_dir
    manifest_sha256: str
    test_list: str           # relative to the sweep's out_dir
    key: str                 # hash of everything the result depends on

    @property
    def cell_id(self) -> str:
        return f"{self.protocol}-{self.init}-split{self.split}-{self.rule_tag}-seed{self.seed}-{self.key[:10]}"

    def as_dict(self) -> dict:
        return asdict(self)


def cell_key(ctx: SweepContext, protocol: str, init: str, split: int, rule: SubsetRule, seed: int,
             manifest_sha256: str, test_sha256: str) -> str:
    """Everything that changes a cell's result: a changed recipe or checkpoint makes a new cell."""
    recipe = ctx.finetune if protocol == "finetune" else {"probe": ctx.probe, "features": ctx.features}
    blob = json.dumps({"protocol": protocol, "init": init, "split": split, "rule": rule.tag,
                       "seed": seed, "manifest": manifest_sha256, "test": test_sha256,
                       "checkpoint": ctx.checkpoint_sha256, "data": ctx.cache_fingerprint,
                       "clip": [ctx.frames, ctx.size], "recipe": recipe}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------- helpers

def open_cache(ctx: SweepContext):
    from videodata.cache import ClipCache

    return ClipCache.open(ctx.cache_dir)


def _index_of(cache) -> dict[str, int]:
    return {record.relpath: i for i, record in enumerate(cache.records)}


def _lookup(index: dict[str, int], relpaths, what: str) -> list[int]:
    missing = [r for r in relpaths if r not in index]
    if missing:
        raise KeyError(f"{len(missing)} videos of {what} are not in the clip cache (first: {missing[:3]})")
    return [index[r] for r in relpaths]


def _load_manifest(ctx: SweepContext, relative: str, expected_sha: str | None = None):
    manifest = read_manifest(ctx.path(relative))
    if expected_sha is not None and manifest.sha256 != expected_sha:
        raise ValueError(f"manifest {manifest.path} changed since the sweep was planned "
                         f"(sha256 {manifest.short} != {expected_sha[:12]}); re-run the sweep to re-plan")
    return manifest


def _labeled_per_class(labels) -> float:
    counts = np.bincount(np.asarray(labels))
    return float(counts[counts > 0].mean())


def _metrics_result(ctx: SweepContext, cell: Cell, scores: np.ndarray, test_labels, train_labels,
                    probabilities: bool, extra: dict) -> dict:
    metrics = evaluate_clip_scores(scores, test_labels, scores_are_probabilities=probabilities)
    confusion = metrics.pop("confusion")
    save_confusion(ctx.path(f"cells/{cell.cell_id}"), confusion, ctx.class_names)
    return {**metrics, "num_classes": len(ctx.class_names), "labeled_videos": len(train_labels),
            "labeled_per_class": _labeled_per_class(train_labels),
            "manifest_sha256": cell.manifest_sha256, "checkpoint_sha256": ctx.checkpoint_sha256,
            "confusion_csv": f"cells/{cell.cell_id}/confusion.csv", **extra}


# ----------------------------------------------------------------------------------- protocols

def _run_finetune(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    from transfer.classifier import build_classifier, load_export
    from transfer.finetune import FinetuneRecipe, finetune, predict_clips

    recipe = FinetuneRecipe.from_dict(ctx.finetune)
    export = load_export(ctx.checkpoint)
    seed_everything(cell.seed)
    model = build_classifier(export, cell.init, len(ctx.class_names), recipe.dropout)
    cache = open_cache(ctx)
    index = _index_of(cache)
    train = _load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    test = _load_manifest(ctx, cell.test_list)
    workdir = ctx.path(f"cells/{cell.cell_id}")
    started = time.perf_counter()
    info = finetune(model, cache, _lookup(index, train.relpaths, train.path.name), train.labels, recipe,
                    frames=ctx.frames, workdir=workdir, seed=cell.seed, show_progress=ctx.show_progress)
    train_s = time.perf_counter() - started
    logits = predict_clips(model, cache, _lookup(index, test.relpaths, test.path.name), frames=ctx.frames,
                           num_clips=recipe.eval_clips, batch_size=recipe.eval_batch)
    result = _metrics_result(ctx, cell, logits, test.labels, train.labels, False,
                             {"steps": info["steps"], "final_loss": info["final_loss"]})
    return result, {"train_s": train_s, "resumed_from": info["resumed_from"]}


def feature_set(ctx: SweepContext, init: str, split_list: str):
    """The cached features of every video of one list (`split_list` relative to out_dir)."""
    from transfer.classifier import build_backbone, load_export
    from transfer.features import FeatureKey, FeatureSpec, cached_features, extract_features, relpaths_sha256

    spec = FeatureSpec(**ctx.features)
    listing = _load_manifest(ctx, split_list)
    key = FeatureKey(ctx.checkpoint_sha256, init, RANDOM_FEATURE_SEED if init == "random" else -1,
                     Path(split_list).stem, relpaths_sha256(listing.relpaths), ctx.frames, ctx.size,
                     ctx.cache_fingerprint, spec)

    def compute():
        export = load_export(ctx.checkpoint)
        seed_everything(RANDOM_FEATURE_SEED)
        backbone = build_backbone(export, init)
        cache = open_cache(ctx)
        indices = _lookup(_index_of(cache), listing.relpaths, listing.path.name)
        return (extract_features(backbone, cache, indices, frames=ctx.frames, spec=spec),
                np.asarray(listing.labels), list(listing.relpaths))

    return cached_features(ctx.path("features"), key, compute)


def extract_stage(ctx: SweepContext, init: str, split_lists: tuple[str, ...]) -> list[str]:
    """Job of the feature stage: make sure every list's features exist (extract at most once)."""
    torch.set_num_threads(ctx.threads)
    return [str(feature_set(ctx, init, name)[0].path) for name in split_lists]


def _run_probe(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    from transfer.probe import ProbeRecipe, knn_probe, linear_probe

    recipe = ProbeRecipe.from_dict(ctx.probe)
    train = _load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    train_all, _ = feature_set(ctx, cell.init, f"manifests/split{cell.split}_train.txt")
    test_all, _ = feature_set(ctx, cell.init, cell.test_list)
    rows = _lookup({r: i for i, r in enumerate(train_all.relpaths)}, train.relpaths, train.path.name)
    features, labels = train_all.features[rows], np.asarray(train.labels)
    started = time.perf_counter()
    if cell.protocol == "linear":
        out = linear_probe(features, labels, test_all.features, len(ctx.class_names), recipe, cell.seed)
    else:
        out = knn_probe(features, labels, test_all.features, len(ctx.class_names), recipe)
    fit_s = time.perf_counter() - started
    result = _metrics_result(ctx, cell, out.test_proba, test_all.labels, labels, True,
                             {"probe": out.info})
    return result, {"fit_s": fit_s}


def run_cell(ctx: SweepContext, cell: Cell) -> dict:
    """The job: returns {"cell_id", "status"}; never raises for an error inside the cell."""
    ledger = ctx.ledger
    entry = ledger.read(cell.cell_id)
    if entry is not None and entry["status"] == "done":
        return {"cell_id": cell.cell_id, "status": "done", "skipped": True}
    ledger.mark_running(cell.cell_id, cell.as_dict())
    torch.set_num_threads(ctx.threads)
    started = time.perf_counter()
    try:
        if cell.protocol == "finetune":
            result, timing = _run_finetune(ctx, cell)
        elif cell.protocol in FEATURE_PROTOCOLS:
            result, timing = _run_probe(ctx, cell)
        else:
            raise ValueError(f"unknown protocol {cell.protocol!r}; expected one of {PROTOCOLS}")
    except Preempted:
        log.warning("cell %s preempted: its checkpoint is saved; it resumes on the next run", cell.cell_id)
        return {"cell_id": cell.cell_id, "status": "running", "preempted": True}
    except Exception as exc:  # noqa: BLE001 - a failed cell is recorded; the sweep goes on
        tail = "".join(traceback.format_exception(exc)[-6:])
        ledger.mark_failed(cell.cell_id, cell.as_dict(), f"{type(exc).__name__}: {exc}\n{tail}",
                           elapsed_s=time.perf_counter() - started)
        log.error("cell %s failed: %s", cell.cell_id, exc)
        return {"cell_id": cell.cell_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    ledger.mark_done(cell.cell_id, cell.as_dict(), result, elapsed_s=time.perf_counter() - started, **timing)
    # the checkpoints only served resumption; a done cell is never re-trained
    shutil.rmtree(ctx.path(f"cells/{cell.cell_id}/ckpt"), ignore_errors=True)
    return {"cell_id": cell.cell_id, "status": "done", "video_acc": result["video_acc"]}
