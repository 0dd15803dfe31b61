"""The VGAN training loop: one D step, then one G step, per iteration.

    D step   real and fake clips pass through D as separate batches (per-type BN statistics);
             loss = L(D(real), real) + L(D(fake), fake) [+ R1 on real]
    G step   paper: reuse the D step's fakes (and G's graph) with the updated D; otherwise fresh
             fakes from new noise; loss = non-saturating L(D(fake), real) + lambda * mean|m|

Data parallelism: every rank draws the same global noise and keeps its slice; data come from a
DistributedSampler per rank; BatchNorm statistics cover the global batch (CrossRankBatchNorm);
gradients are averaged with one all-reduce per network before each optimiser step. That makes
N ranks numerically equivalent to one process with the same global batch, and - unlike DDP's
reducer - it is indifferent to the GAN step's several forwards per backward, to a G graph built
in the D step and consumed in the G step, and to R1's double backward.

State (G, D, both Adams, EMA, step, every RNG, resolved config) is checkpointed atomically every
`ckpt_every` steps and at exit; a run directory holding checkpoints resumes from the newest.
Only rank 0 writes.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from pretrain import losses
from pretrain.data import StepBatchSampler, build_cache, CacheClips, collate_clips, resolve_path
from pretrain.models import (CrossRankBatchNorm, Discriminator, build_generator, convert_cross_rank_bn, plain_discriminator)
from pretrain.samples import plot_losses, save_samples
from pretrain.schema import PretrainConfig, to_plain, validate
from runkit import preemption
from runkit.atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from runkit.checkpoint import CheckpointError, CheckpointManager, capture_rng_state, restore_rng_state, seed_everything
from runkit.distributed import DistInfo, detect
from runkit.logging import MetricLogger, progress

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPORT_FORMAT = "vganbench.discriminator/1"
CKPT_FORMAT = "vganbench.pretrain_checkpoint/1"
COLLAPSE_LO, COLLAPSE_HI = 0.02, 0.98


class NonFiniteLossError(RuntimeError):
    """A loss became NaN/inf; the run stopped and the last good checkpoint was kept."""


@dataclass
class FitResult:
    run_dir: Path
    step: int
    export_path: Path | None
    stopped: str  # "finished" | "time_limit" | "already_finished"
    resumed_from: int | None = None  # the checkpoint step this attempt started from (None: fresh)


def as_config(cfg: Any) -> Any:
    """A DictConfig typed by PretrainConfig, from a dataclass, a dict or a DictConfig."""
    base = OmegaConf.structured(PretrainConfig)
    if isinstance(cfg, PretrainConfig):
        return OmegaConf.merge(base, OmegaConf.structured(cfg))
    return OmegaConf.merge(base, cfg)


def run_dir_for(cfg: Any, repo_root: Path = REPO_ROOT) -> Path:
    return resolve_path(cfg.output_root, repo_root) / str(cfg.run_name)


def _pick_device(name: str, info: DistInfo) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{info.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"trainer.device={name!r} but CUDA is not available; use trainer.device=cpu")
    return device


def _channels_last(module: torch.nn.Module) -> None:
    """channels_last_3d for 5-D weights, channels_last for 4-D ones (G's 2-D background stream)."""
    for p in module.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)


def _average_gradients(module: torch.nn.Module, world_size: int) -> None:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class VGANTrainer:
    def __init__(self, cfg: Any, dataset: Dataset | None = None, *, run_dir: str | Path | None = None,
                 dist_info: DistInfo | None = None, repo_root: Path = REPO_ROOT):
        self.cfg = as_config(cfg)
        validate(self.cfg)
        self.repo_root = repo_root
        self.info = dist_info or detect()
        if self.info.enabled and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(f"world size {self.info.world_size} but torch.distributed is not "
                               "initialised; call runkit.distributed.init_distributed() first")
        t, m = self.cfg.trainer, self.cfg.model
        if t.batch_size % self.info.world_size:
            raise ValueError(f"trainer.batch_size={t.batch_size} is not divisible by the world size "
                             f"{self.info.world_size}")
        self.local_batch = t.batch_size // self.info.world_size
        self.run_dir = Path(run_dir) if run_dir is not None else run_dir_for(self.cfg, repo_root)
        self.device = _pick_device(t.device, self.info)
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(t.seed)

        self.G = build_generator(m.generator, width=m.width, frames=m.frames, size=m.size,
                                 z_dim=m.z_dim, bn_eps=m.g_bn_eps, init_std=m.init_std)
        self.D = Discriminator(width=m.width, frames=m.frames, size=m.size, norm=m.d_norm,
                               bn_eps=m.d_bn_eps, spectral_norm=m.spectral_norm, init_std=m.init_std)
        if self.info.enabled:
            convert_cross_rank_bn(self.G)
            convert_cross_rank_bn(self.D)
        self.G.to(self.device)
        self.D.to(self.device)
        if t.channels_last:
            _channels_last(self.G)
            _channels_last(self.D)
        o = self.cfg.optim
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=o.lr_g, betas=(o.beta1, o.beta2),
                                      eps=o.eps, weight_decay=o.weight_decay)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=o.lr_d, betas=(o.beta1, o.beta2),
                                      eps=o.eps, weight_decay=o.weight_decay)
        self.ema = None
        if t.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.G, decay=t.ema_decay, use_warmup=True)
        # OptimizedModule forwards only `forward`: compile G's bound forward_all instead.
        self.g_forward_all = torch.compile(self.G.forward_all) if t.compile else self.G.forward_all
        self.d_fwd = torch.compile(self.D) if t.compile else self.D
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=t.precision == "bf16")
        gen = torch.Generator().manual_seed(t.seed + 7919)
        self.fixed_z = torch.randn(t.num_samples, m.z_dim, generator=gen).to(self.device)
        self.step = 0
        self.train_seconds = 0.0  # training-loop time over all attempts (trainer.time_limit_min)
        self.dataset = dataset
        self.data_fingerprint = str(getattr(dataset, "fingerprint", "")) if dataset is not None else ""
        self._collapsed_for = 0

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state = {"format": CKPT_FORMAT, "step": self.step, "G": self.G.state_dict(),
                 "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                 "opt_d": self.opt_d.state_dict(), "rng": capture_rng_state(),
                 "config": to_plain(self.cfg), "data_fingerprint": self.data_fingerprint,
                 "train_seconds": self.train_seconds}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"not a pretraining checkpoint (format {state.get('format')!r})")
        saved_model = state["config"]["model"]
        current = to_plain(self.cfg)["model"]
        if saved_model != current:
            diff = {k: (saved_model.get(k), current.get(k)) for k in set(saved_model) | set(current)
                    if saved_model.get(k) != current.get(k)}
            raise CheckpointError(f"checkpoint in {self.run_dir} was trained with a different model "
                                  f"config (key: (checkpoint, now)) {diff}; use another run_name")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            if "ema" in state:
                self.ema.module.load_state_dict(state["ema"])
            else:
                log.warning("checkpoint has no EMA weights: EMA restarts from the current G")
                self.ema.module.load_state_dict(self.G.state_dict())
        restore_rng_state(state["rng"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))

    # ---------------------------------------------------------------- one iteration
    def _noise(self) -> torch.Tensor:
        """Global-batch noise from the (rank-identical) torch RNG; this rank keeps its slice."""
        z = torch.randn(self.cfg.trainer.batch_size, self.cfg.model.z_dim)
        r, b = self.info.rank, self.local_batch
        return z[r * b:(r + 1) * b].to(self.device, non_blocking=True)

    def _all_finite(self, *values: torch.Tensor) -> bool:
        ok = torch.stack([torch.isfinite(v.detach().float()).all() for v in values]).all().float()
        if self.info.enabled:
            ok = ok.cpu() if dist.get_backend() == "gloo" else ok
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok.item())

    def _stop_nonfinite(self, what: str, values: dict) -> None:
        last = CheckpointManager(self.run_dir / "checkpoints").latest()
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        shown = ", ".join(f"{k}={v.item():.4g}" for k, v in values.items())
        raise NonFiniteLossError(f"non-finite {what} at step {self.step + 1} ({shown}); stopped "
                                 f"without saving this state: {kept}. Lower the learning rate, try "
                                 f"trainer.precision=fp32 or the improved preset (spectral norm + R1).")

    def _reduce(self, module: torch.nn.Module) -> None:
        if self.info.enabled:
            _average_gradients(module, self.info.world_size)

    def train_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.cfg.trainer
        real = real.to(self.device, non_blocking=True)
        if t.channels_last:
            real = real.contiguous(memory_format=torch.channels_last_3d)
        z = self._noise()

        # ---- D step
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        use_r1 = t.r1_gamma > 0 and (self.step + 1) % t.r1_every == 0
        with self.autocast:
            with torch.set_grad_enabled(t.reuse_fakes):
                out = self.g_forward_all(z)
            if use_r1:
                r1, logits_real = losses.r1_penalty(self.d_fwd, real, t.r1_gamma)
                r1 = r1 * t.r1_every
            else:
                logits_real, r1 = self.d_fwd(real), torch.zeros((), device=self.device)
            logits_fake = self.d_fwd(out.video.detach())
        loss_real = losses.d_loss_real(logits_real, t.loss, t.label_smoothing)
        loss_fake = losses.d_loss_fake(logits_fake, t.loss, t.label_smoothing)
        d_loss = loss_real + loss_fake + r1
        if not self._all_finite(d_loss):
            self._stop_nonfinite("discriminator loss", {"d_loss": d_loss, "real": loss_real, "fake": loss_fake})
        d_loss.backward()
        self._reduce(self.D)
        self.opt_d.step()

        # ---- G step
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast:
            if not t.reuse_fakes:
                out = self.g_forward_all(self._noise())
            logits_g = self.d_fwd(out.video)
        adv = losses.g_loss(logits_g, t.loss)
        sparsity = losses.mask_sparsity(out.mask, t.mask_lambda).to(adv.device)
        g_loss = adv + sparsity
        if not self._all_finite(g_loss):
            self._stop_nonfinite("generator loss", {"g_loss": g_loss, "adv": adv})
        g_loss.backward()
        self._reduce(self.G)
        self.opt_g.step()
        self.D.requires_grad_(True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.G, step=self.step)

        metrics = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                   "d_acc_real": losses.accuracy(logits_real, True),
                   "d_acc_fake": losses.accuracy(logits_fake, False)}
        if out.mask is not None:
            metrics["mask_mean"] = out.mask.detach().float().mean()
        if t.r1_gamma > 0:
            metrics["r1"] = r1.detach()
        return metrics

    # ---------------------------------------------------------------- fit
    def _loader(self) -> DataLoader:
        t = self.cfg.trainer
        if self.dataset is None:
            m, d = self.cfg.model, self.cfg.data
            cache = build_cache(d, m.frames, m.size, self.repo_root)
            self.dataset = CacheClips(cache, m.frames, d.sampling, seed=t.seed)
            self.data_fingerprint = self.dataset.fingerprint
        sampler = StepBatchSampler(len(self.dataset), self.local_batch, rank=self.info.rank,
                                   world_size=self.info.world_size, seed=t.seed, start_step=self.step)
        workers = self.cfg.data.loader_workers
        # Its own generator: a DataLoader iterator otherwise draws its worker base seed from the
        # global torch RNG, which would shift the noise stream of a resumed run by one draw.
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers,
                          collate_fn=collate_clips, pin_memory=self.device.type == "cuda",
                          persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(t.seed + self.step))

    def _collective_flag(self, flag: bool) -> bool:
        if not self.info.enabled:
            return flag
        x = torch.tensor([float(flag)])
        if dist.get_backend() != "gloo":
            x = x.to(self.device)
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return bool(x.item())

    def _check_mask(self, mask_mean: float | None) -> None:
        if mask_mean is None:
            return
        if mask_mean < COLLAPSE_LO or mask_mean > COLLAPSE_HI:
            self._collapsed_for += 1
            if self._collapsed_for == self.cfg.trainer.collapse_window:
                log.warning("mask collapsed: mean %.3f outside [%.2f, %.2f] for %d steps (to step %d); "
                            "the generator is using only its %s stream. Consider a smaller "
                            "trainer.mask_lambda.", mask_mean, COLLAPSE_LO, COLLAPSE_HI,
                            self._collapsed_for, self.step,
                            "background" if mask_mean < COLLAPSE_LO else "foreground")
        else:
            self._collapsed_for = 0

    def fit(self) -> FitResult:
        t = self.cfg.trainer
        main = self.info.is_main
        ckpts = CheckpointManager(self.run_dir / "checkpoints", keep=t.keep)
        state = ckpts.load_latest(map_location=self.device)
        saved_fingerprint = ""
        resumed_from = None
        if state is not None:
            self.load_state_dict(state)
            saved_fingerprint = str(state.get("data_fingerprint", ""))
            resumed_from = self.step
            log.info("resumed from %s at step %d", ckpts.latest(), self.step)
            del state
        # time_limit_min budgets the run's training time over all its attempts (requeues,
        # reruns), so a rerun of a run that used up its budget reuses the export instead of
        # training on; raising the limit (or trainer.steps) continues from the checkpoint.
        budget_s = 60 * t.time_limit_min if t.time_limit_min > 0 else float("inf")
        if self.step >= t.steps or self.train_seconds >= budget_s:  # finished before
            export = self.run_dir / "discriminator.pt"
            if main and not export.is_file():
                self.data_fingerprint = self.data_fingerprint or saved_fingerprint
                export = self.finish()
            return FitResult(self.run_dir, self.step, export, "already_finished", resumed_from)

        if main:
            self._record_attempt(resumed_from)
        loader = self._loader()
        if saved_fingerprint and saved_fingerprint != self.data_fingerprint:
            log.warning("resuming on different data: fingerprint %s, checkpoint's %s",
                        self.data_fingerprint, saved_fingerprint)
        metrics_log = MetricLogger(self.run_dir, tensorboard=True) if main else None
        if metrics_log is not None:
            metrics_log.truncate_from(self.step + 1)
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_plain(self.cfg))))
        preemption.install()
        bar = progress(total=t.steps, initial=self.step, desc=f"pretrain {self.cfg.run_name}",
                       unit="step", disable=not (main and t.progress))
        sums: dict[str, float] = {}
        window, t_window, t_start = 0, time.perf_counter(), time.monotonic()
        stopped = "finished"
        try:
            for real in loader:
                metrics = self.train_step(real)
                values = {k: float(v) for k, v in metrics.items()}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                window += 1
                self._check_mask(values.get("mask_mean"))
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    self._log(metrics_log, bar, sums, window, time.perf_counter() - t_window)
                    sums, window, t_window = {}, 0, time.perf_counter()
                if main and t.sample_every and self.step % t.sample_every == 0:
                    self.save_samples(f"samples_{self.step:08d}")
                elapsed = time.monotonic() - t_start
                t_start += elapsed
                self.train_seconds += elapsed
                out_of_time = self.train_seconds >= budget_s
                if self.step >= t.steps or self._collective_flag(out_of_time):
                    if self.step < t.steps:
                        stopped = "time_limit"
                        log.warning("trainer.time_limit_min=%.1f reached at step %d of %d: saving and "
                                    "exporting now", t.time_limit_min, self.step, t.steps)
                    break
                if self.step % t.ckpt_every == 0 and main:
                    ckpts.save(self.state_dict(), self.step)
                if self._collective_flag(preemption.requested()):
                    if main:
                        ckpts.save(self.state_dict(), self.step)
                    bar.close()
                    preemption.hand_over()
            if main:
                ckpts.save(self.state_dict(), self.step)
        finally:
            bar.close()
            if metrics_log is not None:
                metrics_log.close()
        export = self.finish() if main else None
        return FitResult(self.run_dir, self.step, export, stopped, resumed_from)

    def _record_attempt(self, resumed_from: int | None) -> None:
        """Append this attempt (start step, checkpoint it resumed from, host, job) to
        `attempts.json`: the run's history across requeues, which the metrics log cannot show."""
        path = self.run_dir / "attempts.json"
        try:
            attempts = json.loads(path.read_text()) if path.is_file() else []
        except (OSError, ValueError):
            attempts = []  # an unreadable history is not worth stopping a run for
        attempts.append({"start_step": self.step, "resumed_from": resumed_from, "time": time.time(),
                         "host": socket.gethostname(), "pid": os.getpid(),
                         "slurm_job": os.environ.get("SLURM_JOB_ID"),
                         "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0"))})
        atomic_write_json(path, attempts)

    def _log(self, metrics_log, bar, sums, window, elapsed) -> None:
        if window == 0:
            return
        keys = sorted(sums)
        avg = torch.tensor([sums[k] / window for k in keys], dtype=torch.float64)
        if self.info.enabled:
            avg = avg.to(self.device) if dist.get_backend() != "gloo" else avg
            dist.all_reduce(avg)
            avg = avg.cpu() / self.info.world_size
        row = dict(zip(keys, avg.tolist()))
        row["clips_per_s"] = self.cfg.trainer.batch_size * window / max(elapsed, 1e-9)
        if metrics_log is not None:
            metrics_log.log(self.step, row)
            bar.set_postfix(d=f"{row['d_loss']:.3f}", g=f"{row['g_loss']:.3f}",
                            acc=f"{row['d_acc_real']:.2f}/{row['d_acc_fake']:.2f}", refresh=False)

    # ---------------------------------------------------------------- outputs
    @torch.no_grad()
    def sample(self) -> Any:
        """Fixed-noise samples from G (its EMA when enabled). BatchNorm uses batch statistics, as
        in training, on a copy so the running statistics of the trained G are untouched."""
        source = self.ema.module if self.ema is not None else self.G
        g = copy.deepcopy(source).train()
        for m in g.modules():
            if isinstance(m, CrossRankBatchNorm):
                m.sync = False  # only rank 0 samples
        with self.autocast:
            out = g.forward_all(self.fixed_z)
        return out

    def save_samples(self, name: str) -> list[Path]:
        return save_samples(self.sample(), self.run_dir / "samples" / name)

    def export_discriminator(self) -> Path:
        """discriminator.pt as ARCHITECTURE.md specifies (spectral norm baked into the weights)."""
        d = plain_discriminator(self.D)
        m = self.cfg.model
        payload = {"format": EXPORT_FORMAT,
                   "state_dict": {k: v.detach().cpu().contiguous() for k, v in d.state_dict().items()},
                   "arch": d.arch.as_dict(), "clip": {"frames": m.frames, "size": m.size},
                   "step": int(self.step), "data_fingerprint": self.data_fingerprint,
                   "config": to_plain(self.cfg)}
        path = self.run_dir / "discriminator.pt"
        atomic_torch_save(payload, path)
        return path

    def finish(self) -> Path:
        """Export D, point outputs/pretrain/LATEST at it, write samples and the loss curve."""
        path = self.export_discriminator()
        latest = resolve_path(self.cfg.output_root, self.repo_root) / "LATEST"
        atomic_write_text(latest, str(path.resolve()) + "\n")
        self.save_samples("samples_final")
        rows = MetricLogger(self.run_dir, tensorboard=False).read()
        if rows:
            plot_losses(rows, self.run_dir / "losses.png")
        log.info("exported %s (step %d)", path, self.step)
        return path


def load_export(path: str | Path) -> dict:
    """Load and check a discriminator.pt (weights_only); raises ValueError naming the file."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} is not a VGAN discriminator export (format "
                         f"{payload.get('format') if isinstance(payload, dict) else type(payload)!r})")
    return payload


def latest_export(output_root: str | Path = "outputs/pretrain", repo_root: Path = REPO_ROOT) -> Path:
    pointer = resolve_path(output_root, repo_root) / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer} not found: run `python pretrain/run.py` first")
    path = Path(pointer.read_text().strip())
    if not path.is_file():
        raise FileNotFoundError(f"{pointer} points at {path}, which does not exist")
    return path


def fit(cfg: Any, dataset: Dataset | None = None, **kwargs) -> FitResult:
    return VGANTrainer(cfg, dataset, **kwargs).fit()


__all__ = ["VGANTrainer", "FitResult", "NonFiniteLossError", "fit", "load_export", "latest_export",
           "run_dir_for", "as_config", "EXPORT_FORMAT"]
