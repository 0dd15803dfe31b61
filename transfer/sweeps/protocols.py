"""The transfer protocols a sweep runs, as a registry: one `Protocol` per name in `PROTOCOLS`.

A protocol is its run function, `run(ctx, cell) -> (result, timing)` (train or fit on the cell's
labeled subset, choose what it chooses on that subset's validation folds, then read the test list
once: `cells.read_test_list`), and what the rest of the suite needs to know of it:
- `job`: "train" (each cell is one job that trains a network: a GPU job on SLURM) or "features"
  (a split's cells share one job and the frozen features it extracts once);
- `sections`: the recipe sections its results depend on (each cell's key, a result's protocol key);
- `selection`: the validation criterion a `--trajectory` cell chooses its snapshot by;
- `title` and `style` for tables and figures.

A new protocol is a run function and one `register(Protocol(...))` line, at the end of this module.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pretrain.export import load_export
from runkit.checkpoint import seed_everything
from slurm.profiles import JOB_KINDS
from transfer.attentive import AttentiveRecipe, fit_attentive
from transfer.classifier import RANDOM_INITS, build_backbone, build_classifier
from transfer.evaluate import predict_videos
from transfer.features import (FeatureKey, FeatureSpec, cached_features, extract_features, reestimate_batchnorm,
                               relpaths_sha256)
from transfer.finetune import FinetuneRecipe, finetune
from transfer.knn import fit_knn
from transfer.probe import ProbeRecipe, fit_linear_probe
from transfer.sweeps.cells import (RANDOM_FEATURE_SEED, Cell, SweepContext, cache_indices, load_manifest,
                                   metrics_result, read_test_list)
from transfer.sweeps.trajectory import choose_snapshot
from videodata.cache import ClipCache
from videodata.clips import ClipDataset



@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    job: str                         # JOB_KINDS
    sections: tuple[str, ...]        # recipe sections the results depend on
    run: Callable[[SweepContext, Cell], tuple[dict, dict]]
    selection: str = "linear_val_acc"  # --trajectory's criterion (transfer.sweeps.trajectory)
    style: dict = field(default_factory=dict)  # matplotlib line style
    # "features" protocols: the frozen features their cells read, from the recipe (a dict)
    features: Callable[[dict], FeatureSpec] = lambda recipe: FeatureSpec(**recipe["features"])

    def __post_init__(self):
        if self.job not in JOB_KINDS:
            raise ValueError(f"protocol {self.name}: job must be one of {JOB_KINDS}, got {self.job!r}")


PROTOCOLS: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    if protocol.name in PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    PROTOCOLS[protocol.name] = protocol
    return protocol


def feature_protocols() -> tuple[str, ...]:
    """The protocols whose cells share a job's frozen features."""
    return tuple(name for name, p in PROTOCOLS.items() if p.job == "features")


def run_finetune(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    """Fine-tune the whole network on the cell's subset for the recipe's budget; test the last weights."""
    train = load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    recipe = FinetuneRecipe(**ctx.recipe["finetune"]).for_subset(len(train.relpaths))
    policy = ctx.policy()
    seed = cell.training_seed
    seed_everything(seed)
    model = policy.module(build_classifier(load_export(ctx.checkpoint), cell.weights, len(ctx.class_names),
                                           recipe.dropout))
    train_cache = ClipCache.open(ctx.train_cache)
    dataset = ClipDataset(train_cache, ctx.frames, sampling=recipe.sampling, seed=seed,
                          items=cache_indices(train_cache, train.relpaths, train.path.name),
                          first_frame=recipe.first_frame)
    started = time.perf_counter()
    info = finetune(model, dataset, recipe, policy=policy, workdir=ctx.path(f"cells/{cell.cell_id}"),
                    seed=seed, loader_workers=ctx.loader_workers, show_progress=ctx.show_progress)
    train_s = time.perf_counter() - started
    test = read_test_list(ctx, cell)  # the final evaluation, after training
    eval_cache = ClipCache.open(ctx.eval_cache)
    test_set = ClipDataset(eval_cache, ctx.frames, sampling="uniform", num_clips=recipe.eval_clips,
                           items=cache_indices(eval_cache, test.relpaths, test.path.name))
    probabilities = predict_videos(model, test_set, policy, clips_per_batch=recipe.eval_batch,
                                   loader_workers=ctx.loader_workers)
    result = metrics_result(ctx, cell, probabilities, test.labels, train.labels,
                             {"steps": info["steps"], "final_loss": info["final_loss"]},
                             "none: a fixed budget of iterations, the last weights (no choice made from data)")
    return result, {"train_s": train_s, "resumed_from": info["resumed_from"], "device": policy.describe()}


def feature_set(ctx: SweepContext, init: str, split_list: str, replicate: int = 0, spec: FeatureSpec | None = None):
    """The cached features of every video of one list (`split_list` relative to out_dir), from
    the replicate's export (pretrained) or its weight draw (a random init); `ctx` is the replicate's.
    `spec`: which features (default the recipe's `features` section)."""
    spec = spec or FeatureSpec(**ctx.recipe["features"])
    listing = load_manifest(ctx, split_list)
    weight_seed = RANDOM_FEATURE_SEED + replicate
    bn_list = load_manifest(ctx, _train_list_of(split_list)) if spec.bn_stats == "train_videos" else None
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
                                                       items=cache_indices(cache, bn_list.relpaths, bn_list.path.name)),
                                 spec, policy, loader_workers=ctx.loader_workers)
        dataset = ClipDataset(cache, ctx.frames, sampling="uniform", num_clips=spec.num_clips,
                              items=cache_indices(cache, listing.relpaths, listing.path.name))
        features = extract_features(backbone, dataset, spec, policy, loader_workers=ctx.loader_workers)
        return features, np.asarray(listing.labels), list(listing.relpaths)

    return cached_features(ctx.path("features"), key, compute)


def _train_list_of(split_list: str) -> str:
    """The training list of the split a list belongs to (`manifests/split<n>_<name>.txt`)."""
    match = re.match(r"split(\d+)_", Path(split_list).name)
    if match is None:
        raise ValueError(f"{split_list}: not a split's list (manifests/split<n>_<name>.txt)")
    return f"manifests/split{match.group(1)}_train.txt"


def run_linear(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    """Logistic regression on the frozen features; C chosen on the subset's validation folds."""
    return _run_probe(ctx, cell, lambda features, labels, groups, recipe: fit_linear_probe(
        features, labels, groups, len(ctx.class_names), recipe, cell.seed))


def run_knn(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    """k-NN on the frozen features (on the device); k chosen on the subset's validation folds."""
    return _run_probe(ctx, cell, lambda features, labels, groups, recipe: fit_knn(
        features, labels, groups, len(ctx.class_names), recipe, cell.seed, ctx.policy().device))


def run_attentive(ctx: SweepContext, cell: Cell) -> tuple[dict, dict]:
    """V-JEPA's attentive probe on the frozen tokens (transfer.attentive); lr and weight decay
    chosen on the subset's validation folds."""
    recipe = AttentiveRecipe(**ctx.recipe["attentive"])
    spec = attentive_features(ctx.recipe)
    return _run_probe(ctx, cell, lambda features, labels, groups, _: fit_attentive(
        features, labels, groups, len(ctx.class_names), recipe, _token_width(ctx, cell, spec.layer), cell.seed,
        ctx.policy().device), spec)


def attentive_features(recipe: dict) -> FeatureSpec:
    """The attentive probe's features: its layer's tokens, unpooled."""
    att, features = recipe["attentive"], recipe["features"]
    return FeatureSpec(layer=att["layer"], pooling="tokens", num_clips=att["num_clips"],
                       batch_size=features["batch_size"], bn_stats=features["bn_stats"])


def _token_width(ctx: SweepContext, cell: Cell, layer: str) -> int:
    """The channels of a layer's map (its tokens' width): shapes only, on the meta device."""
    backbone = build_backbone(load_export(ctx.checkpoint), cell.weights).eval().to("meta")
    with torch.no_grad():
        clip = torch.zeros(1, 3, ctx.frames, ctx.size, ctx.size, device="meta")
        return int(backbone.forward_features(clip, layer).shape[1])


def _run_probe(ctx: SweepContext, cell: Cell, fit: Callable, spec: FeatureSpec | None = None) -> tuple[dict, dict]:
    recipe = ProbeRecipe(**ctx.recipe["probe"])
    train = load_manifest(ctx, cell.manifest, cell.manifest_sha256)
    train_all, _ = feature_set(ctx, cell.weights, f"manifests/split{cell.split}_train.txt", cell.replicate, spec)
    row_of = {r: i for i, r in enumerate(train_all.relpaths)}  # built once: a full split has ~9.5k rows
    rows = [row_of[r] for r in train.relpaths]
    features, labels, groups = train_all.features[rows], np.asarray(train.labels), np.asarray(train.groups)
    started = time.perf_counter()
    fitted = fit(features, labels, groups, recipe)
    fit_s = time.perf_counter() - started
    test = read_test_list(ctx, cell)  # the final evaluation, after every choice was made
    test_all, _ = feature_set(ctx, cell.weights, cell.test_list, cell.replicate, spec)
    result = metrics_result(ctx, cell, fitted.predict_proba(test_all.features), test.labels, labels,
                             {"probe": fitted.info}, fitted.info["selection"])
    return result, {"fit_s": fit_s, "device": ctx.policy().describe()}


def select_snapshot(ctx: SweepContext, cell: Cell) -> dict:
    """The snapshot of the cell's pretraining run that scores best on validation folds of the
    cell's own labeled subset (transfer.sweeps.trajectory); no test list is read."""
    train = load_manifest(ctx, cell.manifest, cell.manifest_sha256)
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
                           criterion=PROTOCOLS[cell.protocol].selection)


register(Protocol("finetune", "fine-tune", "train", ("finetune",), run_finetune,
                  style={"linestyle": "-", "marker": "o"}))
register(Protocol("linear", "linear probe", "features", ("probe", "features"), run_linear,
                  style={"linestyle": "--", "marker": "s"}))
register(Protocol("knn", "k-NN", "features", ("probe", "features"), run_knn, selection="knn_val_acc",
                  style={"linestyle": ":", "marker": "^"}))
register(Protocol("attentive", "attentive probe", "features", ("attentive", "features"), run_attentive,
                  style={"linestyle": "-.", "marker": "D"}, features=attentive_features))
