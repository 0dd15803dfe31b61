"""Clip / video accuracy on hand-made logits."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.evaluate import evaluate_clip_scores, save_confusion


def test_video_accuracy_averages_softmax_over_clips():
    # video 0 (label 0): 2 of 3 clips say class 1 weakly, 1 clip says class 0 strongly
    #   -> clip accuracy 1/3 for this video, but the averaged softmax picks class 0
    # video 1 (label 2): every clip right
    # video 2 (label 1): every clip says class 0
    # The strong clip is in the middle: a "first clip only" or "last clip only" shortcut fails.
    big, small = 10.0, 0.2
    logits = np.array([
        [[0, small, 0], [big, 0, 0], [0, small, 0]],
        [[0, 0, 1], [0, 0, 2], [0, 0, 3]],
        [[1, 0, 0], [2, 0, 0], [3, 0, 0]],
    ])
    labels = [0, 2, 1]
    m = evaluate_clip_scores(logits, labels)
    assert m["clip_acc"] == pytest.approx(4 / 9)
    assert m["video_acc"] == pytest.approx(2 / 3)
    assert m["mean_class_acc"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["video_top5"] == 1.0  # only 3 classes: top-5 is capped at 3
    np.testing.assert_array_equal(m["confusion"], [[1, 0, 0], [1, 0, 0], [0, 0, 1]])


def test_video_score_is_the_mean_of_probabilities_not_of_logits():
    # One clip is sure of class 1; two lean to class 0. Mean softmax: class 0 (0.63 vs 0.37);
    # mean logits: class 1 (2.0 vs 3.3). The label is 0, so only probability averaging is right.
    logits = np.array([[[0.0, 10.0], [3.0, 0.0], [3.0, 0.0]]])
    m = evaluate_clip_scores(logits, [0])
    assert m["video_acc"] == 1.0 and m["clip_acc"] == pytest.approx(2 / 3)
    np.testing.assert_array_equal(m["confusion"], [[1, 0], [0, 0]])
    # the same clips in another order: the video's score does not depend on clip order
    assert evaluate_clip_scores(logits[:, ::-1], [0])["video_acc"] == 1.0


def test_top5_and_mean_class_on_unbalanced_labels():
    rng = np.random.default_rng(0)
    k = 8
    labels = np.array([0, 0, 0, 1])
    logits = rng.normal(size=(4, 2, k)) * 0.01
    # the true class is 6th best for video 3 -> outside top-5
    order = [2, 3, 4, 5, 6, 1, 7, 0]
    for rank, c in enumerate(order):
        logits[3, :, c] += 10 - rank
    logits[:3, :, 0] += 5
    m = evaluate_clip_scores(logits, labels)
    assert m["video_acc"] == pytest.approx(0.75)
    assert m["video_top5"] == pytest.approx(0.75)
    assert m["mean_class_acc"] == pytest.approx(0.5)  # class 0 all right, class 1 all wrong


def test_probabilities_are_not_softmaxed_again():
    probs = np.array([[[0.6, 0.4], [0.0, 1.0]]])  # averaged: 0.3 vs 0.7
    assert evaluate_clip_scores(probs, [1], scores_are_probabilities=True)["video_acc"] == 1.0


def test_shape_and_label_errors():
    with pytest.raises(ValueError, match="videos, clips, classes"):
        evaluate_clip_scores(np.zeros((2, 3)), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        evaluate_clip_scores(np.zeros((2, 1, 3)), [0, 3])


def test_confusion_files(tmp_path):
    matrix = np.array([[2, 1], [0, 3]])
    paths = save_confusion(tmp_path, matrix, ["A", "B"])
    np.testing.assert_array_equal(np.load(paths["npy"]), matrix)
    assert (tmp_path / "confusion.csv").read_text().splitlines() == ["true\\pred,A,B", "A,2,1", "B,0,3"]
