"""The checkpoint trajectory: when does the pretrained representation peak, and which snapshot to use.

A pretraining run with `trainer.snapshot_every` keeps backbone exports in `snapshots/`. With
`transfer/sweep.py --trajectory`, every snapshot (and the final export) is probed cheaply: frozen
features of the first split's whole training list, a linear probe (and a k-NN) fit on part of it
and scored on the rest, over the same group-disjoint validation folds the probes use for their
own choices; the test list is never touched. The snapshot with the best validation accuracy
(ties: the later one) becomes the sweep's checkpoint. `trajectory.json` records every row;
`report/trajectory.png` draws validation accuracy against pretraining step above the run's health
curves (`metrics.csv`).
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from pretrain.export import load_export
from pretrain.methods import METHODS
from runkit.atomic import atomic_write_json
from runkit.checkpoint import seed_everything
from runkit.device import DevicePolicy
from transfer.classifier import build_backbone
from transfer.features import FeatureKey, FeatureSpec, cached_features, extract_features, relpaths_sha256
from transfer.knn import knn_predict
from transfer.probe import ProbeRecipe, flatten_clips, subsample_clips, validation_folds
from transfer.report.figures import pyplot, save_figure
from transfer.sweeps.recipe import Recipe
from videodata.cache import ClipCache
from videodata.clips import ClipDataset

log = logging.getLogger(__name__)

SNAPSHOT = re.compile(r"^discriminator_(\d+)\.pt$")


def snapshots(final_export: Path) -> list[Path]:
    """The run's snapshot exports in step order, then the final export."""
    folder = final_export.parent / "snapshots"
    found = sorted((int(m.group(1)), p) for p in folder.glob("*.pt") if (m := SNAPSHOT.match(p.name))) \
        if folder.is_dir() else []
    return [p for _, p in found] + [final_export]


def _validation_scores(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe,
                       num_classes: int, seed: int) -> dict:
    """Mean validation clip accuracy of a linear probe (C = the grid's middle value, the same for every
    snapshot) and of a k-NN (the first k), over group-disjoint folds of the labeled videos."""
    x, y, row_groups = flatten_clips(subsample_clips(features, recipe.train_clips), labels, groups)
    folds, reason = validation_folds(y, row_groups, recipe.folds, seed)
    if not folds:
        raise ValueError(f"no validation part for the trajectory: {reason}")
    c = sorted(recipe.c_grid)[len(recipe.c_grid) // 2]
    linear, knn = [], []
    for train, held in folds:
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=c, max_iter=recipe.max_iter, tol=recipe.tol, random_state=seed)
        model.fit(scaler.transform(x[train]), y[train])
        linear.append(float((model.predict(scaler.transform(x[held])) == y[held]).mean()))
        knn.append(float((knn_predict(x[train], y[train], x[held], recipe.knn_k[0], num_classes, "cpu").argmax(1)
                          == y[held]).mean()))
    return {"linear_val_acc": float(np.mean(linear)), "knn_val_acc": float(np.mean(knn)), "folds": len(folds),
            "C": c, "k": recipe.knn_k[0]}


def probe_trajectory(final_export: Path, records: list, recipe: Recipe, *, cache_root: Path, out_dir: Path,
                     class_names: tuple[str, ...], data_key: str, workers: int = 2, threads: int = 1,
                     show_progress: bool = False) -> dict:
    """Probe every snapshot on validation parts of `records` (a split's training list); write
    `trajectory.json` and `report/trajectory.png`; return {"selected": path, "rows": [...]}.
    The fits run with BLAS at `threads` (the sweep's --threads), like a probe job's."""
    paths = snapshots(final_export)
    first = load_export(paths[-1])
    cache = ClipCache.build(records, cache_root, size=first.size, max_frames=recipe.cache.eval_max_frames,
                            stride=recipe.cache.eval_stride, workers=workers, show_progress=show_progress,
                            stabilise=recipe.cache.stabilise_config())
    index = {r.relpath: i for i, r in enumerate(cache.records)}
    items = [index[r.relpath] for r in records]
    labels = np.array([r.label for r in records])
    groups = np.array([r.group for r in records])
    spec = FeatureSpec(**asdict(recipe.features))
    policy = DevicePolicy.create(recipe.runtime.device, recipe.runtime.precision, recipe.runtime.channels_last)
    rows = []
    for path in paths:
        export = load_export(path)
        key = FeatureKey(export.sha256, "pretrained", -1, "trajectory-train", relpaths_sha256([r.relpath for r in records]),
                         export.frames, export.size, data_key, asdict(spec), recipe.runtime.precision)

        def compute(export=export):
            seed_everything(0)
            backbone = policy.module(build_backbone(export, "pretrained"))
            dataset = ClipDataset(cache, export.frames, sampling="uniform", num_clips=spec.num_clips, items=items)
            return extract_features(backbone, dataset, spec, policy), labels, [r.relpath for r in records]

        features, _ = cached_features(out_dir / "features", key, compute)
        with threadpool_limits(threads, user_api="blas"):
            scores = _validation_scores(features.features, labels, groups, recipe.probe, len(class_names), seed=0)
        rows.append({"step": export.step, "path": str(path), "sha256": export.sha256, **scores})
        log.info("trajectory: step %d: linear %.3f, k-NN %.3f (validation)", export.step,
                 scores["linear_val_acc"], scores["knn_val_acc"])
    best = max(rows, key=lambda r: (r["linear_val_acc"], r["step"]))
    result = {"run": str(final_export.parent), "selected": best["path"], "selected_step": best["step"],
              "criterion": "linear-probe accuracy on group-disjoint validation folds of the training list",
              "rows": rows}
    atomic_write_json(out_dir / "trajectory.json", result)
    plot_trajectory(result, final_export.parent / "metrics.csv", first.method, out_dir / "report")
    return result


def plot_trajectory(result: dict, metrics_csv: Path, method: str, out: Path) -> list[Path]:
    """Validation accuracy against pretraining step, above the run's health curves."""
    rows = result["rows"]
    panels = METHODS[method].HEALTH if method in METHODS else ()
    health = []
    if metrics_csv.is_file():
        with open(metrics_csv, newline="") as handle:
            health = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]
    fig, axes = pyplot().subplots(2 if health and panels else 1, 1, figsize=(4.5, 5.0 if health else 2.6),
                                  sharex=True, squeeze=False)
    top = axes[0][0]
    steps = [r["step"] for r in rows]
    top.plot(steps, [100 * r["linear_val_acc"] for r in rows], marker="o", markersize=3, label="linear probe")
    top.plot(steps, [100 * r["knn_val_acc"] for r in rows], marker="s", markersize=3, linestyle="--", label="k-NN")
    top.axvline(result["selected_step"], color="grey", linewidth=0.8, linestyle=":", label="selected")
    top.set_ylabel("validation acc. (%)")
    top.legend(fontsize=6, frameon=False)
    top.grid(alpha=0.3, linewidth=0.5)
    if len(axes) > 1:
        bottom = axes[1][0]
        x = [r["step"] for r in health]
        for _, keys in panels[:1]:
            for key, label in keys:
                if any(key in r for r in health):
                    bottom.plot(x, [r.get(key, np.nan) for r in health], linewidth=0.8, label=label)
        bottom.set_ylabel(panels[0][0])
        bottom.legend(fontsize=6, frameon=False)
        bottom.grid(alpha=0.3, linewidth=0.5)
        bottom.set_xlabel("pretraining step")
    else:
        top.set_xlabel("pretraining step")
    fig.tight_layout()
    return save_figure(fig, out, "trajectory")
