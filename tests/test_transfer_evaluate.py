"""Clip / video accuracy on hand-made logits."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.evaluate import evaluate_clip_scores, save_confusion, softmax, topk_accuracy


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


def test_softmax_is_stable_per_row_and_sums_to_one():
    logits = np.array([[1000.0, 1001.0], [0.0, 1.0], [-5.0, -5.0]])  # rows of very different scale
    p = softmax(logits)
    expected = 1 / (1 + np.e)
    np.testing.assert_allclose(p, [[expected, 1 - expected], [expected, 1 - expected], [0.5, 0.5]])
    np.testing.assert_allclose(softmax(np.array([[[3.0, 3.0, 3.0, 3.0]]])), [[[0.25] * 4]])


def test_topk_ties_go_to_the_lower_class_index():
    # three classes tie for the top; of the five tied at 0, the lowest indices fill top-5
    scores = np.array([[1.0, 0, 0, 0, 1, 0, 1, 0]] * 2)
    assert topk_accuracy(scores, np.array([2, 5]), 5) == 0.5  # top-5: 0, 4, 6, then 1, 2
    assert topk_accuracy(scores, np.array([3, 3]), 5) == 0.0
    assert topk_accuracy(scores, np.array([6, 7]), 3) == 0.5
    assert topk_accuracy(scores, np.array([7, 7]), 50) == 1.0  # k capped at the number of classes


def test_metric_keys_counts_and_integer_confusion():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 8))
    labels = [0, 0, 0, 1]
    order = [2, 3, 4, 5, 6, 1, 7, 0]  # video 3: its label (1) is the 6th best class of every clip
    for rank, c in enumerate(order):
        logits[3, :, c] += 100 - 10 * rank
    logits[:3, :, 0] += 100
    m = evaluate_clip_scores(logits, labels)
    assert set(m) == {"clip_acc", "video_acc", "video_top5", "clip_top5", "mean_class_acc", "test_videos",
                      "clips_per_video", "confusion"}
    assert m["clip_top5"] == pytest.approx(9 / 12) and m["video_top5"] == pytest.approx(0.75)
    assert (m["test_videos"], m["clips_per_video"]) == (4, 3)
    assert m["confusion"].dtype == np.int64 and m["confusion"].sum() == 4


def test_quantised_scores_and_float_labels_count_like_the_floats():
    # uint8 scores (a quantised model) must not wrap around when shifted for the softmax;
    # labels read back from a table may come as floats
    scores = np.array([[[100, 200], [90, 210]], [[220, 20], [230, 10]]], dtype=np.uint8)
    as_float = evaluate_clip_scores(scores.astype(np.float64), [1, 0])
    quantised = evaluate_clip_scores(scores, np.array([1.0, 0.0]))
    assert quantised["video_acc"] == as_float["video_acc"] == 1.0
    assert quantised["clip_acc"] == as_float["clip_acc"] == 1.0


def test_one_class_and_probability_averaging_over_three_classes():
    assert evaluate_clip_scores(np.zeros((2, 1, 1)), [0, 0])["video_acc"] == 1.0
    # averaged probabilities pick class 1 (0.375 vs 0.35); softmaxing the probabilities again
    # would flatten the confident clips and pick class 0
    probs = np.array([[[0.0, 0.45, 0.55], [0.7, 0.3, 0.0]]])
    assert evaluate_clip_scores(probs, [1], scores_are_probabilities=True)["video_acc"] == 1.0


def test_label_count_mismatch_message():
    with pytest.raises(ValueError, match=r"^2 videos of scores but 3 labels$"):
        evaluate_clip_scores(np.zeros((2, 1, 3)), [0, 1, 2])


def test_save_confusion_returns_both_paths(tmp_path):
    paths = save_confusion(tmp_path, np.eye(2, dtype=np.int64), ["A", "B"])
    assert paths == {"npy": str(tmp_path / "confusion.npy"), "csv": str(tmp_path / "confusion.csv")}
