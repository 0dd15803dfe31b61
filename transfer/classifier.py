"""The pretrained backbone as an action classifier.

The original transfer recipe (cvondrick/videogan `main_ucf.lua`): drop the real/fake head, put
`VolumetricDropout(0.5)` (whole channels: `nn.Dropout3d`) and a new Conv3d 8w->K whose kernel is
the penultimate map's size (2x4x4 for the paper's 64x64x32 clips) on the penultimate map, and
fine-tune the whole network. The new layer keeps the framework's default init, as the original's
did (Torch7's uniform +-1/sqrt(fan_in) for weight and bias is PyTorch's Conv3d default too).
"Random init" is the same backbone built from fresh weights (its own init, seeded by the caller).
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.export import BackboneExport

INITS = ("pretrained", "random")


def build_backbone(export: BackboneExport, init: str) -> nn.Module:
    """The exported backbone with its weights ("pretrained") or from fresh init ("random")."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    return export.backbone(pretrained=init == "pretrained")


class VideoClassifier(nn.Module):
    """Backbone's penultimate map -> Dropout3d -> Conv3d over the whole map -> K logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        channels, *kernel = backbone.feature_shape
        self.dropout = nn.Dropout3d(dropout)
        self.head = nn.Conv3d(channels, num_classes, kernel_size=tuple(kernel))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_classifier(export: BackboneExport, init: str, num_classes: int, dropout: float = 0.5) -> VideoClassifier:
    return VideoClassifier(build_backbone(export, init), num_classes, dropout)
