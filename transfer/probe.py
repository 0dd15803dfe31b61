"""Linear probe (the paper's "logistic regression") on cached frozen features (k-NN: transfer.knn).

Every clip of a labeled video (or `train_clips` evenly spaced ones) is one training sample.
Features are standardised (statistics of the labeled subset only), then scikit-learn's `LogisticRegression` (multinomial by default in
current scikit-learn; no deprecated `multi_class=`/`penalty=` arguments) is fit with C chosen by
cross-validation on the labeled subset only: folds group the clips of one video together and
are stratified by class. With fewer than two videos in some class there is no honest fold, so
C falls back to `fallback_c` (recorded in the result). Test videos are scored by averaging the
predicted class probabilities of their clips.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler


@dataclass
class ProbeRecipe:
    c_grid: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
    folds: int = 3
    fallback_c: float = 0.1
    max_iter: int = 500
    tol: float = 1e-3
    train_clips: int = 0    # clips per labeled video used for fitting (0 = all; evenly spaced)
    knn_k: int = 10         # neighbours of the k-NN probe (transfer.knn)

    def __post_init__(self):
        self.c_grid = tuple(float(c) for c in self.c_grid)
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError(f"probe.c_grid must be a non-empty list of positive numbers, got {list(self.c_grid)}")
        for name in ("folds", "max_iter", "knn_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe.{name} must be >= 1, got {getattr(self, name)}")
        if self.train_clips < 0 or self.fallback_c <= 0 or self.tol <= 0:
            raise ValueError("probe.train_clips must be >= 0 and probe.fallback_c, probe.tol > 0")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["c_grid"] = list(self.c_grid)
        return out


def flatten_clips(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(videos, clips, dims) -> clip rows, clip labels, video id per row."""
    videos, clips, dims = features.shape
    return (features.reshape(videos * clips, dims), np.repeat(labels, clips),
            np.repeat(np.arange(videos), clips))


def full_proba(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    proba = np.zeros((x.shape[0], num_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def _logistic(c: float, recipe: ProbeRecipe, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=recipe.max_iter, tol=recipe.tol, random_state=seed)


def subsample_clips(features: np.ndarray, count: int) -> np.ndarray:
    """Keep `count` evenly spaced clips of each video (fitting cost grows with the rows)."""
    clips = features.shape[1]
    if count <= 0 or count >= clips:
        return features
    keep = np.unique(np.linspace(0, clips - 1, count).round().astype(int))
    return features[:, keep]


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe, seed: int) -> dict:
    """C with the best mean held-out clip accuracy over grouped, stratified folds."""
    per_class = Counter(y[np.unique(groups, return_index=True)[1]].tolist())
    folds = min(recipe.folds, min(per_class.values()))
    if folds < 2 or len(recipe.c_grid) == 1:
        return {"C": recipe.fallback_c if folds < 2 else recipe.c_grid[0], "cv_folds": 0,
                "cv_scores": {}, "reason": f"{min(per_class.values())} video(s) in the smallest class"}
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(x, y, groups))
    scores = {}
    for c in recipe.c_grid:
        accs = []
        for train, held in splits:
            scaler = StandardScaler().fit(x[train])
            model = _logistic(c, recipe, seed).fit(scaler.transform(x[train]), y[train])
            accs.append(float((model.predict(scaler.transform(x[held])) == y[held]).mean()))
        scores[c] = float(np.mean(accs))
    best = max(recipe.c_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regulariser
    return {"C": best, "cv_folds": folds, "cv_scores": {f"{c:g}": s for c, s in scores.items()}}


@dataclass
class ProbeOutput:
    test_proba: np.ndarray          # (test videos, clips, classes)
    info: dict = field(default_factory=dict)


def linear_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 num_classes: int, recipe: ProbeRecipe, seed: int) -> ProbeOutput:
    x, y, groups = flatten_clips(subsample_clips(train_features, recipe.train_clips), np.asarray(train_labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        chosen = choose_c(x, y, groups, recipe, seed)
        scaler = StandardScaler().fit(x)
        model = _logistic(chosen["C"], recipe, seed).fit(scaler.transform(x), y)
    videos, clips, dims = test_features.shape
    proba = full_proba(model, scaler.transform(test_features.reshape(videos * clips, dims)), num_classes)
    train_acc = float((model.predict(scaler.transform(x)) == y).mean())
    return ProbeOutput(proba.reshape(videos, clips, num_classes),
                       {**chosen, "train_clip_acc": train_acc, "feature_dims": int(dims)})
