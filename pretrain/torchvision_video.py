"""torchvision's video ResNets (`r3d_18`, `mc3_18`, `r2plus1d_18`) as transfer backbones, so that
the suite can put other people's pretraining (torchvision's Kinetics weights, SEVERE's released
checkpoints, any state_dict of that shape) on the same curve as its own methods.

    python transfer/sweep.py --checkpoint torchvision:r2plus1d_18                    # fresh init
    python transfer/sweep.py --checkpoint torchvision:r2plus1d_18=/path/weights.pth  # a state_dict

`pretrain.export.export_torchvision` turns such a spec into an ordinary backbone export, so
every transfer protocol, the feature cache and the report work unchanged. The backbone exposes the
interface of `pretrain.models.VideoBackbone`: `forward_features(x, layer)` with layers
"block1".."block4" (= torchvision's layer1..layer4) and "penultimate" (layer4), and
`feature_shape`. Its input is the suite's clip in [-1, 1]; it maps it to [0, 1] and normalises
with the Kinetics-400 mean and std these models were trained with. Clips are 16 frames of
112x112 (what torchvision's and SEVERE's weights expect).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from runkit.errors import UserError

MODELS = ("r3d_18", "mc3_18", "r2plus1d_18")
FRAMES, SIZE = 16, 112
# torchvision.models.video's transforms (Kinetics-400): applied to [0, 1] input
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# prefixes that wrappers put on a checkpoint's keys (DataParallel, SSL frameworks)
_WRAPPER_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "base_encoder.")
SPEC_PREFIX = "torchvision:"


class BackboneSpecError(UserError):
    """A `torchvision:<name>[=<weights>]` spec names an unknown model or a file that does not fit."""


@dataclass(frozen=True)
class TorchvisionArch:
    """What `pretrain.models.build_backbone` needs to rebuild the network (exported as a dict)."""
    name: str
    frames: int = FRAMES
    size: int = SIZE
    kind: str = "torchvision"

    def as_dict(self) -> dict:
        return asdict(self)


def _builder(name: str):
    from torchvision.models import video

    if name not in MODELS:
        raise BackboneSpecError(f"unknown torchvision video backbone {name!r}; choose one of {', '.join(MODELS)}")
    return getattr(video, name)


class TorchvisionBackbone(nn.Module):
    """A torchvision VideoResNet without its pooling and classifier; keys `features.<torchvision key>`."""

    LAYERS = ("block1", "block2", "block3", "block4", "penultimate")

    def __init__(self, name: str, frames: int = FRAMES, size: int = SIZE, kind: str = "torchvision"):
        super().__init__()
        self.arch = TorchvisionArch(name, frames, size, kind)
        net = _builder(name)(weights=None)
        del net.avgpool, net.fc  # transfer puts its own head on the penultimate map
        self.features = net
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        with torch.device("meta"):  # the map's shape without computing anything
            probe = _builder(name)(weights=None)
            x = torch.zeros(1, 3, frames, size, size)
            for block in (probe.stem, probe.layer1, probe.layer2, probe.layer3, probe.layer4):
                x = block(x)
        self.feature_shape = tuple(int(d) for d in x.shape[1:])

    @property
    def num_features(self) -> int:
        return self.feature_shape[0]

    def forward_features(self, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
        if layer not in self.LAYERS:
            raise ValueError(f"unknown feature layer {layer!r}; choose one of {list(self.LAYERS)}")
        want = (3, self.arch.frames, self.arch.size, self.arch.size)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{self.arch.name} built for clips (B, C, T, H, W) = (B, {want[0]}, {want[1]}, "
                             f"{want[2]}, {want[3]}); got {tuple(x.shape)}")
        x = ((x + 1) / 2 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        net = self.features
        x = net.stem(x)
        last = 4 if layer == "penultimate" else int(layer[-1])
        for block in (net.layer1, net.layer2, net.layer3, net.layer4)[:last]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """`torchvision:<name>[=<weights file>]` -> (name, path or None)."""
    body = spec[len(SPEC_PREFIX):]
    name, _, weights = body.partition("=")
    _builder(name)  # an unknown name fails here, listing the choices
    return name, (Path(weights).expanduser() if weights else None)


def load_weights(name: str, path: Path) -> dict[str, torch.Tensor]:
    """A state_dict file of `name` as backbone keys (`features.*`): wrapper prefixes stripped, the
    classifier (`fc.*`) dropped; anything else that does not fit is an error naming the keys."""
    if not path.is_file():
        raise BackboneSpecError(f"torchvision:{name}={path}: {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise BackboneSpecError(f"torchvision:{name}={path}: cannot load it with weights_only=True "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model", "model_state"):  # training checkpoints wrap the weights
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise BackboneSpecError(f"torchvision:{name}={path}: not a state_dict (a dict of tensors)")
    state = dict(blob)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = TorchvisionBackbone(name).features.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs "
                 f"{tuple(expected[wrong[0]].shape)})" if wrong else ""]
        raise BackboneSpecError(f"torchvision:{name}={path}: the keys do not fit {name}: "
                                + "; ".join(p for p in parts if p))
    return {f"features.{k}": v for k, v in state.items()}
