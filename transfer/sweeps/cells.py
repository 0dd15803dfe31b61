"""One cell of the sweep = pretraining run x protocol x init x split x labels x seed, run as one job.

`SweepContext` is everything a job needs, as plain picklable values (paths are strings), so a
cell runs the same in this process (debug executor), in a subprocess (local) or on a SLURM node.
A sweep over several pretraining runs of one method (`--checkpoint a.pt,b.pt,c.pt`) gives each
cell a `replicate`: the index of its export in `ctx.replicates`, and for random init the index of
its weight draw, so random init gets one draw per replicate and the report pairs them.
`run_cell(ctx, cell)` is one cell (its job, `execute.run_cells`, sets the threads): it skips a cell the ledger already has as done, marks it
running, runs the protocol on the context's device and records done (metrics) or failed (error
and traceback tail) - an exception in one cell never stops the others. A fine-tune cell keeps its
checkpoints under `cells/<cell_id>/ckpt`, so a killed or preempted cell resumes where it stopped;
a preemption request leaves the entry `running` (it is not a failure) and hands over to
submitit's requeue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from pretrain.export import load_export
from runkit.checkpoint import seed_everything
from runkit.device import DevicePolicy
from runkit.preemption import Preempted
from transfer.classifier import RANDOM_INITS, build_backbone, build_classifier
from transfer.evaluate import evaluate_clip_scores, predict_videos, save_confusion
from transfer.features import (FeatureKey, FeatureSpec, cached_features, extract_features, reestimate_batchnorm,
                               relpaths_sha256)
from transfer.finetune import FinetuneRecipe, finetune
from transfer.knn import fit_knn
from transfer.ledger import Ledger
from transfer.probe import ProbeRecipe, fit_linear_probe
from transfer.subsets import SubsetRule, read_manifest
from transfer.sweeps.spec import FEATURE_PROTOCOLS, PROTOCOLS
from transfer.sweeps.trajectory import choose_snapshot
from videodata.cache import REPORT_NAME, ClipCache
from videodata.clips import ClipDataset

log = logging.getLogger(__name__)

# random-init features come from one draw of the weights per replicate, shared by every seed, so
# a probe sweep extracts them once per replicate; the cell seed still changes the subset and probe
RANDOM_FEATURE_SEED = 0
# a random-init fine-tune cell of replicate r > 0 seeds its weights and training from
# seed + r * this (replicate 0 keeps the seed itself, so a one-checkpoint sweep's cells stay)
REPLICATE_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class SweepContext:
    out_dir: str
    checkpoint: str
    checkpoint_sha256: str
    train_cache: str          # fine-tune training clips (the first frames of each labeled video)
    eval_cache: str           # test and probe clips (whole videos)
    data_key: str             # identity of the labeled videos and the cache parameters
    class_names: tuple[str, ...]
    frames: int
    size: int
    dataset: str
    recipe: dict = field(default_factory=dict)   # Recipe.as_dict(): finetune, probe, features, cache, runtime
    threads: int = 2
    show_progress: bool = False
    replicates: tuple[tuple[str, str], ...] = ()   # (export path, sha256) per pretraining run; () = the one above

    def for_replicate(self, replicate: int) -> "SweepContext":
        """The context of one pretraining run: its checkpoint and hash in place of the first's."""
        if replicate == 0 and not self.replicates:
            return self
        checkpoint, sha256 = self.replicates[replicate]
        return replace(self, checkpoint=checkpoint, checkpoint_sha256=sha256)

    @property
    def ledger(self) -> Ledger:
        return Ledger(Path(self.out_dir) / "ledger")

    def path(self, relative: str) -> Path:
        return Path(self.out_dir) / relative

    def policy(self) -> DevicePolicy:
        runtime = self.recipe["runtime"]
        return DevicePolicy.create(runtime["device"], runtime["precision"], runtime["channels_last"],
                                   runtime["compile"])

    @property
    def loader_workers(self) -> int:
        return int(self.recipe["runtime"]["loader_workers"])


@dataclass(frozen=True)
class Cell:
    protocol: str
    init: str
    split: int
    rule_tag: str
    rule_value: float
    subset_seed: int         # the draw of the labeled subset (-1: a user's list)
    seed: int                # training randomness: head init, batch order, augmentation
    manifest: str            # relative to the sweep's out_dir
    manifest_sha256: str
    test_list: str           # relative to the sweep's out_dir
    key: str                 # hash of everything the result depends on
    replicate: int = 0       # pretraining run (pretrained) or weight draw (random) of this cell

    @property
    def cell_id(self) -> str:
        subset = "" if self.subset_seed < 0 else f"-sub{self.subset_seed}"
        run = f"-rep{self.replicate}" if self.replicate else ""  # replicate 0 reads as a one-run sweep's
        return (f"{self.protocol}-{self.init}-split{self.split}-{self.rule_tag}{subset}-seed{self.seed}{run}"
                f"-{self.key[:10]}")

    @property
    def weights(self) -> str:
        """The backbone's weights as transfer.classifier names them: a "selected" cell (--trajectory)
        is pretrained weights, from the snapshot its job chooses on validation."""
        return "pretrained" if self.init == "selected" else self.init

    @property
    def training_seed(self) -> int:
        """The seed of the cell's randomness; random init's replicates draw their weights from it."""
        if self.init in RANDOM_INITS and self.replicate:
            return self.seed + self.replicate * REPLICATE_SEED_STRIDE
        return self.seed

    def as_dict(self) -> dict:
        return asdict(self)


def cell_key(ctx: SweepContext, protocol: str, init: str, split: int, rule: SubsetRule, subset_seed: int, seed: int,
             manifest_sha256: str, test_sha256: str, replicate: int = 0, snapshots: Sequence[str] = ()) -> str:
    """Everything that changes a cell's result: a changed recipe or checkpoint makes a new cell.
    `ctx` is the cell's replicate's context (its checkpoint hash)."""
    r = ctx.recipe
    recipe = r["finetune"] if protocol == "finetune" else {"probe": r["probe"], "features": r["features"]}
    fields = {"protocol": protocol, "init": init, "split": split, "rule": rule.tag,
              "subset_seed": subset_seed, "seed": seed, "manifest": manifest_sha256, "test": test_sha256,
              "checkpoint": ctx.checkpoint_sha256, "data": ctx.data_key,
              "clip": [ctx.frames, ctx.size], "recipe": recipe, "cache": r["cache"],
              "precision": r["runtime"]["precision"]}
    if replicate:  # replicate 0 hashes as before, so a one-checkpoint sweep keeps its finished cells
        fields["replicate"] = replicate
    if snapshots:  # a selected cell chooses among these: a changed run makes a new cell
        fields["snapshots"] = list(snapshots)
    blob = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ------------------------------------------------------------------------------------- helpers

def _indices(cache: ClipCache, relpaths, what: str) -> list[int]:
    try:
        return cache.index_of(relpaths).tolist()
    except KeyError as exc:
        raise KeyError(f"videos of {what} are not in the clip cache {cache.folder}: {exc.args[0]}") from None


def _load_manifest(ctx: SweepContext, relative: str, expected_sha: str | None = None):
    manifest = read_manifest(ctx.path(relative))
    if expected_sha is not None and manifest.sha256 != expected_sha:
        raise ValueError(f"manifest {manifest.path} changed since the sweep was planned "
                         f"(sha256 {manifest.short} != {expected_sha[:12]}); re-run the sweep to re-plan")
    return manifest


def _labeled_per_class(labels) -> float:
    counts = np.bincount(np.asarray(labels))
    return float(counts[counts > 0].mean())


def protocol_card(ctx: SweepContext, cell: Cell, test_clips: int, selection: str) -> dict:
    """What a result means, recorded with it (the report's protocol card)."""
    cache = ctx.recipe["cache"]
    where = ("spread evenly over the whole video" if cache["eval_max_frames"] is None
             else f"spread evenly over the first {cache['eval_max_frames']} cached frames")
    if cache["eval_stride"] > 1:
        where += f" (every {cache['eval_stride']}-th frame)"
    return {"stabilised": _stabilised(ctx),"split": cell.split, "subset": cell.rule_tag,
            "subset_source": "user's list" if cell.subset_seed < 0 else f"seeded draw {cell.subset_seed}",
            "subset_seed": cell.subset_seed, "training_seed": cell.seed, "test_clips": test_clips,
            "replicate": cell.replicate, "weights": _weights(ctx, cell),
            "test_clips_from": where, "metric": "video-level accuracy (softmax of the clips averaged); "
                                             "clip-level, top-5 and mean-class accuracy beside it",
            "selection": selection}


def _weights(ctx: SweepContext, cell: Cell) -> str:
    """Where the cell's backbone weights come from, for its protocol card."""
    if cell.weights == "random_torch":
        return f"random weight draw {cell.replicate} (Torch7's default init)"
    if cell.weights != "pretrained":
        return f"random weight draw {cell.replicate}"
    run = Path(ctx.checkpoint).parent
    run = run.parent if run.name == "snapshots" else run  # a selected cell's snapshot
    return f"pretraining run {cell.replicate} ({run.name})"


def _stabilised(ctx: SweepContext) -> str:
    """Whether the labeled videos were stabilised, and how many clips could not be (kept as decoded)."""
    if not ctx.recipe["cache"].get("stabilise"):
        return "no"
    report = json.loads((Path(ctx.eval_cache) / REPORT_NAME).read_text())
    counts = report["stabilisation"]
    clips = counts["clips_stabilised"] + counts["clips_plain"]
    return (f"yes, clip by clip ({counts['clip_frames']} frames); {counts['clips_plain']} of {clips} clips "
            f"could not be and were kept as decoded, in {counts['videos_with_plain_clips']} of "
            f"{report['cached']} videos")


def _metrics_result(ctx: SweepContext, cell: Cell, probabilities: np.ndarray, test_labels, train_labels,
                    extra: dict, selection: str) -> dict:
    metrics = evaluate_clip_scores(probabilities, test_labels, scores_are_probabilities=True)
    confusion = metrics.pop("confusion")
    save_confusion(ctx.path(f"cells/{cell.cell_id}"), confusion, ctx.class_names)
    return {**metrics, "num_classes": len(ctx.class_names), "labeled_videos": len(train_labels),
            "labeled_per_class": _labeled_per_class(train_labels),
            "manifest_sha256": cell.manifest_sha256, "checkpoint_sha256": ctx.checkpoint_sha256,
            "confusion_csv": f"cells/{cell.cell_id}/confusion.csv",
            "protocol": protocol_card(ctx, cell, probabilities.shape[1], selection), **extra}


# ----------------------------------------------------------------------------------- protocols
# The test list is read in one place, `_test_list`, and only after the cell's training and every
# choice it makes (on validation parts of the labeled subset) are done.

def _test_list(ctx: SweepContext, cell: Cell):
    return _load_manifest(ctx, cell.test_list)


def _run_finetune(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    train = _load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    recipe = FinetuneRecipe(**ctx.recipe["finetune"]).for_subset(len(train.relpaths))
    policy = ctx.policy()
    seed = cell.training_seed
    seed_everything(seed)
    model = policy.module(build_classifier(load_export(ctx.checkpoint), cell.weights, len(ctx.class_names),
                                           recipe.dropout))
    train_cache = ClipCache.open(ctx.train_cache)
    dataset = ClipDataset(train_cache, ctx.frames, sampling=recipe.sampling, seed=seed,
                          items=_indices(train_cache, train.relpaths, train.path.name),
                          first_frame=recipe.first_frame)
    started = time.perf_counter()
    info = finetune(model, dataset, recipe, policy=policy, workdir=ctx.path(f"cells/{cell.cell_id}"),
                    seed=seed, loader_workers=ctx.loader_workers, show_progress=ctx.show_progress)
    train_s = time.perf_counter() - started
    test = _test_list(ctx, cell)  # the final evaluation, after training
    eval_cache = ClipCache.open(ctx.eval_cache)
    test_set = ClipDataset(eval_cache, ctx.frames, sampling="uniform", num_clips=recipe.eval_clips,
                           items=_indices(eval_cache, test.relpaths, test.path.name))
    probabilities = predict_videos(model, test_set, policy, clips_per_batch=recipe.eval_batch,
                                   loader_workers=ctx.loader_workers)
    result = _metrics_result(ctx, cell, probabilities, test.labels, train.labels,
                             {"steps": info["steps"], "final_loss": info["final_loss"]},
                             "none: a fixed budget of iterations, the last weights (no choice made from data)")
    return result, {"train_s": train_s, "resumed_from": info["resumed_from"], "device": policy.describe()}


def feature_set(ctx: SweepContext, init: str, split_list: str, replicate: int = 0):
    """The cached features of every video of one list (`split_list` relative to out_dir), from
    the replicate's export (pretrained) or its weight draw (a random init); `ctx` is the replicate's."""
    spec = FeatureSpec(**ctx.recipe["features"])
    listing = _load_manifest(ctx, split_list)
    weight_seed = RANDOM_FEATURE_SEED + replicate
    bn_list = _load_manifest(ctx, _train_list_of(split_list)) if spec.bn_stats == "train_videos" else None
    key = FeatureKey(ctx.checkpoint_sha256, init, weight_seed if init in RANDOM_INITS else -1,
                     Path(split_list).stem, relpaths_sha256(listing.relpaths), ctx.frames, ctx.size,
                     ctx.data_key, asdict(spec), ctx.recipe["runtime"]["precision"],
                     relpaths_sha256(bn_list.relpaths) if bn_list is not None else "")

    def compute():
        policy = ctx.policy()
        seed_everything(weight_seed)
        backbone = policy.module(build_backbone(load_export(ctx.checkpoint), init))
        cache = ClipCache.open(ctx.eval_cache)
        if bn_list is not None:  # labels unused: the training videos' clips only set the statistics
            reestimate_batchnorm(backbone, ClipDataset(cache, ctx.frames, sampling="uniform", num_clips=spec.num_clips,
                                                       items=_indices(cache, bn_list.relpaths, bn_list.path.name)),
                                 spec, policy, loader_workers=ctx.loader_workers)
        dataset = ClipDataset(cache, ctx.frames, sampling="uniform", num_clips=spec.num_clips,
                              items=_indices(cache, listing.relpaths, listing.path.name))
        features = extract_features(backbone, dataset, spec, policy, loader_workers=ctx.loader_workers)
        return features, np.asarray(listing.labels), list(listing.relpaths)

    return cached_features(ctx.path("features"), key, compute)


def _train_list_of(split_list: str) -> str:
    """The training list of the split a list belongs to (`manifests/split<n>_<name>.txt`)."""
    match = re.match(r"split(\d+)_", Path(split_list).name)
    if match is None:
        raise ValueError(f"{split_list}: not a split's list (manifests/split<n>_<name>.txt)")
    return f"manifests/split{match.group(1)}_train.txt"


def _run_probe(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    recipe = ProbeRecipe(**ctx.recipe["probe"])
    train = _load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    train_all, _ = feature_set(ctx, cell.weights, f"manifests/split{cell.split}_train.txt", cell.replicate)
    row_of = {r: i for i, r in enumerate(train_all.relpaths)}  # built once: a full split has ~9.5k rows
    rows = [row_of[r] for r in train.relpaths]
    features, labels, groups = train_all.features[rows], np.asarray(train.labels), np.asarray(train.groups)
    started = time.perf_counter()
    if cell.protocol == "linear":
        fitted = fit_linear_probe(features, labels, groups, len(ctx.class_names), recipe, cell.seed)
    else:
        fitted = fit_knn(features, labels, groups, len(ctx.class_names), recipe, cell.seed, ctx.policy().device)
    fit_s = time.perf_counter() - started
    test = _test_list(ctx, cell)  # the final evaluation, after every choice was made
    test_all, _ = feature_set(ctx, cell.weights, cell.test_list, cell.replicate)
    result = _metrics_result(ctx, cell, fitted.predict_proba(test_all.features), test.labels, labels,
                             {"probe": fitted.info}, fitted.info["selection"])
    return result, {"fit_s": fit_s, "device": ctx.policy().describe()}


def _select_snapshot(ctx: SweepContext, cell: Cell) -> dict:
    """The snapshot of the cell's pretraining run that scores best on validation folds of the
    cell's own labeled subset (transfer.sweeps.trajectory); no test list is read."""
    train = _load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    train_list = f"manifests/split{cell.split}_train.txt"
    rows: list[int] = []

    def features_of(path: Path):
        export = load_export(path)
        snapshot = replace(ctx, checkpoint=str(path), checkpoint_sha256=export.sha256)
        full, _ = feature_set(snapshot, "pretrained", train_list, cell.replicate)
        if not rows:
            row_of = {r: i for i, r in enumerate(full.relpaths)}
            rows.extend(row_of[r] for r in train.relpaths)
        return full.features[rows], export.sha256, export.step

    return choose_snapshot(Path(ctx.checkpoint), features_of, np.asarray(train.labels), np.asarray(train.groups),
                           ProbeRecipe(**ctx.recipe["probe"]), len(ctx.class_names),
                           seed=max(cell.subset_seed, 0),
                           criterion="knn_val_acc" if cell.protocol == "knn" else "linear_val_acc")


def run_cell(ctx: SweepContext, cell: Cell) -> dict:
    """The job: returns {"cell_id", "status"}; never raises for an error inside the cell."""
    ledger = ctx.ledger
    entry = ledger.read(cell.cell_id)
    if entry is not None and entry["status"] == "done":
        return {"cell_id": cell.cell_id, "status": "done", "skipped": True}
    ctx = ctx.for_replicate(cell.replicate)
    ledger.mark_running(cell.cell_id, cell.as_dict())
    started = time.perf_counter()
    try:
        choice = None
        if cell.init == "selected":
            choice = _select_snapshot(ctx, cell)
            ctx = replace(ctx, checkpoint=choice["path"], checkpoint_sha256=choice["sha256"])
        if cell.protocol == "finetune":
            result, timing = _run_finetune(ctx, cell)
        elif cell.protocol in FEATURE_PROTOCOLS:
            result, timing = _run_probe(ctx, cell)
        else:
            raise ValueError(f"unknown protocol {cell.protocol!r}; expected one of {PROTOCOLS}")
        if choice is not None:
            result["snapshot"] = choice
            result["protocol"]["snapshot"] = f"step {choice['step']}: {choice['reason']}"
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
