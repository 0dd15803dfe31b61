"""The VGAN discriminator as an action classifier.

The original transfer recipe (cvondrick/videogan `main_ucf.lua`): drop the real/fake head, put
Dropout(0.5) and a Conv3d 8w→K whose kernel is the penultimate map's size (2×4×4 for the paper's
64×64×32 clips) on the penultimate map, and fine-tune the whole network. "Random init" is the
same architecture built from fresh weights (the discriminator's own paper init).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXPORT_FORMAT = "vganbench.discriminator/1"
INITS = ("pretrained", "random")


class ExportError(RuntimeError):
    """A discriminator export is missing, unsafe or not in the expected format."""


@dataclass(frozen=True)
class DiscriminatorExport:
    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: dict
    frames: int
    size: int
    step: int
    data_fingerprint: str
    config: dict
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:12]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_export(path: str | Path) -> DiscriminatorExport:
    """Load `discriminator.pt` with `weights_only=True` and check its format (ARCHITECTURE.md)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"discriminator export not found: {path} (run `python pretrain/run.py` first)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExportError(f"cannot load discriminator export {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != EXPORT_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ExportError(f"{path} is not a discriminator export: format {found!r}, expected {EXPORT_FORMAT!r}")
    missing = [k for k in ("state_dict", "arch", "clip") if k not in blob]
    if missing:
        raise ExportError(f"discriminator export {path} lacks {missing}")
    clip = blob["clip"]
    return DiscriminatorExport(path=path, state_dict=blob["state_dict"], arch=dict(blob["arch"]),
                               frames=int(clip["frames"]), size=int(clip["size"]),
                               step=int(blob.get("step", -1)),
                               data_fingerprint=str(blob.get("data_fingerprint", "")),
                               config=dict(blob.get("config", {})), sha256=file_sha256(path))


def build_backbone(export: DiscriminatorExport, init: str) -> nn.Module:
    """The discriminator: the export's weights ("pretrained") or fresh paper init ("random")."""
    from pretrain.models import build_discriminator

    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    backbone = build_discriminator(export.arch)
    if init == "pretrained":
        backbone.load_state_dict(export.state_dict)
    return backbone


class VideoClassifier(nn.Module):
    """Backbone's penultimate map → Dropout → Conv3d over the whole map → K logits."""

    def __init__(self, backbone: nn.Module, num_classes: int, frames: int, size: int,
                 dropout: float = 0.5):
        super().__init__()
        self.backbone = backbone
        with torch.no_grad():
            was_training = backbone.training
            backbone.eval()
            probe = backbone.forward_features(torch.zeros(1, 3, frames, size, size))
            backbone.train(was_training)
        channels, *kernel = probe.shape[1:]
        self.feature_shape = tuple(probe.shape[1:])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Conv3d(channels, num_classes, kernel_size=tuple(kernel))
        # the original initialises every conv N(0, 0.01)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_classifier(export: DiscriminatorExport, init: str, num_classes: int,
                     dropout: float = 0.5) -> VideoClassifier:
    return VideoClassifier(build_backbone(export, init), num_classes, export.frames, export.size,
                           dropout)


def export_summary(export: DiscriminatorExport) -> dict[str, Any]:
    """What a result records about the checkpoint it used."""
    return {"path": str(export.path), "sha256": export.sha256, "step": export.step,
            "arch": export.arch, "frames": export.frames, "size": export.size,
            "data_fingerprint": export.data_fingerprint}
