"""What every pretraining method gives the trainer skeleton (`pretrain.trainer.Trainer`).

A method owns its networks, optimisers and losses, and one `train_step`; the skeleton owns
everything else (data, device, resume, preemption, logging, checkpoints, export, samples), so a
new method is one module here and one config under `conf/method/`, never a change to the loop.

    class MyMethod(Method):
        name = "mine"
        def __init__(self, cfg, policy, dist): ...          # networks on policy.device, optimisers
        def data_view(self) -> DataView: ...                 # what one training item is
        def train_step(self, clips, step) -> dict[str, Tensor]: ...   # metrics stay on the device
        def modules(self) -> dict[str, nn.Module]: ...       # checkpointed with their optimisers
        def optimizers(self) -> dict[str, Optimizer]: ...
        def backbone(self) -> VideoBackbone: ...             # what gets exported

Data parallelism: every rank holds the same networks; gradients are averaged across ranks with
one all-reduce per network before each optimiser step (`average_gradients`, an explicit
all-reduce as in StyleGAN2-ADA, not torch's DistributedDataParallel: a GAN step has several
forwards per backward and R1 a double backward, which DDP's reducer does not support). BatchNorm
statistics cover the global batch: torch's SyncBatchNorm on CUDA, `CrossRankBatchNorm` on gloo
(CPU) or where a double backward needs it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pretrain.models import CrossRankBatchNorm, VideoBackbone, convert_cross_rank_bn
from runkit.device import DevicePolicy
from runkit.distributed import DistInfo


@dataclass(frozen=True)
class DataView:
    """One training item: `views` clips of `frames` frames from one video ("random" or "first" start).

    A method that cuts its clips itself (contrastive, speed) asks for the whole cached video:
    `frames=whole_video(cfg, minimum)`, one view, so the item is the cache's frames from frame 0
    (the cache keeps no more than that many), a short video padded with its last frame; the method
    finds the padding (`valid_frames`) and draws its clips inside the real frames.
    """
    frames: int
    views: int = 1
    sampling: str = "random"


# pretrain.data serves fixed-length items and says nothing of a video's length, so a method that
# samples over the whole video reads the length off the padding. What pretrain/data.py would need
# to serve it directly: the real frame count with each item (ClipDataset returning
# cache.num_frames beside the clip), and cached_frames taking the view's length whatever
# data.sampling says (today only data.sampling=random or first keep exactly `frames`).
def whole_video(cfg: Any, minimum: int) -> int:
    """Frames of a whole-video data view: `data.max_frames`, at least `minimum` (what one item needs)."""
    return max(int(cfg.data.max_frames), int(minimum))


def valid_frames(windows: torch.Tensor) -> torch.Tensor:
    """Each window's real frames, (B, C, T, H, W) -> int64 (B,): the cache pads a short video
    with copies of its last frame, so a run of frames equal to the last one ends the video (a
    video that truly ends on identical frames loses only those repeats)."""
    t = windows.shape[2]

    def trailing(same: torch.Tensor) -> torch.Tensor:  # (B, n) -> the length of each row's run of Trues at its end
        return torch.cumprod(same.flip(1).long(), dim=1).sum(dim=1)

    # one pass for a checksum per frame; the exact comparison only over the longest candidate run
    sums = windows.sum(dim=(1, 3, 4), dtype=torch.float64)                               # (B, T)
    near = trailing((sums - sums[:, -1:]).abs() <= 1e-6)
    longest = int(near.max())
    if longest > 1:
        tail = windows[:, :, t - longest:]
        same = (tail == tail[:, :, -1:]).flatten(3).all(dim=3).all(dim=1)                # (B, longest)
        near = torch.minimum(near, trailing(same))
    return (t - near + 1).cpu()  # the run's first frame is the video's last real one


def take_frames(windows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Frames `index` (B, T) of each window: (B, C, W, H, W') -> (B, C, T, H, W')."""
    index = index.to(windows.device)[:, None, :, None, None]
    return torch.gather(windows, 2, index.expand(-1, windows.shape[1], -1, windows.shape[3], windows.shape[4]))


class Method:
    name = "base"

    def __init__(self, cfg: Any, policy: DevicePolicy, dist_info: DistInfo):
        self.cfg, self.policy, self.dist = cfg, policy, dist_info

    # ------------------------------------------------------------------ the method's own parts
    def data_view(self) -> DataView:
        raise NotImplementedError

    def train_step(self, clips: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One update on a float batch on the device: (B, C, T, H, W), or (B, V, C, T, H, W) with
        several views. Returns metrics as device tensors (read only when a log row is written)."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def backbone(self) -> VideoBackbone:
        raise NotImplementedError

    def extra_state(self) -> dict:
        """Anything else to checkpoint (e.g. an EMA's weights)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_samples(self, folder, name: str) -> list:
        """Pictures of what the method learned (rank 0 only); none by default."""
        return []

    # (title, ((metric key, label), ...)) per panel of the health figure (losses.png, reports)
    HEALTH: tuple = (("losses", (("loss", "loss"),)),)

    # ------------------------------------------------------------------ shared helpers
    def state_dict(self) -> dict:
        state = {f"model.{k}": m.state_dict() for k, m in self.modules().items()}
        state.update({f"optim.{k}": o.state_dict() for k, o in self.optimizers().items()})
        state["extra"] = self.extra_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, module in self.modules().items():
            module.load_state_dict(state[f"model.{key}"])
        for key, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state[f"optim.{key}"])
        self.load_extra_state(state.get("extra", {}))

    def average_gradients(self, module: nn.Module) -> None:
        """Mean of every rank's gradients, one flat all-reduce (a no-op on one process)."""
        if not self.dist.enabled:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.dist.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def prepare(self, module: nn.Module, double_backward: bool = False) -> nn.Module:
        """`module` on the device with BatchNorm over the global batch when there are several ranks."""
        if self.dist.enabled:
            if self.policy.is_cuda and not double_backward:
                module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            else:
                convert_cross_rank_bn(module)
        return self.policy.module(module)

    def local_copy(self, module: nn.Module) -> nn.Module:
        """A copy whose BatchNorm layers sync with nobody (one rank drawing samples alone)."""
        copied = copy.deepcopy(module)
        for child in copied.modules():
            if isinstance(child, (nn.SyncBatchNorm, CrossRankBatchNorm)):
                child.forward = _plain_batch_norm(child)
        return copied


class SingleOptimizerState:
    """The checkpointed state of a method with one optimiser (`self.opt`), one grad scaler
    (`self.scaler`) and one CPU generator (`self.rng`) for its draws."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"all": self.opt}

    def extra_state(self) -> dict:
        return {"scaler": self.scaler.state_dict(), "rng": self.rng.get_state()}

    def load_extra_state(self, state: dict) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.rng.set_state(state["rng"].cpu())


class BackboneMethod(SingleOptimizerState, Method):
    """A method that trains the backbone alone with a small head (`make_head`), one AdamW
    optimiser (settings `self.settings`: lr, beta1, beta2, weight_decay), a grad scaler and a CPU
    generator for its augmentations and pretext draws; its export is the backbone."""

    def __init__(self, cfg, policy, dist_info, settings, rng_offset: int):
        super().__init__(cfg, policy, dist_info)
        m = cfg.model
        self.settings = settings
        self.backbone_net = self.prepare(VideoBackbone(width=m.width, frames=m.frames, size=m.size, norm=m.d_norm,
                                                       bn_eps=m.d_bn_eps, init_std=m.init_std))
        self.head = self.prepare(self.make_head(8 * m.width))
        params = list(self.backbone_net.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=settings.lr, betas=(settings.beta1, settings.beta2),
                                     weight_decay=settings.weight_decay)
        self.scaler = policy.grad_scaler()
        self.rng = torch.Generator().manual_seed(cfg.trainer.seed + rng_offset)
        self.forward = policy.maybe_compile(lambda x: self.head(self.backbone_net(x)))

    def make_head(self, features: int) -> nn.Module:
        raise NotImplementedError

    def local(self, draws: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a draw for the global batch: every rank draws the whole batch from
        the (rank-identical) generator, so the clips' draws do not depend on the world size."""
        b = self.cfg.trainer.batch_size // self.dist.world_size
        return draws[self.dist.rank * b:(self.dist.rank + 1) * b]

    def modules(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone_net, "head": self.head}

    def backbone(self) -> VideoBackbone:
        return self.backbone_net

    def update(self, loss: torch.Tensor) -> None:
        """Backward, average over ranks, optimiser step (through the scaler)."""
        self.scaler.scale(loss).backward()
        self.average_gradients(self.backbone_net)
        self.average_gradients(self.head)
        self.scaler.step(self.opt)
        self.scaler.update()


def _plain_batch_norm(bn: nn.modules.batchnorm._BatchNorm):
    """`bn`'s forward as an ordinary, single-process batch norm."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        use_batch = bn.training or not bn.track_running_stats
        return torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                              use_batch, bn.momentum or 0.0, bn.eps)
    return forward
