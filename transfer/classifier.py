"""The pretrained backbone as an action classifier.

The original transfer recipe (cvondrick/videogan `main_ucf.lua`): drop the real/fake head, put
`VolumetricDropout(0.5)` (whole channels: `nn.Dropout3d`) and a new Conv3d 8w->K whose kernel is
the penultimate map's size (2x4x4 for the paper's 64x64x32 clips) on the penultimate map, and
fine-tune the whole network. The new layer keeps the framework's default init, as the original's
did (Torch7's uniform +-1/sqrt(fan_in) for weight and bias is PyTorch's Conv3d default too).
"Random init" is the same backbone built from fresh weights (its own init, seeded by the caller):
`random` the GAN's N(0, 0.01) init, `random_torch` Torch7's default init (`torch7_reset`, what
main_ucf.lua's commented-out `net:reset()` would have drawn).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from pretrain.export import BackboneExport

INITS = ("pretrained", "random", "random_torch")
# the random-init baselines: fresh weights, one draw per replicate (transfer.sweeps.cells), the
# report's floor
RANDOM_INITS = ("random", "random_torch")


def torch7_reset(model: nn.Module) -> nn.Module:
    """Torch7's `net:reset()` on every layer of `model`, in place, as torch/nn's reset methods draw:
    a convolution's or linear layer's weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
    nInputPlane x kT x kH x kW (Linear: its inputs); BatchNorm's weight U(0, 1), bias 0, running
    mean 0 and variance 1. A layer with weights Torch7 has no reset for is an error, not kept."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                if parametrize.is_parametrized(module):
                    raise ValueError(f"torch7_reset: {type(module).__name__} is parametrised (spectral norm?)")
                bound = 1.0 / math.sqrt(module.weight[0].numel())  # one output's inputs x kernel
                module.weight.uniform_(-bound, bound)
                if module.bias is not None:
                    module.bias.uniform_(-bound, bound)
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                if module.affine:
                    module.weight.uniform_(0.0, 1.0)
                    module.bias.zero_()
            elif any(True for _ in module.parameters(recurse=False)):
                raise ValueError(f"torch7_reset: no Torch7 reset for {type(module).__name__}")
    return model


def build_backbone(export: BackboneExport, init: str) -> nn.Module:
    """The exported backbone with its weights ("pretrained") or from fresh init: the network's own
    ("random", the GAN's N(0, 0.01)) or Torch7's default ("random_torch")."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    backbone = export.backbone(pretrained=init == "pretrained")
    return torch7_reset(backbone) if init == "random_torch" else backbone


class VideoClassifier(nn.Module):
    """Backbone's penultimate map -> Dropout3d -> Conv3d over the whole map -> K logits. A token
    backbone (`backbone.head_pooling == "mean"`: pretrain.vit.VideoViT, whose map is its tokens on
    their grid) gets VideoMAE's head instead: the mean of the tokens -> Dropout -> Linear."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        channels, *kernel = backbone.feature_shape
        self.mean_pooled = getattr(backbone, "head_pooling", None) == "mean"
        if self.mean_pooled:
            self.dropout, self.head = nn.Dropout(dropout), nn.Linear(channels, num_classes)
        else:
            self.dropout = nn.Dropout3d(dropout)
            self.head = nn.Conv3d(channels, num_classes, kernel_size=tuple(kernel))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        if self.mean_pooled:
            return self.head(self.dropout(features.mean(dim=(2, 3, 4))))
        return self.head(self.dropout(features)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_classifier(export: BackboneExport, init: str, num_classes: int, dropout: float = 0.5) -> VideoClassifier:
    return VideoClassifier(build_backbone(export, init), num_classes, dropout)
