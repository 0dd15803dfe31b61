"""A video ViT backbone (VideoMAE's encoder: Tong et al., NeurIPS 2022), beside the 3D CNN.

A clip (B, 3, T, S, S) in [-1, 1] (the suite's input, as for the discriminator) is cut into
space-time tubelets of `tubelet` frames x `patch` x `patch` pixels by a Conv3d whose kernel equals
its stride, one token per tubelet: a (T/tubelet, S/patch, S/patch) grid, flattened in (t, h, w)
order. A positional embedding is added, either fixed sin-cos (`pos_embed="sincos"`, VideoMAE's
choice: its `get_sinusoid_encoding_table`, a 1-D sin-cos over the flattened token index, not a
separable 3-D one) or learned (`"learned"`, trunc-normal std 0.02). Then `depth` of timm's
transformer blocks (`timm.models.vision_transformer.Block`: pre-norm, joint space-time
self-attention over every token through `F.scaled_dot_product_attention`, GELU MLP) and a final
LayerNorm (eps 1e-6). No class token (VideoMAE has none). Init as VideoMAE: Linear layers Xavier
uniform with zero bias, LayerNorm 1 / 0, the patch Conv3d PyTorch's default.

The backbone contract (`pretrain.models.VideoBackbone`, what transfer calls): `forward_features(x,
layer)` returns the tokens of a layer laid out on their space-time grid, `(B, D, T', H', W')`, so
every protocol that pools a 3D CNN's map works unchanged (its "avg" pooling is the mean of the
tokens); `forward_tokens(x, layer)` gives the same numbers as tokens `(B, N, D)` and
`forward_pooled(x, layer)` their mean `(B, D)`. Layers: "block1".."block<depth>" (the residual
stream after that block) and "penultimate" (after the last block and the final LayerNorm: what the
MAE decoder reads). `head_pooling = "mean"` tells transfer's classifier to fine-tune with the mean
of the penultimate tokens and a linear head (VideoMAE's mean-pooling head) instead of the 3D CNN's
Conv3d over the whole map. State-dict keys are `features.*`, so the export path
(`pretrain.export`) loads it like the discriminator.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import partial

import torch
from torch import nn

POS_EMBEDS = ("sincos", "learned")
NORM_EPS = 1e-6

# VideoMAE's encoders (modeling_pretrain.py) and the decoders it pretrains them with; 16x224^2 clips
VIT_PRESETS = {
    "vit_s": {"dim": 384, "depth": 12, "heads": 6, "decoder_dim": 192, "decoder_depth": 4, "decoder_heads": 3},
    "vit_b": {"dim": 768, "depth": 12, "heads": 12, "decoder_dim": 384, "decoder_depth": 4, "decoder_heads": 6},
}


@dataclass
class ViTArch:
    """Everything `pretrain.models.build_backbone` needs to rebuild a VideoViT (exported as a dict)."""
    frames: int = 16
    size: int = 224
    patch: int = 16
    tubelet: int = 2
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pos_embed: str = "sincos"
    drop_path: float = 0.0            # stochastic depth, linear over the blocks (VideoMAE pretrains with 0)
    in_channels: int = 3
    kind: str = "vit"

    def as_dict(self) -> dict:
        return asdict(self)


def check_vit_shape(frames: int, size: int, patch: int, tubelet: int, dim: int, heads: int, depth: int = 1) -> None:
    """Raise ValueError naming the bad value: the tubelet must tile the clip, heads divide dim."""
    for name, value in (("frames", frames), ("size", size), ("patch", patch), ("tubelet", tubelet),
                        ("dim", dim), ("heads", heads), ("depth", depth)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"ViT needs {name} to be a positive int; got {name}={value!r}")
    if frames % tubelet:
        raise ValueError(f"ViT tubelet={tubelet} frames must divide the clip's frames={frames}")
    if size % patch:
        raise ValueError(f"ViT patch={patch} pixels must divide the clip's size={size}")
    if dim % heads:
        raise ValueError(f"ViT heads={heads} must divide dim={dim}")


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's `get_sinusoid_encoding_table`: (1, positions, dim) float32, sin on even, cos on
    odd channels, angle = pos / 10000^(2 (j // 2) / dim)."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).to(torch.float64) / dim)[None, :]
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)[None]


def transformer_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float = 0.0) -> nn.ModuleList:
    """`depth` of timm's ViT blocks as VideoMAE builds them (qkv bias, LayerNorm eps 1e-6, no layer
    scale), stochastic depth rising linearly to `drop_path`."""
    from timm.models.vision_transformer import Block  # timm where used: its import costs ~1.4 s

    rates = [drop_path * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # torch.linspace's values
    return nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=rate,
                               norm_layer=partial(nn.LayerNorm, eps=NORM_EPS)) for rate in rates)


def videomae_init(module: nn.Module) -> None:
    """VideoMAE's `_init_weights`: Linear Xavier uniform, bias 0; LayerNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Encoder(nn.Module):
    """The parts with weights (`features.*` in the state dict)."""

    def __init__(self, a: ViTArch, tokens: int):
        super().__init__()
        self.patch_embed = nn.Conv3d(a.in_channels, a.dim, kernel_size=(a.tubelet, a.patch, a.patch),
                                     stride=(a.tubelet, a.patch, a.patch))
        if a.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, tokens, a.dim))
        else:  # fixed: a buffer, rebuilt from the arch, never in the state dict
            self.register_buffer("pos_embed", sinusoid_table(tokens, a.dim), persistent=False)
        self.blocks = transformer_blocks(a.dim, a.depth, a.heads, a.mlp_ratio, a.drop_path)
        self.norm = nn.LayerNorm(a.dim, eps=NORM_EPS)


class VideoViT(nn.Module):
    """Tubelet embedding + joint space-time timm blocks; see the module docstring."""

    head_pooling = "mean"  # transfer.classifier: mean of the penultimate tokens -> linear head

    def __init__(self, frames: int = 16, size: int = 224, patch: int = 16, tubelet: int = 2, dim: int = 768,
                 depth: int = 12, heads: int = 12, mlp_ratio: float = 4.0, pos_embed: str = "sincos",
                 drop_path: float = 0.0, in_channels: int = 3, kind: str = "vit"):
        super().__init__()
        check_vit_shape(frames, size, patch, tubelet, dim, heads, depth)
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"ViT pos_embed must be one of {list(POS_EMBEDS)}; got {pos_embed!r}")
        if kind != "vit":
            raise ValueError(f"VideoViT arch kind must be 'vit'; got {kind!r}")
        self.arch = ViTArch(frames, size, patch, tubelet, dim, depth, heads, float(mlp_ratio), pos_embed,
                            float(drop_path), in_channels, kind)
        self.grid = (frames // tubelet, size // patch, size // patch)
        self.num_tokens = math.prod(self.grid)
        self.features = _Encoder(self.arch, self.num_tokens)
        self.feature_shape = (dim, *self.grid)
        self.LAYERS = tuple(f"block{i}" for i in range(1, depth + 1)) + ("penultimate",)
        videomae_init(self)
        if pos_embed == "learned":
            nn.init.trunc_normal_(self.features.pos_embed, std=0.02, a=-0.02, b=0.02)  # VideoMAE's truncation

    @property
    def num_features(self) -> int:
        return self.arch.dim

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        a = self.arch
        return (a.in_channels, a.frames, a.size, a.size)

    def no_weight_decay(self) -> set[str]:
        """Parameter names AdamW leaves undecayed besides biases and norms (timm's convention)."""
        return {"features.pos_embed"} if self.arch.pos_embed == "learned" else set()

    def _check_input(self, x: torch.Tensor) -> None:
        want = self.clip_shape
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"ViT built for clips (B, C, T, H, W) = (B, {want[0]}, {want[1]}, {want[2]}, "
                             f"{want[3]}); got {tuple(x.shape)}")

    def _blocks_for(self, layer: str) -> int:
        if layer not in self.LAYERS:
            raise ValueError(f"unknown feature layer {layer!r}; choose one of {list(self.LAYERS)}")
        return self.arch.depth if layer == "penultimate" else int(layer[len("block"):])

    # ------------------------------------------------------------------ tokens
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens with their positions: (B, C, T, H, W) -> (B, N, D), N in (t, h, w) order."""
        self._check_input(x)
        tokens = self.features.patch_embed(x).flatten(2).transpose(1, 2)
        return tokens + self.features.pos_embed.to(tokens.dtype)

    def encode(self, tokens: torch.Tensor, blocks: int | None = None, norm: bool = True) -> torch.Tensor:
        """Run embedded tokens (B, n, D), any subset of the clip's, through `blocks` blocks (all by
        default) and the final norm (when all blocks ran and `norm`)."""
        blocks = self.arch.depth if blocks is None else blocks
        for block in self.features.blocks[:blocks]:
            tokens = block(tokens)
        return self.features.norm(tokens) if norm and blocks == self.arch.depth else tokens

    def encode_visible(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """The encoder on the visible tokens alone (masked modelling): `visible` (B, n) holds token
        indices; returns the normed output (B, n, D). The blocks never see a masked token."""
        tokens = self.embed(x)
        tokens = tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.encode(tokens)

    def forward_tokens(self, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
        """Tokens (B, N, D) after `layer`."""
        blocks = self._blocks_for(layer)
        return self.encode(self.embed(x), blocks, norm=layer == "penultimate")

    def forward_pooled(self, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
        """The mean of `layer`'s tokens, (B, D)."""
        return self.forward_tokens(x, layer).mean(dim=1)

    def forward_features(self, x: torch.Tensor, layer: str = "penultimate") -> torch.Tensor:
        """`layer`'s tokens on their grid, (B, D, T/tubelet, S/patch, S/patch) (the 3D CNN's contract)."""
        tokens = self.forward_tokens(x, layer)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.arch.dim, *self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def build_vit(arch: dict) -> VideoViT:
    """A VideoViT from an export's `arch` dict; unknown keys are an error naming them."""
    known = {f.name for f in fields(ViTArch)}
    unknown = set(arch) - known
    if unknown:
        raise ValueError(f"unknown ViT arch keys {sorted(unknown)}; known: {sorted(known)}")
    return VideoViT(**arch)
