"""k-NN probe on cached frozen features, on the device.

Every clip of a labeled video (or `train_clips` evenly spaced ones) is a neighbour candidate.
Features are standardised with the labeled subset's statistics, then each test clip takes its k
nearest labeled clips by cosine distance and votes with weights 1/distance (a neighbour at
distance 0 alone decides, as in scikit-learn's `KNeighborsClassifier(metric="cosine",
weights="distance")`, which this reproduces). Similarities are computed in blocks of test clips
with `torch.topk` on the device; test videos are scored by averaging their clips' vote
distributions (the same video-level rule as every protocol).
"""
from __future__ import annotations

import numpy as np
import torch

from transfer.probe import ProbeOutput, ProbeRecipe, flatten_clips, subsample_clips

BLOCK = 4096  # test clips per similarity block: bounds the (block x train clips) matrix


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


def knn_probe(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
              num_classes: int, recipe: ProbeRecipe, device: torch.device | str = "cpu") -> ProbeOutput:
    x, y, _ = flatten_clips(subsample_clips(train_features, recipe.train_clips), np.asarray(train_labels))
    videos, clips, dims = test_features.shape
    k = max(1, min(recipe.knn_k, x.shape[0]))
    train = torch.as_tensor(x, dtype=torch.float64, device=device)
    test = torch.as_tensor(test_features.reshape(videos * clips, dims), dtype=torch.float64, device=device)
    train, test = _standardise(train, test)
    proba = knn_votes(train, torch.as_tensor(y, device=device), test, k, num_classes)
    return ProbeOutput(proba.cpu().numpy().reshape(videos, clips, num_classes), {"k": k, "feature_dims": int(dims)})
