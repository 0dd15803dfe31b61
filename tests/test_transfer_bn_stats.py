"""BatchNorm statistics re-estimated on real clips before a frozen probe (`features.bn_stats`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from runkit.device import DevicePolicy
from transfer.features import FeatureSpec, reestimate_batchnorm
from videodata.clips import ArrayClips


class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)

    def forward_features(self, x, layer):
        self.seen = getattr(self, "seen", 0) + len(x)
        return self.bn(self.conv(x))


def test_statistics_are_the_pass_average_and_the_backbone_stays_frozen():
    gen = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (6, 2, 4, 8, 8, 3), dtype=torch.uint8, generator=gen)  # 6 videos x 2 clips
    dataset = ArrayClips(clips)
    dataset.num_clips = 2
    backbone = TinyBackbone().eval()
    weights = {k: v.clone() for k, v in backbone.state_dict().items() if "running" not in k and "num_batches" not in k}
    spec = FeatureSpec(layer="block1", pooling="avg", num_clips=2, batch_size=4, bn_stats="train_videos")
    assert reestimate_batchnorm(backbone, dataset, spec, DevicePolicy()) == 1
    assert not backbone.training and backbone.seen == 12  # every clip, once
    # the cumulative average of the batch means of the conv outputs (3 batches of 2 videos x 2 clips)
    from videodata.clips import to_model_input
    with torch.no_grad():
        outs = [backbone.conv(to_model_input(clips[i:i + 2].flatten(0, 1))) for i in range(0, 6, 2)]
    means = torch.stack([o.mean(dim=(0, 2, 3, 4)) for o in outs]).mean(0)
    torch.testing.assert_close(backbone.bn.running_mean, means, rtol=1e-4, atol=1e-5)
    for name, value in backbone.state_dict().items():  # only the running statistics moved
        if name in weights:
            torch.testing.assert_close(value, weights[name])
    assert backbone.bn.momentum == 0.1  # restored after the pass


def test_a_backbone_without_batchnorm_is_left_alone():
    backbone = nn.Conv3d(3, 4, 3)
    spec = FeatureSpec(bn_stats="train_videos")
    assert reestimate_batchnorm(backbone, ArrayClips(torch.zeros((1, 1, 2, 4, 4, 3), dtype=torch.uint8)),
                                spec, None) == 0
    with pytest.raises(ValueError, match="features.bn_stats must be one of"):
        FeatureSpec(bn_stats="test_videos")


def test_a_probe_sweep_with_reestimated_statistics(tmp_path):
    """End to end: the option changes the features (another cache file) and the sweep runs."""
    from _tiny import TINY_RECIPE, tiny_sweep_spec, write_tiny_export
    from transfer.sweeps import run_sweep

    checkpoint = write_tiny_export(tmp_path / "pre" / "discriminator.pt")
    kw = dict(fractions=(1.0,), seeds=(0,), protocols=("linear",), inits=("pretrained",))
    stored = run_sweep(tiny_sweep_spec(tmp_path, checkpoint, "stored", **kw), report=False)
    real = run_sweep(tiny_sweep_spec(tmp_path, checkpoint, "real", overrides=(*TINY_RECIPE, "features.bn_stats=train_videos"),
                                     **kw), report=False)
    assert stored["status"]["done"] == real["status"]["done"] == 1
    feature_files = lambda s: sorted((Path(s["out_dir"]) / "features").glob("split1_*.npz"))
    assert len(feature_files(stored)) == len(feature_files(real)) == 2  # the train and the test list
    assert {p.name for p in feature_files(stored)}.isdisjoint(p.name for p in feature_files(real))
    for a, b in zip(feature_files(stored), feature_files(real)):
        a, b = np.load(a)["features"], np.load(b)["features"]
        assert a.shape == b.shape and not np.allclose(a, b)
