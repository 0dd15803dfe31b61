"""k-NN probe on cached frozen features, on the device.

Every clip of a labeled video (or `train_clips` evenly spaced ones) is a neighbour candidate.
Features are standardised with the labeled subset's statistics, then each test clip takes its k
nearest labeled clips by cosine distance and votes with weights 1/distance (a neighbour at
distance 0 alone decides, as in scikit-learn's `KNeighborsClassifier(metric="cosine",
weights="distance")`, which this reproduces). Similarities are computed in blocks of query clips
with `torch.topk` on the device. With several `probe.knn_k` values, k is chosen on the same
group-disjoint validation folds of the labeled subset as the linear probe's C, never on test data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from transfer.probe import ProbeRecipe, flatten_clips, subsample_clips, validation_folds, video_accuracy, video_rows

BLOCK = 4096  # query clips per similarity block: bounds the (block x labeled clips) matrix


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(0, keepdim=True)
    std = train.std(0, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay 0 (scikit-learn's rule)
    return (train - mean) / std, (test - mean) / std


@torch.no_grad()
def knn_votes(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, k: int,
              num_classes: int) -> torch.Tensor:
    """Distance-weighted cosine k-NN class distributions for each row of `test` (rows x classes)."""
    train = torch.nn.functional.normalize(train, dim=1)
    out = []
    for start in range(0, test.shape[0], BLOCK):
        block = torch.nn.functional.normalize(test[start:start + BLOCK], dim=1)
        similarity, index = (block @ train.T).topk(k, dim=1)
        distance = (1.0 - similarity).clamp_min(0.0)
        exact = distance <= 1e-7
        weight = torch.where(exact.any(1, keepdim=True), exact.to(distance.dtype), 1.0 / distance.clamp_min(1e-12))
        votes = torch.zeros(block.shape[0], num_classes, dtype=weight.dtype, device=weight.device)
        votes.scatter_add_(1, train_labels[index], weight)
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)


def knn_predict(x: np.ndarray, y: np.ndarray, queries: np.ndarray, k: int, num_classes: int, device) -> np.ndarray:
    """Class distributions of `queries` (rows x dims) from labeled rows `x`, `y`: standardised with
    `x`'s statistics, cosine, distance-weighted, k capped at the number of labeled rows."""
    train = torch.as_tensor(x, dtype=torch.float64, device=device)
    test = torch.as_tensor(queries, dtype=torch.float64, device=device)
    train, test = _standardise(train, test)
    k = max(1, min(k, x.shape[0]))
    return knn_votes(train, torch.as_tensor(y, device=device), test, k, num_classes).cpu().numpy()


def choose_k(x: np.ndarray, y: np.ndarray, groups: np.ndarray, recipe: ProbeRecipe, num_classes: int,
             seed: int, device, videos: np.ndarray | None = None) -> dict:
    """k with the best mean validation video accuracy (votes averaged per video of `videos`, the
    reported metric) over group-disjoint, stratified folds."""
    if len(recipe.knn_k) == 1:
        return {"k": recipe.knn_k[0], "cv_folds": 0, "cv_scores": {}, "reason": "one k in the grid"}
    splits, reason = validation_folds(y, groups, recipe.folds, seed)
    if not splits:
        return {"k": max(recipe.knn_k), "cv_folds": 0, "cv_scores": {}, "reason": reason}
    scores = {}
    for k in recipe.knn_k:
        accs = [video_accuracy(knn_predict(x[tr], y[tr], x[held], k, num_classes, device), y[held],
                               None if videos is None else videos[held]) for tr, held in splits]
        scores[k] = float(np.mean(accs))
    best = max(recipe.knn_k, key=lambda k: (scores[k], k))  # ties: more neighbours, the smoother vote
    return {"k": best, "cv_folds": len(splits), "cv_scores": {str(k): s for k, s in scores.items()}}


@dataclass
class FittedKNN:
    """The labeled clips and the chosen k; `predict_proba` is the only step that sees test data."""
    x: np.ndarray
    y: np.ndarray
    k: int
    num_classes: int
    device: torch.device | str = "cpu"
    info: dict = field(default_factory=dict)

    def predict_proba(self, test_features: np.ndarray) -> np.ndarray:
        videos, clips, dims = test_features.shape
        votes = knn_predict(self.x, self.y, test_features.reshape(videos * clips, dims), self.k, self.num_classes,
                       self.device)
        return votes.reshape(videos, clips, self.num_classes)


def fit_knn(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, num_classes: int,
            recipe: ProbeRecipe, seed: int = 0, device: torch.device | str = "cpu") -> FittedKNN:
    clips = subsample_clips(features, recipe.train_clips)
    x, y, row_groups = flatten_clips(clips, np.asarray(labels), groups)
    chosen = choose_k(x, y, row_groups, recipe, num_classes, seed, device, video_rows(clips))
    k = max(1, min(chosen["k"], x.shape[0]))
    return FittedKNN(x, y, k, num_classes, device,
                     {**chosen, "k": k, "feature_dims": int(features.shape[2]),
                      "selection": "k on group-disjoint validation folds of the labeled subset"})
