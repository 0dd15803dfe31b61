"""A new transfer protocol is a run function and one registry line (`transfer.sweeps.protocols`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _tiny import tiny_sweep_spec, write_tiny_export
from slurm.profiles import JOB_KINDS
from transfer.sweeps import SweepError, plan_sweep, run_sweep
from transfer.sweeps import protocols as protocols_mod
from transfer.sweeps.protocols import PROTOCOLS, Protocol


class Centroids:
    """Nearest class mean of the clips' features, as softmax scores per clip; chooses nothing."""

    def __init__(self, features, labels, classes):
        means = np.zeros((classes, features.shape[-1]), np.float32)
        for c in range(classes):
            if (labels == c).any():
                means[c] = features[labels == c].reshape(-1, features.shape[-1]).mean(0)
        self.means = means
        self.info = {"selection": "none: class means of every labeled clip"}

    def predict_proba(self, features):
        logits = -((features[..., None, :] - self.means) ** 2).sum(-1)
        logits -= logits.max(-1, keepdims=True)
        return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def run_centroids(ctx, cell):
    return protocols_mod._run_probe(ctx, cell, lambda features, labels, groups, recipe:
                                    Centroids(features, labels, len(ctx.class_names)))


def test_a_registered_protocol_runs_end_to_end_and_is_reported(tmp_path, monkeypatch):
    monkeypatch.setitem(PROTOCOLS, "centroids", Protocol("centroids", "class means", "features", ("features",),
                                                         run_centroids, style={"marker": "x"}))
    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    summary = run_sweep(tiny_sweep_spec(tmp_path, checkpoint, "sweep", fractions=(1.0,), seeds=(0,),
                                        protocols=("centroids", "linear"), inits=("pretrained",)))
    assert summary["status"]["done"] == 2
    out = Path(summary["out_dir"])
    plan = json.loads((out / "sweep.json").read_text())
    assert plan["protocols"]["centroids"] == {"title": "class means", "job": "features", "sections": ["features"],
                                              "style": {"marker": "x"}}
    assert "centroids" in (out / "report.md").read_text()
    # its cells share the split's features job with the linear probe's (one extraction)
    assert len(list((out / "features").glob("split1_train_pretrained_*.npz"))) == 1


def test_the_registry_rejects_what_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="job must be one of"):
        Protocol("x", "x", "gpu", ("probe",), run_centroids)
    with pytest.raises(ValueError, match="registered twice"):
        protocols_mod.register(PROTOCOLS["linear"])
    assert {p.job for p in PROTOCOLS.values()} <= set(JOB_KINDS)
    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    with pytest.raises(SweepError, match="--protocols.*centroids"):
        plan_sweep(tiny_sweep_spec(tmp_path, checkpoint, "bad", protocols=("centroids",)))
