"""Playback-speed prediction on the discriminator's backbone: a predictive pretext with no negatives.

Each training clip is cut from a longer window at a random frame stride s from `speeds` (1 = real
speed, 2 = twice as fast, ...), and the backbone, with a linear head on its pooled penultimate
map, classifies which stride made it (cross-entropy). Telling 1x from 2x motion needs the
network to model how things move, not how they look (SpeedNet, PRP: sound on a 3D CNN, unlike an
arrow-of-time task, which has no answer for motions that look alike run backwards, such as the
synthetic set's left/right moves). The clip gets a zoom jitter (one box for all frames, so its
speed is untouched). The export is the backbone alone.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import BackboneMethod, DataView
from videodata.augment import random_zoom


def resample(window: torch.Tensor, strides: torch.Tensor, frames: int) -> torch.Tensor:
    """Clip b = frames 0, s_b, 2 s_b, ... of window b: (B, C, W, H, W') -> (B, C, frames, H, W')."""
    index = torch.arange(frames, device=window.device)[None, :] * strides.to(window.device)[:, None]  # (B, T)
    index = index[:, None, :, None, None].expand(-1, window.shape[1], -1, window.shape[3], window.shape[4])
    return torch.gather(window, 2, index)


class SpeedHead(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(feature_map.mean(dim=(2, 3, 4)))


class Speed(BackboneMethod):
    name = "speed"
    HEALTH = (("speed loss", (("loss", "cross-entropy"),)), ("pretext accuracy", (("speed_acc", "speed accuracy"),)))

    def __init__(self, cfg, policy, dist_info):
        self.speeds = torch.tensor(sorted(int(v) for v in cfg.method.speed.speeds))
        super().__init__(cfg, policy, dist_info, cfg.method.speed, rng_offset=15485863)
        self.batch_size, self.local_batch = cfg.trainer.batch_size, cfg.trainer.batch_size // dist_info.world_size

    def make_head(self, features: int) -> nn.Module:
        return SpeedHead(features, len(self.speeds))

    def data_view(self) -> DataView:
        """Windows long enough for the fastest speed (`data.max_frames` should allow them)."""
        return DataView(frames=self.cfg.model.frames * int(self.speeds.max()), views=1, sampling="random")

    def train_step(self, windows: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        # the global batch's speed labels from the (rank-identical) generator, this rank's slice
        labels = torch.randint(len(self.speeds), (self.batch_size,), generator=self.rng)
        r, b = self.dist.rank, self.local_batch
        labels = labels[r * b:(r + 1) * b]
        clips = random_zoom(resample(windows, self.speeds[labels], self.cfg.model.frames), 0.8, self.rng)
        labels = self.policy.to(labels)
        self.opt.zero_grad(set_to_none=True)
        with self.policy.autocast():
            logits = self.forward(clips)
        loss = F.cross_entropy(logits.float(), labels)
        self.update(loss)
        return {"loss": loss.detach(), "speed_acc": (logits.argmax(1) == labels).float().mean()}
