"""Contrastive video pretraining on the discriminator's backbone: CVRL (Qian et al., CVPR 2021).

Two clips of one video are a positive pair, every other clip of the global batch a negative. As
in CVRL's TF2 code (tensorflow/models official/projects/video_ssl):

- temporal interval sampling over the whole cached video (`cvrl_starts`): the gap between the two
  starts drawn from a linearly decreasing density (CVRL's power 1), the first start uniform where
  both clips fit, the pair's order shuffled; a video shorter than a clip gives two independent
  starts that wrap around, as CVRL's loader tiles it;
- CVRL's view augmentation on each clip (videodata.augment.cvrl_params / cvrl_augment: random
  resized crop, flip, colour jitter, grayscale, blur 1.0 / 0.1, solarisation 0 / 0.2), one draw
  per clip for all of its frames; `flip=false` on sets whose classes are directions (the
  synthetic set's MoveLeft / MoveRight);
- both views through the backbone in one batch, so every BatchNorm's statistics cover both
  (SyncBatchNorm or CrossRankBatchNorm across ranks, `Method.prepare`);
- the backbone's pooled last map through a projection head of `hidden_layers` Linear-BN-ReLU
  layers and a Linear output (CVRL: 3 x 2048, out 128; its code's hidden_layer_num=3), and
  InfoNCE (NT-Xent) over the 2N normalised embeddings at temperature 0.1.

The export is the backbone alone. Data parallelism: embeddings are all-gathered across ranks with
a differentiable gather, so each rank's loss sees the whole global batch's negatives, and
gradients are averaged as for every method; the clips' draws are made for the global batch and
sliced per rank, so they do not depend on the world size.
"""
from __future__ import annotations

import logging

import torch
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import BackboneMethod, DataView, take_frames, valid_frames, whole_video
from videodata.augment import cvrl_augment, cvrl_params

log = logging.getLogger(__name__)


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


def cvrl_starts(lengths: torch.Tensor, frames: int, u: torch.Tensor) -> torch.Tensor:
    """CVRL's two clip starts per video (its `sample_ssl_sequence`, stride 1): (B,) lengths and
    uniforms u (B, 3) -> int64 (B, 2) starts; take frames (start + i) mod length.

    M = length - frames + 1 starts fit; the gap d between the two has density 2 (1 - d / M) / M
    on [0, M) (CVRL's cdf for power 1, inverted here instead of its bisection), the first start
    is uniform on [0, M - d), the second d later, and the pair's order is a coin flip. A video
    shorter than frames - 1 gets two independent uniform starts (CVRL: max_offset = the length)."""
    lengths = lengths.to(torch.float64)
    u = u.to(torch.float64)
    short = lengths <= frames - 1
    m = torch.where(short, lengths, lengths - (frames - 1))
    gap = torch.minimum(torch.floor(m * (1 - torch.sqrt(1 - u[:, 0]))), m - 1)
    first = torch.floor(u[:, 1] * (m - gap))
    second = first + gap
    swap = u[:, 2] < 0.5
    a, b = torch.where(swap, second, first), torch.where(swap, first, second)
    # short videos: both starts uniform over the whole video, independently
    a = torch.where(short, torch.floor(u[:, 1] * lengths), a)
    b = torch.where(short, torch.floor(u[:, 2] * lengths), b)
    return torch.stack([a, b], dim=1).long()


class ProjectionHead(nn.Module):
    """CVRL's head: `layers` x (Linear, BatchNorm, ReLU) of `hidden` units, then Linear to `out`."""

    def __init__(self, features: int, hidden: int, out: int, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(features if i == 0 else hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        blocks.append(nn.Linear(hidden if layers else features, out))
        self.net = nn.Sequential(*blocks)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.net(feature_map.mean(dim=(2, 3, 4)))


class Contrastive(BackboneMethod):
    name = "contrastive"
    HEALTH = (("InfoNCE loss", (("loss", "loss"),)),
              ("pretext accuracy", (("pair_acc", "positive found (top-1)"),)),
              ("embeddings", (("embedding_std", "std per dim x sqrt(d)"), ("alignment", "positive distance"))))

    def __init__(self, cfg, policy, dist_info):
        super().__init__(cfg, policy, dist_info, cfg.method.contrastive, rng_offset=104729)
        if self.settings.flip and cfg.data.source == "synthetic":
            log.warning("method.contrastive.flip=true on the synthetic set, whose classes include left / "
                        "right moves: the views teach invariance to that direction")

    def make_head(self, features: int) -> nn.Module:
        c = self.settings
        return ProjectionHead(features, c.hidden_dim, c.projection_dim, c.hidden_layers)

    def data_view(self) -> DataView:
        """The whole cached video (`data.max_frames`); the two clips are cut from it in train_step."""
        return DataView(frames=whole_video(self.cfg, self.cfg.model.frames), views=1, sampling="random")

    def views(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair of each window (B, C, W, H, W'): two clips at CVRL's starts, each with its own
        CVRL augmentation (view 1: blur always, no solarisation; view 2: blur 0.1, solarisation 0.2)."""
        frames, batch = self.cfg.model.frames, self.cfg.trainer.batch_size
        lengths = valid_frames(windows).cpu()  # the index math beside the CPU draws; take_frames moves it
        starts = cvrl_starts(lengths, frames, self.local(torch.rand(batch, 3, generator=self.rng)))
        steps = torch.arange(frames)
        pair = []
        for view in (0, 1):
            index = (starts[:, view, None] + steps) % lengths[:, None]
            params = {k: self.local(v) for k, v in cvrl_params(batch, self.rng, view, self.settings.flip).items()}
            pair.append(cvrl_augment(take_frames(windows, index), params))
        return pair[0], pair[1]

    def _gather(self, z: torch.Tensor) -> torch.Tensor:
        """Every rank's embeddings in rank order, differentiable (this rank's part keeps its graph)."""
        if not self.dist.enabled:
            return z
        return torch.cat(dist_nn.all_gather(z))

    def train_step(self, windows: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(windows)
        x = torch.cat([v1, v2])  # one forward: BatchNorm normalises both views with the same statistics
        if self.policy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        self.opt.zero_grad(set_to_none=True)
        with self.policy.autocast():
            z = self.forward(x)
        z1, z2 = z.float().chunk(2)
        z1, z2 = self._gather(z1), self._gather(z2)
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
