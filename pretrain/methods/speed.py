"""Playback-speed prediction on the discriminator's backbone: a predictive pretext with no negatives.

Each training clip is cut from the whole cached video at a random frame stride s from `speeds`
(1 = real speed, 2 = twice as fast, ...), and the backbone, with a linear head on its pooled
penultimate map, classifies which stride made it (cross-entropy). Telling 1x from 2x motion needs
the network to model how things move, not how they look (SpeedNet, PRP: sound on a 3D CNN, unlike
an arrow-of-time task, which has no answer for motions that look alike run backwards, such as the
synthetic set's left/right moves). The export is the backbone alone.

No shortcut through the sampling: a clip at stride s spans (frames - 1) s + 1 real frames, never
a padded one (the cache pads a short video with its last frame: fast clips would end in
identical frames and slow ones never). Only videos long enough for the largest stride train
(the others are left out of the loss, whatever their clip's stride, so which videos count does
not depend on the label); no wrap-around as in Pace prediction, whose jump back to the start
would come more often in fast clips. The start is uniform over every start where the clip fits
in the whole cached video, not frame 0.

Nor through the motion magnitude: within one stride the per-frame motion spreads by the object
speeds' ratio hi / lo, times 1 / min_crop from the zoom jitter (one box for all frames, side in
[min_crop, 1]: the same motion measured in a smaller box is faster). While that spread is below
the largest ratio of neighbouring strides, a stride's magnitudes overlap no other's and magnitude
alone names it (`magnitude_ratio`, `stride_ratio`; the synthetic set's 0.07-0.12 is 1.71 < 2).
"""
from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from pretrain.methods.base import BackboneMethod, DataView, take_frames, valid_frames, whole_video
from videodata.augment import random_zoom

log = logging.getLogger(__name__)


def span(frames: int, stride) -> int:
    """Real frames a clip of `frames` frames at `stride` covers."""
    return (frames - 1) * stride + 1


def magnitude_ratio(speed_range, min_crop: float) -> float:
    """Spread (max / min) of the per-frame motion at one stride: object speeds, then the zoom."""
    lo, hi = speed_range
    return hi / lo / min_crop


def stride_ratio(speeds) -> float:
    """The largest ratio of neighbouring strides: the spread a stride's magnitudes need to overlap both neighbours'."""
    s = sorted(speeds)
    return max((b / a for a, b in zip(s, s[1:])), default=1.0)


def resample(window: torch.Tensor, strides: torch.Tensor, frames: int) -> torch.Tensor:
    """Clip b = frames 0, s_b, 2 s_b, ... of window b: (B, C, W, H, W') -> (B, C, frames, H, W')."""
    return take_frames(window, torch.arange(frames)[None, :] * strides[:, None])


def speed_index(lengths: torch.Tensor, strides: torch.Tensor, frames: int, u: torch.Tensor) -> torch.Tensor:
    """Frame indices (B, frames) of each clip: stride s_b from a start uniform (u in [0, 1)) over
    every start where the clip fits in the video's `lengths` real frames. A video too short for
    its stride (left out of the loss) wraps around instead of reaching a padded frame."""
    room = lengths - span(frames, strides) + 1
    start = torch.where(room > 0, torch.floor(u * room.clamp(min=1)), torch.floor(u * lengths)).long()
    return (start[:, None] + torch.arange(frames) * strides[:, None]) % lengths[:, None]


class SpeedHead(nn.Module):
    def __init__(self, features: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(features, classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(feature_map.mean(dim=(2, 3, 4)))


class Speed(BackboneMethod):
    name = "speed"
    HEALTH = (("speed loss", (("loss", "cross-entropy"),)),
              ("pretext accuracy", (("speed_acc", "speed accuracy"), ("kept", "videos long enough"))))

    def __init__(self, cfg, policy, dist_info):
        self.speeds = torch.tensor(sorted(int(v) for v in cfg.method.speed.speeds))
        super().__init__(cfg, policy, dist_info, cfg.method.speed, rng_offset=15485863)
        self.batch_size, self.local_batch = cfg.trainer.batch_size, cfg.trainer.batch_size // dist_info.world_size
        if cfg.data.source == "synthetic":  # what can be known before the data (elsewhere: the `kept` metric)
            need = span(cfg.model.frames, int(self.speeds.max()))
            if cfg.data.synthetic.frames < need:
                log.warning("method.speed: a clip of model.frames=%d at stride %d spans %d frames, the synthetic "
                            "videos have %d (data.synthetic.frames): no video is long enough, every clip is left "
                            "out of the loss (experiment=speed_cpu_demo: strides 1, 2)", cfg.model.frames,
                            int(self.speeds.max()), need, cfg.data.synthetic.frames)
            spread = magnitude_ratio(cfg.data.synthetic.speed_range, self.settings.min_crop)
            if spread < stride_ratio(self.speeds.tolist()):
                log.warning("method.speed: per-frame motion spreads %.2fx at one stride (data.synthetic.speed_range, "
                            "method.speed.min_crop), less than the strides' ratio %.2fx: motion magnitude alone "
                            "tells the strides apart", spread, stride_ratio(self.speeds.tolist()))

    def make_head(self, features: int) -> nn.Module:
        return SpeedHead(features, len(self.speeds))

    def data_view(self) -> DataView:
        """The whole cached video (`data.max_frames`, at least one clip at the largest stride)."""
        return DataView(frames=whole_video(self.cfg, span(self.cfg.model.frames, int(self.speeds.max()))),
                        views=1, sampling="random")

    def clips(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clips, labels, kept) of this rank's windows: a stride per clip (drawn for the global
        batch, this rank's slice), a start where it fits, the zoom; kept: long enough for the largest stride."""
        frames = self.cfg.model.frames
        labels = self.local(torch.randint(len(self.speeds), (self.batch_size,), generator=self.rng))
        u = self.local(torch.rand(self.batch_size, generator=self.rng, dtype=torch.float64))
        zoom = self.local(torch.rand(self.batch_size, 3, generator=self.rng))
        lengths = valid_frames(windows).cpu()  # the index math beside the CPU draws; take_frames moves it
        index = speed_index(lengths, self.speeds[labels], frames, u)
        clips = random_zoom(take_frames(windows, index), self.settings.min_crop, None, draws=zoom)
        return clips, labels, lengths >= span(frames, int(self.speeds.max()))

    def train_step(self, windows: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        clips, labels, kept = self.clips(windows)
        if self.policy.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        # the loss is the mean over the global batch's kept clips: this rank's sum x world size /
        # the global count (average_gradients then divides by the world size)
        count = kept.sum().float()
        if self.dist.enabled:
            count = count if dist.get_backend() == "gloo" else self.policy.to(count)
            dist.all_reduce(count)
        labels, kept, count = self.policy.to(labels), self.policy.to(kept).float(), self.policy.to(count)
        self.opt.zero_grad(set_to_none=True)
        with self.policy.autocast():
            logits = self.forward(clips)
        losses = F.cross_entropy(logits.float(), labels, reduction="none") * kept
        loss = losses.sum() * self.dist.world_size / count.clamp(min=1)
        self.update(loss)
        hits = (logits.argmax(1) == labels).float() * kept
        return {"loss": loss.detach(), "speed_acc": hits.sum() / kept.sum().clamp(min=1), "kept": kept.mean()}
