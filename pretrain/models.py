"""VGAN generators and discriminator (Vondrick, Pirsiavash, Torralba, NIPS 2016).

Paper-exact by default (cvondrick/videogan, main.lua): z is 100-d; G's BatchNorm uses Torch's
default eps 1e-5, D's uses 1e-3; D has no BN after its first conv; conv weights N(0, 0.01),
biases 0, BN weights N(1, 0.02). Every network is sized by `(width, frames, size)`: the paper is
(64, 32, 64). The four stride-2 stages fix frames and size to multiples of 16; the first G layer
and the last D layer take the kernel `(frames/16, size/16, size/16)` (paper: 2x4x4).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from pretrain.torchvision_video import TorchvisionBackbone
from pretrain.vit import build_vit

Z_DIM = 100
STAGES = 4  # stride-2 (de)convolutions between the 1/16 map and the clip


def check_clip_shape(frames: int, size: int, width: int) -> None:
    """Raise ValueError naming the bad value: frames and size must be positive multiples of 16."""
    factor = 2 ** STAGES
    for name, value in (("frames", frames), ("size", size)):
        if not isinstance(value, int) or value < factor or value % factor:
            raise ValueError(f"VGAN needs {name} to be a positive multiple of {factor} (four "
                             f"stride-2 stages); got {name}={value!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int; got width={width!r}")


def init_weights(module: nn.Module, std: float = 0.01) -> None:
    """The original's weights_init: conv N(0, std), bias 0; BN weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            weight = m.parametrizations.weight.original if parametrize.is_parametrized(m, "weight") else m.weight
            nn.init.normal_(weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------
class _BackgroundStream(nn.Module):
    """2D stream: z -> static background image (B, 3, size, size) in [-1, 1]."""

    def __init__(self, width: int, size: int, z_dim: int, bn_eps: float):
        super().__init__()
        w, s0 = width, size // 16
        chans = [8 * w, 4 * w, 2 * w, w]
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, chans[0], s0),
                                   nn.BatchNorm2d(chans[0], eps=bn_eps), nn.ReLU(True)]
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout, eps=bn_eps), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(w, 3, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class _VideoTrunk(nn.Module):
    """3D stream up to its width-channel map at (frames/2, size/2, size/2)."""

    def __init__(self, width: int, frames: int, size: int, z_dim: int, bn_eps: float):
        super().__init__()
        w = width
        chans = [8 * w, 4 * w, 2 * w, w]
        layers: list[nn.Module] = [nn.ConvTranspose3d(z_dim, chans[0], (frames // 16, size // 16, size // 16)),
                                   nn.BatchNorm3d(chans[0], eps=bn_eps), nn.ReLU(True)]
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose3d(cin, cout, 4, 2, 1), nn.BatchNorm3d(cout, eps=bn_eps), nn.ReLU(True)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None, None])


@dataclass
class GeneratorOutput:
    video: torch.Tensor                     # (B, 3, T, H, W) in [-1, 1]
    mask: torch.Tensor | None = None        # (B, 1, T, H, W) in [0, 1]
    foreground: torch.Tensor | None = None  # (B, 3, T, H, W)
    background: torch.Tensor | None = None  # (B, 3, H, W)


class TwoStreamGenerator(nn.Module):
    """The paper's generator: video = m * f + (1 - m) * b, b a static image repeated over time."""

    two_stream = True

    def __init__(self, width: int = 64, frames: int = 32, size: int = 64, z_dim: int = Z_DIM,
                 bn_eps: float = 1e-5, init_std: float = 0.01):
        super().__init__()
        check_clip_shape(frames, size, width)
        self.width, self.frames, self.size, self.z_dim = width, frames, size, z_dim
        self.background = _BackgroundStream(width, size, z_dim, bn_eps)
        self.trunk = _VideoTrunk(width, frames, size, z_dim, bn_eps)
        self.foreground = nn.Sequential(nn.ConvTranspose3d(width, 3, 4, 2, 1), nn.Tanh())
        self.mask = nn.Sequential(nn.ConvTranspose3d(width, 1, 4, 2, 1), nn.Sigmoid())
        init_weights(self, init_std)

    def forward_all(self, z: torch.Tensor) -> GeneratorOutput:
        _check_z(z, self.z_dim)
        f, m = self._foreground_and_mask(self.trunk(z))
        b = self.background(z)
        video = m * f + (1 - m) * b.unsqueeze(2)
        return GeneratorOutput(video=video, mask=m, foreground=f, background=b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_all(z).video

    def _foreground_and_mask(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`self.foreground(h), self.mask(h)` (the same numbers) as one transposed convolution with
        both weights side by side: oneDNN pads 3 and 1 output channels to a whole block, so two
        calls cost twice one 4-channel call (the G step 7.6 of 167 ms at width 16 on 2 CPU cores).
        The activations run on the whole 4-channel map and are sliced after: a channel slice of a
        channels_last map is strided, and tanh on it took 12 ms instead of 1.5 (bf16, same size)."""
        fg, mask = self.foreground[0], self.mask[0]
        out = F.conv_transpose3d(h, torch.cat([fg.weight, mask.weight], 1), torch.cat([fg.bias, mask.bias]),
                                 fg.stride, fg.padding)
        return self.foreground[1](out)[:, :3], self.mask[1](out)[:, 3:]


class OneStreamGenerator(nn.Module):
    """The paper's ablation: the 3D stream alone, no mask and no background."""

    two_stream = False

    def __init__(self, width: int = 64, frames: int = 32, size: int = 64, z_dim: int = Z_DIM,
                 bn_eps: float = 1e-5, init_std: float = 0.01):
        super().__init__()
        check_clip_shape(frames, size, width)
        self.width, self.frames, self.size, self.z_dim = width, frames, size, z_dim
        self.trunk = _VideoTrunk(width, frames, size, z_dim, bn_eps)
        self.head = nn.Sequential(nn.ConvTranspose3d(width, 3, 4, 2, 1), nn.Tanh())
        init_weights(self, init_std)

    def forward_all(self, z: torch.Tensor) -> GeneratorOutput:
        _check_z(z, self.z_dim)
        return GeneratorOutput(video=self.head(self.trunk(z)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_all(z).video


def _check_z(z: torch.Tensor, z_dim: int) -> None:
    if z.dim() != 2 or z.shape[1] != z_dim:
        raise ValueError(f"generator expects z of shape (B, {z_dim}); got {tuple(z.shape)}")


GENERATORS = {"two_stream": TwoStreamGenerator, "one_stream": OneStreamGenerator}


def build_generator(kind: str, **kwargs) -> nn.Module:
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; choose one of {sorted(GENERATORS)}")
    return GENERATORS[kind](**kwargs)


# --------------------------------------------------------------------------------------------
# Discriminator
# --------------------------------------------------------------------------------------------
@dataclass
class DiscriminatorArch:
    """Everything `build_discriminator` needs; exported as a plain dict in discriminator.pt."""

    width: int = 64
    frames: int = 32
    size: int = 64
    in_channels: int = 3
    norm: str = "batch"          # "batch" (paper) | "none"
    bn_eps: float = 1e-3
    spectral_norm: bool = False  # a training-time reparametrisation; exports bake it in
    leaky_slope: float = 0.2
    init_std: float = 0.01

    def as_dict(self) -> dict:
        return asdict(self)


class VideoBackbone(nn.Module):
    """The discriminator's 3D-conv stack without its real/fake head: what transfer fine-tunes and
    probes. Conv3d 3->w->2w->4w->8w (k4 s2 p1, LeakyReLU 0.2, BN on all but the first).

    Feature layers: "block1".."block4" (the map after each block's activation; "penultimate" is
    block4, `(B, 8w, T/16, S/16, S/16)`). State-dict keys are `features.*`, as in the
    Discriminator, so a discriminator export loads into it directly (its head keys dropped).
    """

    LAYERS = ("block1", "block2", "block3", "block4", "penultimate")

    def __init__(self, width: int = 64, frames: int = 32, size: int = 64, in_channels: int = 3,
                 norm: str = "batch", bn_eps: float = 1e-3, spectral_norm: bool = False,
                 leaky_slope: float = 0.2, init_std: float = 0.01):
        super().__init__()
        check_clip_shape(frames, size, width)
        if norm not in ("batch", "none"):
            raise ValueError(f"discriminator norm must be 'batch' or 'none'; got {norm!r}")
        self.arch = DiscriminatorArch(width, frames, size, in_channels, norm, bn_eps,
                                      spectral_norm, leaky_slope, init_std)
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(chans, chans[1:])):
            layers.append(nn.Conv3d(cin, cout, 4, 2, 1))
            if i > 0 and norm == "batch":
                layers.append(nn.BatchNorm3d(cout, eps=bn_eps))
            layers.append(nn.LeakyReLU(leaky_slope, inplace=True))
        self.features = nn.Sequential(*layers)
        self.feature_shape = (8 * width, frames // 16, size // 16, size // 16)
        if type(self) is VideoBackbone:
            self._finish_init()

    def _finish_init(self) -> None:
        if self.arch.spectral_norm:
            for m in self.modules():
                if isinstance(m, nn.Conv3d):
                    _spectral_norm(m)
        init_weights(self, self.arch.init_std)

    @property
    def num_features(self) -> int:
        return self.feature_shape[0]

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        a = self.arch
        return (a.in_channels, a.frames, a.size, a.size)

    def _check_input(self, x: torch.Tensor) -> None:
        want = self.clip_shape
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"discriminator built for clips (B, C, T, H, W) = (B, {want[0]}, {want[1]}, "
                             f"{want[2]}, {want[3]}); got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
        """The map after block `layer` (default the penultimate map, after its LeakyReLU)."""
        self._check_input(x)
        if layer in ("penultimate", "block4"):
            return self.features(x)
        if layer not in self.LAYERS:
            raise ValueError(f"unknown feature layer {layer!r}; choose one of {list(self.LAYERS)}")
        wanted, seen = int(layer[-1]), 0
        for module in self.features:
            x = module(x)
            if isinstance(module, nn.LeakyReLU):
                seen += 1
                if seen == wanted:
                    return x
        raise AssertionError("unreachable: every block ends in an activation")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


class Discriminator(VideoBackbone):
    """The backbone, then a Conv3d 8w->2 whose kernel covers the whole penultimate map: two
    real/fake logits (index 1 = real)."""

    def __init__(self, width: int = 64, frames: int = 32, size: int = 64, in_channels: int = 3,
                 norm: str = "batch", bn_eps: float = 1e-3, spectral_norm: bool = False,
                 leaky_slope: float = 0.2, init_std: float = 0.01):
        super().__init__(width, frames, size, in_channels, norm, bn_eps, spectral_norm, leaky_slope, init_std)
        self.classifier = nn.Conv3d(8 * width, 2, self.feature_shape[1:])
        self._finish_init()

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _checked_arch(arch: dict) -> dict:
    known = {f.name for f in fields(DiscriminatorArch)}
    unknown = set(arch) - known
    if unknown:
        raise ValueError(f"unknown discriminator arch keys {sorted(unknown)}; known: {sorted(known)}")
    return dict(arch)


def build_discriminator(arch: dict) -> Discriminator:
    """A Discriminator from the `arch` dict of an export; unknown keys are an error."""
    return Discriminator(**_checked_arch(arch))


def build_backbone(arch: dict) -> VideoBackbone:
    """The head-less backbone of that discriminator (what transfer uses); an export of another
    family's network (`arch["kind"]`: torchvision's video ResNets, the video ViT of
    `pretrain.vit`) builds that network."""
    if arch.get("kind") == "torchvision":
        return TorchvisionBackbone(**arch)
    if arch.get("kind") == "vit":
        return build_vit(arch)
    return VideoBackbone(**_checked_arch(arch))


def plain_discriminator(d: Discriminator) -> Discriminator:
    """A new D with spectral norm baked into ordinary weights (for export: transfer builds a
    plain D). Computed in eval mode so no power iteration runs and `d` is left untouched
    (no deepcopy: parametrised modules share a generated class that removal would edit)."""
    arch = {**d.arch.as_dict(), "spectral_norm": False}
    plain = Discriminator(**arch).to(next(d.parameters()).device)
    was_training = d.training
    d.eval()
    source = dict(d.named_modules())
    with torch.no_grad():
        for name, m in plain.named_modules():
            src = source[name]
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(src.weight)  # the parametrised weight, W / sigma, when SN is on
                m.bias.copy_(src.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.load_state_dict(src.state_dict())
    d.train(was_training)
    return plain.train(was_training)


# --------------------------------------------------------------------------------------------
# BatchNorm across data-parallel processes (torch's SyncBatchNorm is GPU-only)
# --------------------------------------------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is the sum of the
    ranks' gradients. Its backward calls itself, so double backward (R1) works too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad.contiguous())


class CrossRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the global batch of every rank.

    Works on any backend (gloo on CPU included) through a differentiable all-reduce. With one process it is exactly `F.batch_norm`. Same state_dict keys as
    BatchNorm2d/3d, so checkpoints and exports do not depend on it.
    """

    sync = True  # False: plain per-process BN (e.g. rank 0 alone drawing samples)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.sync and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats, self.momentum, self.eps)
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.tensor([float(x.numel() // x.shape[1])], dtype=torch.float32, device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_cross_rank_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` (in place) by a CrossRankBatchNorm with its state."""
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and not isinstance(child, CrossRankBatchNorm):
            new = CrossRankBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(next(child.buffers()).device)
            setattr(module, name, new)
        else:
            convert_cross_rank_bn(child)
    return module
