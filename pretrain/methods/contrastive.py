"""Contrastive video pretraining on the discriminator's backbone (CVRL / SimCLR for video).

Two clips of one video, at independent random starts, are a positive pair; every other clip of
the global batch is a negative. Each clip gets its own augmentation, the same on all of its
frames (temporally consistent: a random box zoom and a colour jitter; never a flip or a time
reversal, which would teach invariance to the direction of motion). The backbone's pooled
penultimate map goes through a projection head (Linear-BN-ReLU-Linear), and the loss is InfoNCE
(NT-Xent) over the 2N normalised embeddings at a temperature. The export is the backbone alone.

Data parallelism: embeddings are all-gathered across ranks with a differentiable gather, so each
rank's loss sees the whole global batch's negatives, and gradients are averaged as for every
method (each rank draws the augmentations of its own clips).
"""
from __future__ import annotations

import torch
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import BackboneMethod, DataView
from videodata.augment import color_jitter, random_zoom


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent over 2N embeddings: row i's positive is its pair, its negatives the other 2N - 2.
    Returns (mean loss, top-1 accuracy of finding the positive)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss = F.cross_entropy(logits, target)
    accuracy = (logits.argmax(dim=1) == target).float().mean()
    return loss, accuracy


class ProjectionHead(nn.Module):
    def __init__(self, features: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map.mean(dim=(2, 3, 4)))


class Contrastive(BackboneMethod):
    name = "contrastive"
    HEALTH = (("InfoNCE loss", (("loss", "loss"),)),
              ("pretext accuracy", (("pair_acc", "positive found (top-1)"),)),
              ("embeddings", (("embedding_std", "std per dim x sqrt(d)"), ("alignment", "positive distance"))))

    def __init__(self, cfg, policy, dist_info):
        super().__init__(cfg, policy, dist_info, cfg.method.contrastive, rng_offset=104729)

    def make_head(self, features: int) -> nn.Module:
        return ProjectionHead(features, self.settings.hidden_dim, self.settings.projection_dim)

    def data_view(self) -> DataView:
        return DataView(frames=self.cfg.model.frames, views=2, sampling="random")

    def _view(self, clips: torch.Tensor) -> torch.Tensor:
        c = self.settings
        return color_jitter(random_zoom(clips, c.min_crop, self.rng), c.color_jitter, self.rng)

    def _gather(self, z: torch.Tensor) -> torch.Tensor:
        """Every rank's embeddings in rank order, differentiable (this rank's part keeps its graph)."""
        if not self.dist.enabled:
            return z
        return torch.cat(dist_nn.all_gather(z))

    def train_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        # clips: (B, 2, C, T, H, W); one augmentation per view
        v1, v2 = self._view(clips[:, 0]), self._view(clips[:, 1])
        self.opt.zero_grad(set_to_none=True)
        with self.policy.autocast():
            z1, z2 = self.forward(v1), self.forward(v2)
        z1, z2 = self._gather(z1.float()), self._gather(z2.float())
        # Every rank computes the same global loss; the gather's backward sums the ranks' gradients
        # for this rank's embeddings (world_size x its share), and average_gradients divides by
        # world_size: the mean over ranks is the single-process gradient.
        loss, accuracy = info_nce(z1, z2, self.settings.temperature)
        self.update(loss)
        with torch.no_grad():
            e1, e2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
            std = torch.cat([e1, e2]).std(dim=0).mean() * e1.shape[1] ** 0.5  # ~1 when spread, 0 when collapsed
            alignment = (e1 - e2).norm(dim=1).pow(2).mean()
        return {"loss": loss.detach(), "pair_acc": accuracy, "embedding_std": std, "alignment": alignment}
