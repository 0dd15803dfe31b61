"""VGAN (Vondrick, Pirsiavash, Torralba 2016): a two-stream generator against a 3D-CNN
discriminator, whose backbone is the export. One D step, then one G step, per iteration.

    D step   real and fake clips pass through D as separate batches (per-type BN statistics);
             loss = L(D(real), real) + L(D(fake), fake) [+ R1 on real]
    G step   paper: reuse the D step's fakes (and G's graph) with the updated D; otherwise fresh
             fakes from new noise; loss = non-saturating L(D(fake), real) + lambda * mean|m|.
             With trainer.g_from_stored_logits (main.lua's fGx on netD.output): G's loss comes
             from the D step's own logits for the fakes, both networks' gradients from that one
             forward before either optimiser steps, so no third D forward runs

D's BatchNorm running statistics move twice per iteration, on the real and on the fake batch, as
in the original (main.lua's G step reuses the fake pass, so D sees no third batch): the G step's
D forward normalises with its batch statistics but leaves the running ones alone. Those running
statistics are what a frozen-feature probe of the exported D uses.

Data parallelism: every rank draws the same global noise and keeps its slice, so N ranks are
numerically one process with the same global batch (see pretrain.methods.base).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from pretrain import losses
from pretrain.methods.base import DataView, Method
from pretrain.models import Discriminator, VideoBackbone, build_generator, plain_discriminator
from pretrain.samples import save_samples


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm on batch statistics without updating the running ones."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in norms:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


class VGAN(Method):
    name = "vgan"

    def __init__(self, cfg, policy, dist_info):
        super().__init__(cfg, policy, dist_info)
        m, o, t = cfg.model, cfg.optim, cfg.trainer
        self.batch_size, self.local_batch = t.batch_size, t.batch_size // dist_info.world_size
        self.G = build_generator(m.generator, width=m.width, frames=m.frames, size=m.size, z_dim=m.z_dim,
                                 bn_eps=m.g_bn_eps, init_std=m.init_std)
        self.D = Discriminator(width=m.width, frames=m.frames, size=m.size, norm=m.d_norm, bn_eps=m.d_bn_eps,
                               spectral_norm=m.spectral_norm, init_std=m.init_std)
        self.G = self.prepare(self.G)
        self.D = self.prepare(self.D, double_backward=t.r1_gamma > 0)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2), eps=o.eps,
                                      weight_decay=o.weight_decay)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2), eps=o.eps,
                                      weight_decay=o.weight_decay)
        self.ema = None
        if t.ema:
            from timm.utils import ModelEmaV3  # timm where used: its import costs 1.4 s per process

            self.ema = ModelEmaV3(self.G, decay=t.ema_decay, use_warmup=True)
        # OptimizedModule forwards only `forward`: compile G's bound forward_all instead.
        self.g_forward_all = policy.maybe_compile(self.G.forward_all)
        self.d_forward = policy.maybe_compile(self.D)
        self.scaler_d, self.scaler_g = policy.grad_scaler(), policy.grad_scaler()
        generator = torch.Generator().manual_seed(t.seed + 7919)
        self.fixed_z = policy.to(torch.randn(t.num_samples, m.z_dim, generator=generator))

    # ------------------------------------------------------------------ interface
    def data_view(self) -> DataView:
        return DataView(frames=self.cfg.model.frames, views=1, sampling=self.cfg.data.sampling)

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def extra_state(self) -> dict:
        state = {"scaler_d": self.scaler_d.state_dict(), "scaler_g": self.scaler_g.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        if "scaler_d" in state:
            self.scaler_d.load_state_dict(state["scaler_d"])
            self.scaler_g.load_state_dict(state["scaler_g"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"] if "ema" in state else self.G.state_dict())

    def backbone(self) -> VideoBackbone:
        """D with spectral norm baked into ordinary weights (its real/fake head rides along)."""
        return plain_discriminator(self.D)

    HEALTH = (("losses", (("d_loss", "D loss"), ("g_loss", "G loss"), ("r1", "R1"))),
              ("discriminator accuracy", (("d_acc_real", "D acc real"), ("d_acc_fake", "D acc fake"))),
              ("mask mean (two-stream)", (("mask_mean", "mask mean"),)))

    # ------------------------------------------------------------------ one iteration
    def _noise(self) -> torch.Tensor:
        """Global-batch noise from the (rank-identical) torch RNG; this rank keeps its slice."""
        z = torch.randn(self.batch_size, self.cfg.model.z_dim)
        r, b = self.dist.rank, self.local_batch
        return self.policy.to(z[r * b:(r + 1) * b])

    def train_step(self, real: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        if self.cfg.trainer.g_from_stored_logits:
            return self._train_step_stored(real, step)
        t, policy = self.cfg.trainer, self.policy
        z = self._noise()

        # ---- D step
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with policy.autocast():
            with torch.set_grad_enabled(t.reuse_fakes):
                out = self.g_forward_all(z)
            logits_real, r1 = self._d_on_real(real, step)
            logits_fake = self.d_forward(out.video.detach())
        d_loss = self._d_loss(logits_real, logits_fake, r1)
        self.scaler_d.scale(d_loss).backward()
        self.average_gradients(self.D)  # before the scaler looks for infs: every rank decides alike
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        # ---- G step (D's running statistics are not touched: they moved twice, above)
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with policy.autocast(), frozen_running_stats(self.D):
            if not t.reuse_fakes:
                out = self.g_forward_all(self._noise())
            logits_g = self.d_forward(out.video)
        g_loss = self._g_loss(logits_g, out)
        self.scaler_g.scale(g_loss).backward()
        self.average_gradients(self.G)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.G, step=step + 1)
        return self._metrics(d_loss, g_loss, logits_real, logits_fake, out, r1)

    def _train_step_stored(self, real: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        """One iteration with G's loss from the D step's logits for the fakes (main.lua's fGx).

        One D forward per batch: D's loss and G's come from the same logits, and both gradients
        are taken before either optimiser steps (each backward restricted to its own network's
        parameters: D's gradient holds no G loss, G's no D loss). The one difference to Torch:
        fGx read netD.output from before D's update, but netD:updateGradInput then ran with D's
        updated weights; here G's gradient goes through D as it was before its update."""
        policy = self.policy
        z = self._noise()
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        with policy.autocast():
            out = self.g_forward_all(z)
            logits_real, r1 = self._d_on_real(real, step)
            logits_fake = self.d_forward(out.video)  # not detached: G's loss backpropagates through it
        d_loss = self._d_loss(logits_real, logits_fake, r1)
        g_loss = self._g_loss(logits_fake, out)
        d_params = [p for p in self.D.parameters() if p.requires_grad]
        g_params = [p for p in self.G.parameters() if p.requires_grad]
        # the G backward needs the fake forward's graph after the D backward has run through it
        self.scaler_d.scale(d_loss).backward(inputs=d_params, retain_graph=True)
        self.scaler_g.scale(g_loss).backward(inputs=g_params)
        self.average_gradients(self.D)  # before the scalers look for infs: every rank decides alike
        self.average_gradients(self.G)
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        if self.ema is not None:
            self.ema.update(self.G, step=step + 1)
        return self._metrics(d_loss, g_loss, logits_real, logits_fake, out, r1)

    def _d_on_real(self, real: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logits for the real batch, and the R1 penalty on it when this step has one (else 0)."""
        t = self.cfg.trainer
        if t.r1_gamma > 0 and (step + 1) % t.r1_every == 0:
            r1, logits_real = losses.r1_penalty(self.d_forward, real, t.r1_gamma)
            return logits_real, r1 * t.r1_every
        return self.d_forward(real), torch.zeros((), device=self.policy.device)

    def _d_loss(self, logits_real: torch.Tensor, logits_fake: torch.Tensor, r1: torch.Tensor) -> torch.Tensor:
        t = self.cfg.trainer
        return (losses.d_loss_real(logits_real, t.loss, t.label_smoothing)
                + losses.d_loss_fake(logits_fake, t.loss, t.label_smoothing) + r1)

    def _g_loss(self, logits_fake: torch.Tensor, out) -> torch.Tensor:
        """Non-saturating adversarial loss on D's logits for the fakes, plus the mask's sparsity."""
        t = self.cfg.trainer
        adv = losses.g_loss(logits_fake, t.loss)
        return adv + losses.mask_sparsity(out.mask, t.mask_lambda).to(adv.device)

    def _metrics(self, d_loss, g_loss, logits_real, logits_fake, out, r1) -> dict[str, torch.Tensor]:
        metrics = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                   "d_acc_real": losses.accuracy(logits_real, True), "d_acc_fake": losses.accuracy(logits_fake, False)}
        if out.mask is not None:
            metrics["mask_mean"] = out.mask.detach().float().mean()
        if self.cfg.trainer.r1_gamma > 0:
            metrics["r1"] = r1.detach()
        return metrics

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def sample(self):
        """Fixed-noise samples from G (its EMA when enabled). BatchNorm uses batch statistics, as
        in training, on a copy so the running statistics of the trained G are untouched."""
        source = self.ema.module if self.ema is not None else self.G
        g = self.local_copy(source).train()
        with self.policy.autocast():
            return g.forward_all(self.fixed_z)

    def save_samples(self, folder, name: str) -> list:
        return save_samples(self.sample(), folder / name)
