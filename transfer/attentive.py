"""The attentive probe (V-JEPA's frozen evaluation, Bardes et al. 2024): a cross-attention pooler
with one learnable query over a frozen backbone's tokens (a ViT's tokens, or a 3D CNN's feature
map read as its T'xH'xW' positions), then a linear head; trained with AdamW on the clips of the
labeled subset.

Its learning rate and weight decay are chosen on the subset's group-disjoint, class-stratified
validation folds (`transfer.probe.validation_folds`) by video accuracy (clip probabilities averaged
per video, the reported metric), then the head is trained again on the whole subset with the
chosen pair. No test list is read while choosing. (V-JEPA's evaluation trains several heads and
reports the best one on the list it tests on; that choice is not made here.) The pooler is timm's
`AttentionPoolLatent` (a latent query, multi-head cross-attention, an MLP), as in SigLIP's and
V-JEPA's heads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from transfer.probe import validation_folds, video_accuracy


@dataclass
class AttentiveRecipe:
    layer: str = "penultimate"      # the backbone layer whose tokens are pooled
    num_clips: int = 4              # clips per video (features are kept unpooled: memory grows with it)
    heads: int = 4                  # at most; the largest count that divides the token width
    epochs: int = 20
    batch_size: int = 64            # clips per step
    lr_grid: tuple[float, ...] = (1e-3, 3e-3)
    wd_grid: tuple[float, ...] = (0.01, 0.1)
    folds: int = 2
    fallback_lr: float = 1e-3       # when the subset has no group-disjoint validation part
    fallback_wd: float = 0.01

    def __post_init__(self):
        if self.num_clips < 1 or self.heads < 1 or self.epochs < 1 or self.batch_size < 1 or self.folds < 2:
            raise ValueError("attentive: num_clips, heads, epochs and batch_size must be >= 1 and folds >= 2")
        if not self.lr_grid or not self.wd_grid or min(self.lr_grid) <= 0 or min(self.wd_grid) < 0:
            raise ValueError(f"attentive: lr_grid needs values > 0 and wd_grid values >= 0, got "
                             f"{list(self.lr_grid)}, {list(self.wd_grid)}")


class AttentiveHead(nn.Module):
    """(B, N, D) tokens -> (B, classes) logits: a latent query's cross-attention, then a linear layer."""

    def __init__(self, dim: int, num_classes: int, heads: int):
        super().__init__()
        from timm.layers import AttentionPoolLatent  # timm where used: its import is slow

        heads = max(h for h in range(1, heads + 1) if dim % h == 0)
        self.pool = AttentionPoolLatent(dim, num_heads=heads, norm_layer=nn.LayerNorm)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(tokens))


@dataclass
class FittedAttentive:
    """A head fit on the labeled subset alone; `predict_proba` is the only step that sees test data."""
    model: AttentiveHead
    dim: int
    device: torch.device
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def predict_proba(self, test_features: np.ndarray) -> np.ndarray:
        """(videos, clips, tokens x dim) -> class probabilities (videos, clips, classes)."""
        videos, clips, _ = test_features.shape
        tokens = _tokens(test_features, self.dim)
        self.model.eval()
        out = [torch.softmax(self.model(batch.to(self.device)), dim=1).cpu()
               for batch in torch.split(tokens, 256)]
        return torch.cat(out).numpy().reshape(videos, clips, -1)


def _tokens(features: np.ndarray, dim: int) -> torch.Tensor:
    """(videos, clips, N * dim) flattened token features -> (videos * clips, N, dim) float32."""
    videos, clips, flat = features.shape
    if flat % dim:
        raise ValueError(f"attentive probe: {flat} features per clip are not tokens of width {dim}")
    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).reshape(videos * clips, flat // dim, dim)


def _train(tokens: torch.Tensor, labels: torch.Tensor, num_classes: int, dim: int, recipe: AttentiveRecipe,
           lr: float, wd: float, seed: int, device: torch.device) -> AttentiveHead:
    torch.manual_seed(seed)
    model = AttentiveHead(dim, num_classes, recipe.heads).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps_per_epoch = max(1, -(-len(tokens) // recipe.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(tokens), generator=gen)
        for batch in torch.split(order, recipe.batch_size):
            loss = nn.functional.cross_entropy(model(tokens[batch].to(device)), labels[batch].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model


def fit_attentive(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, num_classes: int,
                  recipe: AttentiveRecipe, dim: int, seed: int, device: torch.device | str = "cpu") -> FittedAttentive:
    """Choose (lr, weight decay) on validation folds of the labeled videos, then fit on all of them.
    `features`: (videos, clips, N * dim), the layer's tokens flattened (features.pool "tokens")."""
    device = torch.device(device)
    labels = np.asarray(labels)
    videos, clips, _ = features.shape
    tokens = _tokens(features, dim)
    clip_labels = torch.from_numpy(np.repeat(labels, clips)).long()
    own = np.arange(videos) + 1_000_000
    video_groups = own if groups is None else np.where(np.asarray(groups) >= 0, np.asarray(groups), own)
    splits, reason = validation_folds(labels, video_groups, recipe.folds, seed)
    grid = [(lr, wd) for lr in recipe.lr_grid for wd in recipe.wd_grid]
    scores: dict[str, float] = {}
    if splits and len(grid) > 1:
        rows = np.arange(videos * clips).reshape(videos, clips)
        for lr, wd in grid:
            accs = []
            for train, held in splits:
                fit_rows = torch.from_numpy(rows[train].ravel())
                model = _train(tokens[fit_rows], clip_labels[fit_rows], num_classes, dim, recipe, lr, wd, seed, device)
                proba = FittedAttentive(model, dim, device).predict_proba(features[held])
                accs.append(video_accuracy(proba.reshape(-1, proba.shape[-1]), np.repeat(labels[held], clips),
                                           np.repeat(np.arange(len(held)), clips)))
            scores[f"lr={lr:g},wd={wd:g}"] = float(np.mean(accs))
        lr, wd = grid[int(np.argmax([scores[f"lr={lr:g},wd={wd:g}"] for lr, wd in grid]))]
        how = f"lr and weight decay on {len(splits)} group-disjoint validation folds of the labeled subset"
    else:
        lr, wd = (recipe.fallback_lr, recipe.fallback_wd) if not splits else grid[0]
        how = reason or "one (lr, weight decay) pair in the grid"
    model = _train(tokens, clip_labels, num_classes, dim, recipe, lr, wd, seed, device)
    return FittedAttentive(model, dim, device, {"lr": lr, "weight_decay": wd, "cv_folds": len(splits) if scores else 0,
                                                "cv_scores": scores, "tokens": int(tokens.shape[1]), "dim": dim,
                                                "selection": how})
