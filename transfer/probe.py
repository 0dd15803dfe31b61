"""Linear probe (the paper's "logistic regression") on cached frozen features (k-NN: transfer.knn).

Every clip of a labeled video (or `train_clips` evenly spaced ones) is one training sample.
Features are standardised (statistics of the labeled subset only), then scikit-learn's
`LogisticRegression` (multinomial by default in current scikit-learn; no deprecated
`multi_class=`/`penalty=` arguments) is fit with C chosen on validation parts of the labeled
subset, never on the test set: `validation_folds` makes folds that are stratified by class and
disjoint in groups (UCF101's gXX, HMDB51's source movie: the clips of one group, who share actors
and scenes, never straddle a fold; videos without a group are their own group). With fewer than
two groups in some class there is no honest fold, so C falls back to `fallback_c` (recorded in
the result).

Fitting and predicting are separate steps (`fit_linear_probe` returns a fitted probe; the
caller loads the test features only after fitting), so no choice can see the test list.
"""
from __future__ import annotations

import warnings
from collections import defaultdict
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
    train_clips: int = 0      # clips per labeled video used for fitting (0 = all; evenly spaced)
    knn_k: tuple[int, ...] = (10,)  # neighbours of the k-NN probe (transfer.knn); several: chosen on validation

    def __post_init__(self):
        self.c_grid = tuple(float(c) for c in self.c_grid)
        self.knn_k = tuple(int(k) for k in self.knn_k)
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ValueError(f"probe.c_grid must be a non-empty list of positive numbers, got {list(self.c_grid)}")
        if not self.knn_k or min(self.knn_k) < 1:
            raise ValueError(f"probe.knn_k must be a non-empty list of integers >= 1, got {list(self.knn_k)}")
        for name in ("folds", "max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"probe.{name} must be >= 1, got {getattr(self, name)}")
        if self.train_clips < 0 or self.fallback_c <= 0 or self.tol <= 0:
            raise ValueError("probe.train_clips must be >= 0 and probe.fallback_c, probe.tol > 0")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["c_grid"], out["knn_k"] = list(self.c_grid), list(self.knn_k)
        return out


def flatten_clips(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(videos, clips, dims) -> clip rows, clip labels, and each row's group: the video's group
    when it has one (>= 0), else a group of its own."""
    videos, clips, dims = features.shape
    own = np.arange(videos) + 1_000_000  # never equal to a real group id
    video_groups = own if groups is None else np.where(np.asarray(groups) >= 0, np.asarray(groups), own)
    return features.reshape(videos * clips, dims), np.repeat(labels, clips), np.repeat(video_groups, clips)


def subsample_clips(features: np.ndarray, count: int) -> np.ndarray:
    """Keep `count` evenly spaced clips of each video (fitting cost grows with the rows)."""
    clips = features.shape[1]
    if count <= 0 or count >= clips:
        return features
    keep = np.unique(np.linspace(0, clips - 1, count).round().astype(int))
    return features[:, keep]


def video_rows(clip_features: np.ndarray) -> np.ndarray:
    """The video index of every row that `flatten_clips(clip_features)` gives."""
    videos, clips = clip_features.shape[:2]
    return np.repeat(np.arange(videos), clips)


def validation_folds(y: np.ndarray, groups: np.ndarray, wanted: int, seed: int) -> tuple[list, str]:
    """Group-disjoint, class-stratified folds of the labeled rows: (list of (train, held) index
    arrays, reason). No folds (and the reason) when some class has fewer than two groups."""
    groups_per_class: dict[int, set] = defaultdict(set)
    for label, group in zip(y.tolist(), groups.tolist()):
        groups_per_class[label].add(group)
    fewest = min(len(g) for g in groups_per_class.values())
    folds = min(wanted, fewest)
    if folds < 2:
        return [], f"{fewest} group(s) in the smallest class: no group-disjoint validation part"
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups)), ""


def full_proba(model, x: np.ndarray, num_classes: int) -> np.ndarray:
    proba = np.zeros((x.shape[0], num_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def video_accuracy(proba: np.ndarray, y: np.ndarray, videos: np.ndarray | None) -> float:
    """Accuracy of the mean clip probabilities per video (the reported metric, transfer.evaluate);
    rows without a video id (None) are scored one clip at a time."""
    if videos is None:
        return float((proba.argmax(1) == y).mean())
    ids, inverse = np.unique(videos, return_inverse=True)
    summed = np.zeros((len(ids), proba.shape[1]))
    np.add.at(summed, inverse, proba)
    label = np.zeros(len(ids), dtype=y.dtype)
    label[inverse] = y
    return float((summed.argmax(1) == label).mean())


def _logistic(c: float, recipe: ProbeRecipe, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=recipe.max_iter, tol=recipe.tol, random_state=seed)


def choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe, seed: int,
             videos: np.ndarray | None = None) -> dict:
    """C with the best mean validation video accuracy (clip probabilities averaged per video of
    `videos`, the metric that is reported) over group-disjoint, stratified folds."""
    splits, reason = validation_folds(y, groups, recipe.folds, seed)
    if not splits or len(recipe.c_grid) == 1:
        return {"C": recipe.fallback_c if not splits else recipe.c_grid[0], "cv_folds": 0, "cv_scores": {},
                "reason": reason or "one C in the grid"}
    scores = {}
    for c in recipe.c_grid:
        accs = []
        for train, held in splits:
            scaler = StandardScaler().fit(x[train])
            model = _logistic(c, recipe, seed).fit(scaler.transform(x[train]), y[train])
            proba = full_proba(model, scaler.transform(x[held]), int(y.max()) + 1)
            accs.append(video_accuracy(proba, y[held], None if videos is None else videos[held]))
        scores[c] = float(np.mean(accs))
    best = max(recipe.c_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regulariser
    return {"C": best, "cv_folds": len(splits), "cv_scores": {f"{c:g}": s for c, s in scores.items()}}


@dataclass
class FittedProbe:
    """A probe fit on the labeled subset alone; `predict_proba` is the only step that sees test data."""
    scaler: StandardScaler
    model: object
    num_classes: int
    info: dict = field(default_factory=dict)

    def predict_proba(self, test_features: np.ndarray) -> np.ndarray:
        """(test videos, clips, dims) -> class probabilities (test videos, clips, classes)."""
        videos, clips, dims = test_features.shape
        proba = full_proba(self.model, self.scaler.transform(test_features.reshape(videos * clips, dims)),
                           self.num_classes)
        return proba.reshape(videos, clips, self.num_classes)


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, num_classes: int,
                     recipe: ProbeRecipe, seed: int) -> FittedProbe:
    clips = subsample_clips(features, recipe.train_clips)
    x, y, row_groups = flatten_clips(clips, np.asarray(labels), groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        chosen = choose_c(x, y, row_groups, recipe, seed, video_rows(clips))
        scaler = StandardScaler().fit(x)
        model = _logistic(chosen["C"], recipe, seed).fit(scaler.transform(x), y)
    train_acc = float((model.predict(scaler.transform(x)) == y).mean())
    return FittedProbe(scaler, model, num_classes,
                       {**chosen, "train_clip_acc": train_acc, "feature_dims": int(features.shape[2]),
                        "selection": "C on group-disjoint validation folds of the labeled subset"})
