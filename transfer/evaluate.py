"""Clip- and video-level accuracy from per-clip scores, and the batched multi-clip prediction.

Every test video contributes N clips spread evenly over the (cached) video, N=10 by default.
Clip accuracy scores each clip alone; video accuracy averages the N softmax vectors of a video
first (the standard protocol for UCF101). Top-1, top-5 and mean-class accuracy are reported at the
video level; the confusion matrix (rows = true class, columns = predicted) is saved as .npy and .csv.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from runkit.atomic import atomic_write_text, atomic_write_with
from runkit.device import DevicePolicy
from runkit.logging import progress
from videodata.clips import ClipDataset, collate_clips, loader_context
from videodata.clips import to_model_input


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the k highest scores (k capped at #classes)."""
    k = min(k, scores.shape[1])
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def mean_class_accuracy(matrix: np.ndarray) -> float:
    """Average over the classes present in the test set of each class's recall."""
    totals = matrix.sum(axis=1)
    present = totals > 0
    return float((np.diag(matrix)[present] / totals[present]).mean())


def evaluate_clip_scores(clip_scores: np.ndarray, labels: Sequence[int], *,
                         scores_are_probabilities: bool = False) -> dict:
    """Metrics from scores shaped (videos, clips, classes).

    `clip_scores` are logits unless `scores_are_probabilities` (a probe's predict_proba).
    Returns plain floats plus the video-level confusion matrix under "confusion".
    """
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if clip_scores.ndim != 3:
        raise ValueError(f"clip scores must be (videos, clips, classes), got shape {clip_scores.shape}")
    videos, clips, num_classes = clip_scores.shape
    if labels.shape != (videos,):
        raise ValueError(f"{videos} videos of scores but {labels.shape[0]} labels")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got {labels.min()}..{labels.max()}")
    probs = clip_scores if scores_are_probabilities else softmax(clip_scores)
    clip_pred = probs.argmax(axis=2)
    video_probs = probs.mean(axis=1)
    video_pred = video_probs.argmax(axis=1)
    matrix = confusion_matrix(labels, video_pred, num_classes)
    return {
        "clip_acc": float((clip_pred == labels[:, None]).mean()),
        "video_acc": float((video_pred == labels).mean()),
        "video_top5": topk_accuracy(video_probs, labels, 5),
        "clip_top5": topk_accuracy(probs.reshape(videos * clips, num_classes),
                                   np.repeat(labels, clips), 5),
        "mean_class_acc": mean_class_accuracy(matrix),
        "test_videos": int(videos),
        "clips_per_video": int(clips),
        "confusion": matrix,
    }


def save_confusion(folder: str | Path, matrix: np.ndarray, class_names: Sequence[str]) -> dict:
    """Write `confusion.npy` and `confusion.csv` (header row/column = class names) atomically."""
    folder = Path(folder)
    atomic_write_with(folder / "confusion.npy", lambda handle: np.save(handle, matrix))
    buffer = io.StringIO()
    buffer.write("true\\pred," + ",".join(class_names) + "\n")
    for name, row in zip(class_names, matrix):
        buffer.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")
    atomic_write_text(folder / "confusion.csv", buffer.getvalue())
    return {"npy": str(folder / "confusion.npy"), "csv": str(folder / "confusion.csv")}


@torch.no_grad()
def clip_probabilities(model: nn.Module, clips: torch.Tensor, policy: DevicePolicy) -> torch.Tensor:
    """Softmax of every clip of a uint8 batch of videos (B, N, T, H, W, 3): (B, N, classes) on the device."""
    b, n = clips.shape[:2]
    x = to_model_input(policy.to(clips.flatten(0, 1)), channels_last=policy.channels_last)
    with policy.autocast():
        logits = model(x)
    return logits.float().softmax(dim=1).reshape(b, n, -1)


@torch.no_grad()
def predict_videos(model: nn.Module, dataset: ClipDataset, policy: DevicePolicy, *, clips_per_batch: int = 64,
                   loader_workers: int = 0, show_progress: bool = False) -> np.ndarray:
    """Class probabilities of each clip of each video of `dataset` (sampling="uniform"): float32
    (videos, clips, classes), computed in batches on the device, in dataset order."""
    model.eval()
    videos_per_batch = max(1, clips_per_batch // dataset.num_clips)
    loader = DataLoader(dataset, batch_size=videos_per_batch, shuffle=False, num_workers=loader_workers,
                        collate_fn=collate_clips, pin_memory=policy.pin_memory,
                        multiprocessing_context=loader_context(loader_workers),
                        generator=torch.Generator().manual_seed(0))
    forward = policy.maybe_compile(model)
    out = [clip_probabilities(forward, clips, policy)
           for clips, _ in progress(loader, desc="evaluate", unit="batch", disable=not show_progress)]
    return torch.cat(out).cpu().numpy()  # one copy back at the end: the device never waits on the host
