"""Feature cache (extract once, atomic, keyed) and the linear / k-NN probes."""
from __future__ import annotations

import numpy as np
import pytest

from transfer.evaluate import evaluate_clip_scores
from transfer.features import FeatureKey, FeatureSpec, cached_features
from transfer.knn import fit_knn
from transfer.probe import ProbeRecipe, choose_c, fit_linear_probe, flatten_clips, validation_folds, video_accuracy


def linear_probe(train, labels, test, classes, recipe, seed, groups=None):
    return fit_linear_probe(train, labels, groups, classes, recipe, seed)


def knn_probe(train, labels, test, classes, recipe, groups=None):
    return fit_knn(train, labels, groups, classes, recipe)


def key(**kw):
    base = dict(checkpoint_sha256="c" * 64, init="pretrained", init_seed=-1, list_name="split1_train",
                relpaths_sha256="r" * 64, frames=16, size=32, data_fingerprint="d", spec=vars(FeatureSpec()))
    base.update(kw)
    return FeatureKey(**base)


def test_features_are_computed_once_and_keyed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.ones((2, 3, 4), np.float32) * len(calls), [0, 1], ["a.avi", "b.avi"]

    first, fresh = cached_features(tmp_path, key(), compute)
    again, fresh2 = cached_features(tmp_path, key(), compute)
    assert (fresh, fresh2, len(calls)) == (True, False, 1)
    np.testing.assert_array_equal(first.features, again.features)
    assert again.relpaths == ["a.avi", "b.avi"] and list(again.labels) == [0, 1]
    # anything that changes the numbers is a different file
    _, fresh3 = cached_features(tmp_path, key(init="random", init_seed=0), compute)
    _, fresh4 = cached_features(tmp_path, key(spec=vars(FeatureSpec(pooling="avg"))), compute)
    _, fresh5 = cached_features(tmp_path, key(precision="bf16"), compute)
    assert fresh3 and fresh4 and fresh5 and len(calls) == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_extraction_leaves_no_file(tmp_path):
    def broken():
        raise RuntimeError("decoder died")

    with pytest.raises(RuntimeError):
        cached_features(tmp_path, key(), broken)
    assert not list(tmp_path.glob("*.npz"))


def blobs(videos_per_class, classes=4, clips=3, dims=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * 3
    labels = np.repeat(np.arange(classes), videos_per_class)
    feats = centres[labels][:, None, :] + rng.normal(scale=spread, size=(len(labels), clips, dims))
    return feats.astype(np.float32), labels


def test_linear_probe_separable_and_cv_on_train_only():
    train, ytr = blobs(6)
    test, yte = blobs(5, seed=0)[0][:20], np.repeat(np.arange(4), 5)
    fitted = linear_probe(train, ytr, test, 4, ProbeRecipe(c_grid=(0.01, 1.0), folds=3), seed=0)
    assert fitted.info["cv_folds"] == 3 and set(fitted.info["cv_scores"]) == {"0.01", "1"}
    proba = fitted.predict_proba(test)
    assert evaluate_clip_scores(proba, yte, scores_are_probabilities=True)["video_acc"] == 1.0
    assert np.allclose(proba.sum(-1), 1.0)


def test_one_video_per_class_falls_back_to_fixed_c():
    train, ytr = blobs(1)
    recipe = ProbeRecipe(fallback_c=0.5)
    out = linear_probe(train, ytr, train, 4, recipe, seed=0)
    assert out.info["C"] == 0.5 and out.info["cv_folds"] == 0 and "smallest class" in out.info["reason"]


def test_validation_folds_never_split_a_group():
    """UCF101 groups (same actors, same scene) stay on one side of every validation fold."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 12)                       # 3 classes x 12 videos
    groups = np.tile(np.repeat(np.arange(4), 3), 3) + 10 * np.repeat(np.arange(3), 12)  # 4 groups a class
    x, y, row_groups = flatten_clips(rng.normal(size=(36, 2, 5)), labels, groups)
    folds, reason = validation_folds(y, row_groups, 3, seed=0)
    assert len(folds) == 3 and not reason
    for train, held in folds:
        assert not set(row_groups[train]) & set(row_groups[held])
        assert set(y[held]) == {0, 1, 2}                        # stratified: every class validated
    # a class with a single group: no honest fold
    assert validation_folds(y, np.where(y == 0, 0, row_groups), 3, seed=0) == ([], "1 group(s) in the smallest class: no group-disjoint validation part")


def test_knn_k_is_chosen_on_validation_folds():
    train, ytr = blobs(6, spread=1.5)
    fitted = fit_knn(train, ytr, np.arange(len(ytr)), 4, ProbeRecipe(knn_k=(1, 5, 15), folds=3))
    assert fitted.info["cv_folds"] == 3 and set(fitted.info["cv_scores"]) == {"1", "5", "15"}
    best = max(fitted.info["cv_scores"].items(), key=lambda kv: (kv[1], int(kv[0])))
    assert fitted.k == int(best[0])


def test_cv_groups_clips_of_a_video():
    x = np.repeat(np.eye(4), 3, axis=0)  # 4 videos x 3 identical clips, 2 classes
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    groups = np.repeat(np.arange(4), 3)
    chosen = choose_c(x, y, groups, ProbeRecipe(c_grid=(0.1, 1.0), folds=3), seed=0)
    # 2 videos per class -> at most 2 folds; a clip's twins never sit on both sides of a fold
    assert chosen["cv_folds"] == 2


def test_knn_probe():
    train, ytr = blobs(4)
    out = knn_probe(train, ytr, train, 4, ProbeRecipe(knn_k=(3,), train_clips=2))
    assert evaluate_clip_scores(out.predict_proba(train), ytr, scores_are_probabilities=True)["video_acc"] == 1.0


def test_knn_on_the_device_equals_scikit_learn():
    """Distance-weighted cosine k-NN on standardised features, as KNeighborsClassifier computes it
    (including an exact match, which alone decides its query)."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    train, labels, test = rng.normal(size=(30, 3, 16)), rng.integers(0, 4, 30), rng.normal(size=(10, 3, 16))
    test[0, 0] = train[2, 1]
    out = knn_probe(train, labels, test, 5, ProbeRecipe(knn_k=(5,)))
    x, y = train.reshape(90, 16), np.repeat(labels, 3)
    scaler = StandardScaler().fit(x)
    model = KNeighborsClassifier(n_neighbors=5, metric="cosine", weights="distance").fit(scaler.transform(x), y)
    want = np.zeros((30, 5))
    want[:, model.classes_] = model.predict_proba(scaler.transform(test.reshape(30, 16)))
    np.testing.assert_allclose(out.predict_proba(test).reshape(30, 5), want, atol=1e-9)


def test_c_and_k_are_chosen_on_video_accuracy():
    """The choice is scored as reported: clip probabilities averaged per video, then argmax."""
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55]])  # one video of class 0, three clips
    y = np.zeros(3, dtype=int)
    assert video_accuracy(proba, y, np.zeros(3)) == 1.0       # mean 0.58 vs 0.42: right
    assert video_accuracy(proba, y, None) == 1 / 3            # clip by clip: one of three right
    train, ytr = blobs(6, spread=1.5)
    fitted = fit_knn(train, ytr, np.arange(len(ytr)), 4, ProbeRecipe(knn_k=(1, 5), folds=3))
    videos_per_fold = len(ytr) / 3
    for score in fitted.info["cv_scores"].values():  # a video-level score is a multiple of 1/videos
        assert abs(score * videos_per_fold * 3 - round(score * videos_per_fold * 3)) < 1e-6
