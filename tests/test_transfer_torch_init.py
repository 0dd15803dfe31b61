"""`init=random_torch`: the backbone from Torch7's default initialisation (`net:reset()`, what
the original's fine-tuning script would have drawn for a random-weights baseline), a random-init
baseline like `random` (the GAN's N(0, 0.01)) everywhere: one weight draw per replicate, the
report's floor, one leaderboard row per backbone."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pretrain.export import load_export
from runkit.checkpoint import seed_everything
from transfer.classifier import RANDOM_INITS, build_backbone, torch7_reset
from transfer.report.compare import compare_sweeps
from transfer.report.registry import read_records, write_leaderboard
from transfer.report.stats import aggregate, paired_differences, replicate_name
from transfer.sweeps import plan_sweep, run_sweep
from transfer.sweeps.cells import REPLICATE_SEED_STRIDE, Cell
from transfer.sweeps.protocols import feature_set
from transfer.sweeps.plan import build_caches
from _tiny import tiny_sweep_spec, write_tiny_export

torch.set_num_threads(1)
UNIFORM_STD = 1 / math.sqrt(12)  # of U(0, 1); U(-b, b) has b * 2 * UNIFORM_STD


def _check_uniform(values: torch.Tensor, low: float, high: float, name: str) -> None:
    values = values.detach().flatten().double()
    width = high - low
    assert values.min() >= low and values.max() <= high, name
    if values.numel() >= 200:  # the draws fill the interval with a uniform's spread
        assert values.min() < low + 0.05 * width and values.max() > high - 0.05 * width, name
        assert abs(values.std().item() / (width * UNIFORM_STD) - 1) < 0.15, name
        assert abs(values.mean().item() - (low + high) / 2) < 0.1 * width, name


def test_random_torch_draws_every_layer_as_torch7_resets_it(tmp_path):
    """nn.VolumetricConvolution:reset: weight and bias U(-1/sqrt(kT*kW*kH*nInputPlane), +); nn.
    VolumetricBatchNormalization:reset: weight U(0, 1), bias 0, running mean 0, variance 1."""
    export = load_export(write_tiny_export(tmp_path / "d.pt", width=8))
    seed_everything(3)
    backbone = build_backbone(export, "random_torch")
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv3d)]
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(convs) == 4 and len(norms) == 3
    for i, conv in enumerate(convs):
        bound = 1 / math.sqrt(conv.in_channels * 4 * 4 * 4)  # every D conv: kernel 4x4x4
        _check_uniform(conv.weight, -bound, bound, f"conv{i}.weight")
        _check_uniform(conv.bias, -bound, bound, f"conv{i}.bias")
    for i, norm in enumerate(norms):
        _check_uniform(norm.weight, 0.0, 1.0, f"bn{i}.weight")
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    # not the GAN's N(0, 0.01): the first conv's bound is 1/sqrt(192) ~ 0.072, std ~ 0.042
    gan = build_backbone(export, "random")
    assert convs[0].weight.std() > 3 * next(m for m in gan.modules() if isinstance(m, nn.Conv3d)).weight.std()
    # one seed, one draw; another seed, another draw
    seed_everything(3)
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(),
                                                  build_backbone(export, "random_torch").state_dict().values()))
    seed_everything(4)
    assert not torch.equal(build_backbone(export, "random_torch").features[0].weight, convs[0].weight)


def test_torch7_reset_of_linear_and_unknown_layers():
    linear = torch7_reset(nn.Sequential(nn.Linear(400, 30), nn.ReLU(), nn.Conv2d(3, 5, (3, 2), bias=False)))
    _check_uniform(linear[0].weight, -1 / 20, 1 / 20, "linear.weight")  # nn.Linear: 1/sqrt(inputs)
    _check_uniform(linear[0].bias, -1 / 20, 1 / 20, "linear.bias")
    _check_uniform(linear[2].weight, -1 / math.sqrt(18), 1 / math.sqrt(18), "conv2d.weight")
    with pytest.raises(ValueError, match="no Torch7 reset for LayerNorm"):
        torch7_reset(nn.Sequential(nn.LayerNorm(4)))
    with pytest.raises(ValueError, match="parametrised"):
        torch7_reset(nn.utils.parametrizations.spectral_norm(nn.Conv3d(2, 2, 1)))


def test_random_torch_replicates_draw_their_own_weights():
    """As init=random: replicate r > 0 of a fine-tune cell seeds its weights from its own seed."""
    def cell(init, replicate):
        return Cell("finetune", init, 1, "f1", 1.0, 0, 5, "m.txt", "sha", "t.txt", "key", replicate)
    assert set(RANDOM_INITS) == {"random", "random_torch"}
    assert cell("random_torch", 0).training_seed == 5
    assert cell("random_torch", 2).training_seed == cell("random", 2).training_seed == 5 + 2 * REPLICATE_SEED_STRIDE
    assert cell("pretrained", 2).training_seed == 5


def test_a_sweep_with_random_torch_is_reported_as_a_random_init_baseline(tmp_path):
    export = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    spec = tiny_sweep_spec(tmp_path, export, "sweep", inits=("pretrained", "random_torch"), fractions=(1.0,),
                           seeds=(0,))
    summary = run_sweep(spec)
    assert summary["status"]["done"] == 4 and not summary["status"].get("failed")  # 2 protocols x 2 inits
    out = Path(summary["out_dir"])
    entries = [json.loads(p.read_text()) for p in (out / "ledger").glob("*.json")]
    cards = {(e["cell"]["protocol"], e["cell"]["init"]): e["result"]["protocol"]["weights"] for e in entries}
    assert cards[("finetune", "random_torch")] == cards[("linear", "random_torch")] == \
        "random weight draw 0 (Torch7's default init)"
    assert {r["init"] for r in aggregate(entries)} == {"pretrained", "random_torch"}
    assert replicate_name("random_torch") == replicate_name("random") == "random weight draws"
    paired = paired_differences(entries)
    assert sorted((r["protocol"], r["baseline"], r["pairs"]) for r in paired) == [
        ("finetune", "random_torch", 1), ("linear", "random_torch", 1)]
    assert "| linear vs random_torch |" in (out / "report" / "paired.md").read_text()
    # its features are its own draw, not init=random's
    plan = build_caches(plan_sweep(spec), workers=1)  # the sweep's caches, built already
    torch7 = feature_set(plan.ctx, "random_torch", "manifests/split1_train.txt")[0].features
    gan = feature_set(plan.ctx, "random", "manifests/split1_train.txt")[0].features
    assert torch7.shape == gan.shape and not np.allclose(torch7, gan)
    # the registry and the leaderboard: a random-init row with no export, named as such
    rows = [r for r in read_records(out) if r["init"] == "random_torch"]
    assert len(rows) == 2 and all(r["exports"] == [] for r in rows)
    board = write_leaderboard([str(out)], tmp_path / "board", labels=["tiny"])["leaderboard.md"].read_text()
    assert "random init, Torch7's default (tiny's backbone)" in board
    # a comparison reads it as the floor (label efficiency) and draws it as random init
    compare_sweeps([out], tmp_path / "cmp", labels=["tiny"])
    efficiency = {r["init"]: r for r in csv.DictReader(open(tmp_path / "cmp" / "comparison_efficiency.csv"))}
    assert {r["baseline"] for r in efficiency.values()} == {"random_torch"}
    assert "| linear | tiny | random_torch |" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert "(the floor)" in (tmp_path / "cmp" / "comparison.md").read_text()
