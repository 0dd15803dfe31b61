"""GAN losses on the discriminator's two logits (index 1 = real, index 0 = fake).

- "softmax" (paper): 2-way softmax cross-entropy, real -> 1, fake -> 0; the generator's loss is
  the non-saturating CE of its fakes against the real label. Optional label smoothing.
- "bce": binary cross-entropy on the score s = logit_real - logit_fake. Without smoothing it
  equals "softmax" exactly (log-softmax of two logits is -softplus of their difference); with
  `label_smoothing` it applies one-sided smoothing (real target 1 - eps), as in Salimans et al.
- "hinge": D: relu(1 - s_real) + relu(1 + s_fake); G: -s_fake (Miyato et al. / BigGAN).

Plus the R1 penalty (gamma / 2) * E ||grad_x s(x_real)||^2 (Mescheder et al. 2018) and the
VGAN mask sparsity term lambda * mean |m|.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSSES = ("softmax", "bce", "hinge")


def score(logits: torch.Tensor) -> torch.Tensor:
    """Real-vs-fake score s = logit_real - logit_fake; s > 0 means 'real'."""
    logits = logits.float()
    return logits[:, 1] - logits[:, 0]


def _check(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {list(LOSSES)}")


def d_loss_real(logits: torch.Tensor, kind: str = "softmax", label_smoothing: float = 0.0) -> torch.Tensor:
    _check(kind)
    if kind == "softmax":
        target = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    s = score(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, torch.full_like(s, 1.0 - label_smoothing))
    return F.relu(1.0 - s).mean()


def d_loss_fake(logits: torch.Tensor, kind: str = "softmax", label_smoothing: float = 0.0) -> torch.Tensor:
    _check(kind)
    if kind == "softmax":
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    s = score(logits)
    if kind == "bce":  # one-sided: fakes keep target 0
        return F.binary_cross_entropy_with_logits(s, torch.zeros_like(s))
    return F.relu(1.0 + s).mean()


def g_loss(logits: torch.Tensor, kind: str = "softmax") -> torch.Tensor:
    """Non-saturating generator loss (hinge: -E[s])."""
    _check(kind)
    if kind == "softmax":
        target = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits.float(), target)
    s = score(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(s, torch.ones_like(s))
    return -s.mean()


def r1_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
               gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma / 2) * E ||d s / d x||^2 on real clips; returns (penalty, logits on real)."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(score(logits).sum(), real, create_graph=True)
    penalty = 0.5 * gamma * grad.float().pow(2).flatten(1).sum(1).mean()
    return penalty, logits


def mask_sparsity(mask: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The original's L1Penalty(lambda, sizeAverage=true): lambda * mean |m|."""
    if mask is None or weight == 0:
        return torch.zeros((), device=mask.device if mask is not None else "cpu")
    return weight * mask.float().abs().mean()


def accuracy(logits: torch.Tensor, real: bool) -> torch.Tensor:
    s = score(logits.detach())
    return ((s > 0) if real else (s < 0)).float().mean()
