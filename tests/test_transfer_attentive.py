"""The attentive probe (transfer.attentive, protocol "attentive"): a cross-attention pooler over
frozen tokens, lr and weight decay chosen on group-disjoint validation folds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from transfer.attentive import AttentiveHead, AttentiveRecipe, fit_attentive
from transfer.features import pool


def token_blobs(videos_per_class: int, classes: int = 3, clips: int = 2, tokens: int = 6, dim: int = 8, seed: int = 0):
    """Each class is one token pattern placed at a random position among noise tokens: a mean over
    the tokens blurs it, attention can find it."""
    patterns = np.random.default_rng(123).normal(0, 3, (classes, dim))  # the classes, the same in every set
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (classes * videos_per_class, clips, tokens, dim)).astype(np.float32)
    labels = np.repeat(np.arange(classes), videos_per_class)
    for v, label in enumerate(labels):
        for c in range(clips):
            x[v, c, rng.integers(tokens)] += patterns[label]
    groups = np.arange(len(labels))
    return x.reshape(len(labels), clips, tokens * dim), labels, groups


def test_tokens_pooling_lays_out_the_map_positions():
    fmap = torch.arange(2 * 3 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 3, 1, 2, 2)  # B, C, T, H, W
    tokens = pool(fmap, "tokens").reshape(2, 4, 3)
    torch.testing.assert_close(tokens[1, 2], fmap[1, :, 0, 1, 0])  # position (t=0, h=1, w=0), all channels


def test_the_probe_learns_and_chooses_on_validation_folds_only():
    train, labels, groups = token_blobs(12)
    test, test_labels, _ = token_blobs(6, seed=1)
    recipe = AttentiveRecipe(epochs=15, batch_size=16, heads=2, lr_grid=(3e-3, 1e-2), wd_grid=(0.0, 0.1))
    fitted = fit_attentive(train, labels, groups, 3, recipe, dim=8, seed=0)
    assert len(fitted.info["cv_scores"]) == 4 and fitted.info["cv_folds"] == 2
    assert "validation folds" in fitted.info["selection"]
    proba = fitted.predict_proba(test)
    assert proba.shape == (18, 2, 3) and np.allclose(proba.sum(-1), 1, atol=1e-5)
    assert (proba.mean(1).argmax(1) == test_labels).mean() > 0.8
    # the choice depends on the training side alone: the same whatever the test list holds
    again = fit_attentive(train, labels, groups, 3, recipe, dim=8, seed=0)
    assert (again.info["lr"], again.info["weight_decay"]) == (fitted.info["lr"], fitted.info["weight_decay"])
    one_video_each, _, _ = token_blobs(1)
    fallback = fit_attentive(one_video_each, np.arange(3), np.arange(3), 3, recipe, dim=8, seed=0)
    assert (fallback.info["lr"], fallback.info["weight_decay"]) == (recipe.fallback_lr, recipe.fallback_wd)
    with pytest.raises(ValueError, match="not tokens of width 5"):
        fit_attentive(train, labels, groups, 3, recipe, dim=5, seed=0)


def test_heads_divide_the_width_and_bad_recipes_are_refused():
    assert AttentiveHead(6, 2, heads=4).pool.num_heads == 3
    with pytest.raises(ValueError, match="lr_grid"):
        AttentiveRecipe(lr_grid=())


def test_an_attentive_sweep_runs_end_to_end(tmp_path):
    from _tiny import TINY_RECIPE, tiny_sweep_spec, write_tiny_export
    from transfer.ledger import Ledger
    from transfer.sweeps import run_sweep

    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    overrides = (*TINY_RECIPE, "attentive.epochs=2", "attentive.num_clips=2", "attentive.lr_grid=[0.001,0.003]",
                 "attentive.wd_grid=[0.01]")
    summary = run_sweep(tiny_sweep_spec(tmp_path, checkpoint, "att", fractions=(1.0,), seeds=(0,),
                                        protocols=("attentive", "linear"), overrides=overrides))
    assert summary["status"]["done"] == 4 and summary["status"]["failed"] == 0
    out = Path(summary["out_dir"])
    entries = [e for e in Ledger(out / "ledger").entries() if e["cell"]["protocol"] == "attentive"]
    assert {e["cell"]["init"] for e in entries} == {"pretrained", "random"}
    info = entries[0]["result"]["probe"]
    assert info["tokens"] >= 1 and info["dim"] >= 1 and "selection" in info
    assert "attentive" in (out / "report.md").read_text()
    # its tokens are extracted once per init, beside the linear probe's pooled features
    assert len(list((out / "features").glob("split1_train_pretrained_*tokens*.npz"))) == 1
