"""The checkpoint trajectory: when does the pretrained representation peak, and which snapshot to use.

A pretraining run with `trainer.snapshot_every` keeps backbone exports in `snapshots/`. With
`transfer/sweep.py --trajectory`, every pretrained cell gets a twin with init "selected": its job
probes every snapshot (and the final export) on the group-disjoint validation folds of that
cell's own labeled subset (frozen features, a linear probe at the C grid's middle value, or a
k-NN at the first k for k-NN cells), takes the best (ties: the later step) and runs its protocol
from it. The choice is per split and per labeled subset (the folds are seeded by the subset
draw, so every training seed of a draw gets the same snapshot), it uses only the labels that
cell may use, and the test list is never read for it. A subset with no group-disjoint
validation part (one video per class) keeps the last snapshot, and says so. The "pretrained"
cells beside it are the last snapshot, and random init is the floor for both.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from runkit.hashing import file_sha256
from transfer.knn import knn_predict
from transfer.probe import ProbeRecipe, flatten_clips, subsample_clips, validation_folds

log = logging.getLogger(__name__)

SNAPSHOT = re.compile(r"^discriminator_(\d+)\.pt$")


def snapshots(final_export: Path) -> list[Path]:
    """The run's snapshot exports in step order, then the final export."""
    folder = final_export.parent / "snapshots"
    found = sorted((int(m.group(1)), p) for p in folder.glob("*.pt") if (m := SNAPSHOT.match(p.name))) \
        if folder.is_dir() else []
    return [p for _, p in found] + [final_export]


def snapshot_hashes(final_export: Path) -> list[str]:
    """The SHA-256 of every snapshot: part of a selected cell's key (a changed run re-plans it)."""
    return [file_sha256(p) for p in snapshots(final_export)]


def validation_scores(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe,
                      num_classes: int, seed: int) -> dict | None:
    """Mean validation clip accuracy of a linear probe (C = the grid's middle value, the same for every
    snapshot) and of a k-NN (the first k), over group-disjoint folds of the labeled videos; None
    when the videos give no group-disjoint validation part."""
    x, y, row_groups = flatten_clips(subsample_clips(features, recipe.train_clips), labels, groups)
    folds, _ = validation_folds(y, row_groups, recipe.folds, seed)
    if not folds:
        return None
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


def choose_snapshot(final_export: Path, features_of, labels: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe,
                    num_classes: int, seed: int, criterion: str) -> dict:
    """Probe every snapshot of `final_export`'s run on validation folds of one labeled subset.
    `features_of(path) -> (features, sha256, step)` gives a snapshot's features of the subset's
    videos; `criterion` is "linear_val_acc" or "knn_val_acc". Returns the choice and every row."""
    paths = snapshots(final_export)
    if not validation_folds(labels, groups, recipe.folds, seed)[0]:  # decided by the groups alone
        _, sha256, step = features_of(paths[-1])
        return {"path": str(paths[-1]), "sha256": sha256, "step": step, "criterion": None, "rows": [],
                "reason": "no group-disjoint validation part in this labeled subset: the last snapshot"}
    rows = []
    for path in paths:
        features, sha256, step = features_of(path)
        scores = validation_scores(features, labels, groups, recipe, num_classes, seed)
        rows.append({"step": step, "path": str(path), "sha256": sha256, **scores})
    best = max(rows, key=lambda r: (r[criterion], r["step"]))
    log.info("trajectory: step %d chosen (%s %.3f on validation)", best["step"], criterion, best[criterion])
    return {"path": best["path"], "sha256": best["sha256"], "step": best["step"], "criterion": criterion,
            "rows": rows, "reason": f"best {criterion.replace('_', ' ')} on group-disjoint validation folds of "
                                    "this labeled subset"}
