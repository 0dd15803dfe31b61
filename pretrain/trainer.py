"""The pretraining loop skeleton, the same for every method (pretrain/methods/): data, device,
resume, preemption, logging, checkpoints, export and samples.

Run folder: `<output_root>/<run_name>`; with `run_name=auto` (the default) the name is
`<experiment>-<method>-<hash>`, the hash covering everything the weights depend on (the resolved
config less its operational keys, `pretrain.schema.identity`, and the data's fingerprint), so a
run on other data or with another model, loss or optimiser never resumes from, or hands back, an
earlier run's checkpoint or export. A folder named explicitly that holds a run of another
identity is an error naming the keys that differ. Raising `trainer.steps` (or `trainer.epochs`,
the budget in passes over the clip list: `budget_steps`) or `trainer.time_limit_min` continues
a run.

State (the method's networks and optimisers, step, every RNG, the open logging window, the
training time so far, the run identity) is checkpointed atomically every `ckpt_every` steps, at
a preemption request and at the end; a run folder holding checkpoints resumes from the newest, and
its metrics log continues exactly as an uninterrupted run's would. Only rank 0 writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
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

from pretrain.data import check_location, pretraining_dataset
from pretrain.export import EXPORT_NAME, write_export, write_latest
from pretrain.methods import build_method
from pretrain.samples import plot_health
from pretrain.schema import PretrainConfig, identity, to_plain, validate
from runkit import preemption
from runkit.atomic import atomic_write_json, atomic_write_text
from runkit.checkpoint import (CheckpointError, CheckpointManager, capture_rng_state, load_checkpoint,
                               restore_rng_state, seed_everything)
from runkit.device import DevicePolicy
from runkit.distributed import DistInfo, detect
from runkit.logging import MetricLogger, WindowMeans, progress
from runkit.paths import resolve_path
from videodata.clips import ClipBatchSampler, collate_clips, loader_context
from videodata.clips import to_model_input

log = logging.getLogger(__name__)

CKPT_FORMAT = "vganbench.pretrain_checkpoint/2"
SNAPSHOTS = "snapshots"  # backbone exports every trainer.snapshot_every steps: the checkpoint trajectory
HEALTH_NAME = "health.json"  # the method's health panels (metrics.csv columns grouped), written at the end
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


def run_key(cfg: Any, data_fingerprint: str) -> tuple[dict, str]:
    """(what the weights depend on, its short hash)."""
    key = {"config": identity(cfg), "data": data_fingerprint}
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


def budget_steps(trainer_cfg: Any, clips: int) -> int:
    """The run's budget in steps: `trainer.steps`, or with `trainer.epochs` > 0 that many passes
    over the `clips` training items as main.lua counts them: `for i = 1, N, batchSize` runs
    ceil(N / B) iterations an epoch (its log's denominator, floor(N / B), is one short when B does
    not divide N), so epochs * ceil(N / B), rounded up per epoch, not once over the run."""
    if trainer_cfg.epochs <= 0:
        return int(trainer_cfg.steps)
    return int(trainer_cfg.epochs) * math.ceil(clips / trainer_cfg.batch_size)


def run_dir_for(cfg: Any, data_fingerprint: str) -> Path:
    """`<output_root>/<run_name>`; run_name=auto names the run by its experiment, method and key."""
    name = str(cfg.run_name)
    if name == "auto":
        name = f"{cfg.experiment_name}-{cfg.method.name}-{run_key(cfg, data_fingerprint)[1]}"
    return resolve_path(cfg.output_root) / name


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(saved) | set(now)):
            out += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} -> {now!r}"]


def check_start(cfg: Any) -> None:
    """What can be checked before any work (pretrain/run.py runs it before Hydra writes anything):
    the device, the data locations, and that a run folder named explicitly holds no run of
    another config. A data change under a named run is found later, once the data are listed."""
    cfg = as_config(cfg)
    validate(cfg)
    t = cfg.trainer
    DevicePolicy.create(t.device, t.precision, t.channels_last, t.compile)
    check_location(cfg.data)
    if str(cfg.run_name) == "auto":
        return
    run_dir = resolve_path(cfg.output_root) / str(cfg.run_name)
    latest = CheckpointManager(run_dir / "checkpoints").latest()
    if latest is None:
        return
    state = load_checkpoint(latest)
    saved = state.get("run_key", {}).get("config") if state.get("format") == CKPT_FORMAT else None
    if saved is None:
        raise CheckpointError(f"run folder {run_dir} holds a checkpoint of another version ({latest.name}); "
                              f"use another run_name")
    changes = _differences(saved, identity(cfg))
    if changes:
        raise CheckpointError(f"run folder {run_dir} holds a run of another config ({'; '.join(changes[:6])}); use "
                              f"another run_name, or run_name=auto to name runs by their config")


class Trainer:
    def __init__(self, cfg: Any, dataset: Dataset | None = None, *, run_dir: str | Path | None = None,
                 dist_info: DistInfo | None = None):
        self.cfg = as_config(cfg)
        validate(self.cfg)
        self.info = dist_info or detect()
        if self.info.enabled and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(f"world size {self.info.world_size} but torch.distributed is not "
                               "initialised; call runkit.distributed.init_distributed() first")
        t = self.cfg.trainer
        if t.batch_size % self.info.world_size:
            raise ValueError(f"trainer.batch_size={t.batch_size} is not divisible by the world size "
                             f"{self.info.world_size}")
        self.policy = DevicePolicy.create(t.device, t.precision, t.channels_last, t.compile, self.info.local_rank)
        if t.threads > 0:
            torch.set_num_threads(t.threads)
        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(t.seed)
        self.method = build_method(self.cfg, self.policy, self.info)
        self.dataset = dataset
        self.audit = None  # the leakage audit's result, when the trainer built the data itself
        self.data_fingerprint = str(getattr(dataset, "fingerprint", "")) if dataset is not None else ""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step = 0
        self.clips: int | None = None  # training items, once fit() knows them (an epoch budget's unit)
        self.train_seconds = 0.0  # training-loop time over all attempts (trainer.time_limit_min)
        self.window = WindowMeans()
        self._collapsed_for = 0

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        key, _ = run_key(self.cfg, self.data_fingerprint)
        return {"format": CKPT_FORMAT, "step": self.step, "method": self.method.state_dict(),
                "rng": capture_rng_state(), "config": to_plain(self.cfg), "run_key": key,
                "data_fingerprint": self.data_fingerprint, "train_seconds": self.train_seconds,
                "window": self.window.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{self.run_dir}: not a pretraining checkpoint of this version (format "
                                  f"{state.get('format')!r}, expected {CKPT_FORMAT!r}); use another run_name")
        key, _ = run_key(self.cfg, self.data_fingerprint)
        if state["run_key"] != key:
            changes = _differences(state["run_key"], key)
            raise CheckpointError(f"run folder {self.run_dir} holds a run of another config or other data "
                                  f"({'; '.join(changes[:6])}{' ...' if len(changes) > 6 else ''}); "
                                  f"use another run_name, or run_name=auto to name runs by their config")
        if int(state["step"]) > self.cfg.trainer.steps:
            raise CheckpointError(f"run folder {self.run_dir} was already trained for {state['step']} steps, more "
                                  f"than {self._budget_text()}; use another run_name for a shorter run")
        self.method.load_state_dict(state["method"])
        restore_rng_state(state["rng"])
        self.window.load_state_dict(state["window"])
        self.step = int(state["step"])
        self.train_seconds = float(state.get("train_seconds", 0.0))

    # ---------------------------------------------------------------- one iteration
    def train_step(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on a uint8 batch from the host, (B, [V,] T, H, W, 3)."""
        x = to_model_input(self.policy.to(clips), channels_last=self.policy.channels_last)
        metrics = self.method.train_step(x, self.step)
        self.step += 1
        return metrics

    # ---------------------------------------------------------------- fit
    def _data(self) -> Dataset:
        if self.dataset is None:
            view = self.method.data_view()
            self.dataset, self.audit = pretraining_dataset(self.cfg.data, view, self.cfg.model.size,
                                                           self.cfg.trainer.seed)
            self.data_fingerprint = self.dataset.fingerprint
        return self.dataset

    def _loader(self, dataset: Dataset) -> DataLoader:
        t = self.cfg.trainer
        sampler = ClipBatchSampler(len(dataset), t.batch_size, seed=t.seed, start_step=self.step,
                                   rank=self.info.rank, world_size=self.info.world_size,
                                   replacement=self.cfg.data.replacement)
        workers = self.cfg.data.loader_workers
        # Its own generator: a DataLoader iterator otherwise draws its worker base seed from the
        # global torch RNG, which would shift the noise stream of a resumed run by one draw.
        return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_clips,
                          pin_memory=self.policy.pin_memory, persistent_workers=workers > 0,
                          multiprocessing_context=loader_context(workers),
                          generator=torch.Generator().manual_seed(t.seed))

    def _collective_flag(self, flag: bool) -> bool:
        if not self.info.enabled:
            return flag
        x = torch.tensor([float(flag)], device=self.policy.device if dist.get_backend() != "gloo" else "cpu")
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return bool(x.item())

    def _means(self) -> dict[str, float]:
        """The logging window's means, averaged over ranks; NonFiniteLossError on NaN/inf."""
        means = self.window.means()
        if self.info.enabled and means:
            keys = sorted(means)
            avg = torch.tensor([means[k] for k in keys], dtype=torch.float64)
            avg = avg.to(self.policy.device) if dist.get_backend() != "gloo" else avg
            dist.all_reduce(avg)
            means = dict(zip(keys, (avg.cpu() / self.info.world_size).tolist()))
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if bad:
            last = CheckpointManager(self.run_dir / "checkpoints").latest()
            kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
            shown = ", ".join(f"{k}={v:.4g}" for k, v in bad.items())
            raise NonFiniteLossError(f"non-finite {', '.join(bad)} at step {self.step} ({shown}); stopped "
                                     f"without saving this state: {kept}. Lower the learning rate, try "
                                     f"trainer.precision=fp32 or the improved preset (spectral norm + R1).")
        return means

    def _check_window_finite(self) -> None:
        """Before a checkpoint: the steps since the last log row did not diverge."""
        state = self.window.state_dict()
        if not all(math.isfinite(v) for v in state["sums"].values()):
            self.window.load_state_dict(state)
            self._means()

    def _check_mask(self, means: dict[str, float], steps: int) -> None:
        mask_mean = means.get("mask_mean")
        if mask_mean is None:
            return
        if mask_mean < COLLAPSE_LO or mask_mean > COLLAPSE_HI:
            before = self._collapsed_for
            self._collapsed_for += steps
            window = self.cfg.trainer.collapse_window
            if before < window <= self._collapsed_for:
                log.warning("mask collapsed: mean %.3f outside [%.2f, %.2f] for %d steps (to step %d); "
                            "the generator is using only its %s stream. Consider a smaller "
                            "trainer.mask_lambda.", mask_mean, COLLAPSE_LO, COLLAPSE_HI,
                            self._collapsed_for, self.step,
                            "background" if mask_mean < COLLAPSE_LO else "foreground")
        else:
            self._collapsed_for = 0

    def _record_attempt(self, resumed_from: int | None) -> None:
        """Append this attempt (start step, budget in steps, checkpoint it resumed from, host, job) to
        `attempts.json`: the run's history across requeues, which the metrics log cannot show."""
        path = self.run_dir / "attempts.json"
        try:
            attempts = json.loads(path.read_text()) if path.is_file() else []
        except (OSError, ValueError):
            attempts = []  # an unreadable history is not worth stopping a run for
        attempts.append({"start_step": self.step, "resumed_from": resumed_from, "steps": self.cfg.trainer.steps,
                         "time": time.time(), "host": socket.gethostname(), "pid": os.getpid(),
                         "device": self.policy.describe(), "slurm_job": os.environ.get("SLURM_JOB_ID"),
                         "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0"))})
        atomic_write_json(path, attempts)

    def _resolve_budget(self, clips: int) -> None:
        """An epoch budget becomes trainer.steps (with trainer.epochs kept beside it), so the
        config in config.yaml, every checkpoint and the export records the steps the run trains."""
        t = self.cfg.trainer
        self.clips = clips
        t.steps = budget_steps(t, clips)
        log.info("budget: %s", self._budget_text())

    def _budget_text(self) -> str:
        t = self.cfg.trainer
        if t.epochs <= 0 or self.clips is None:
            return f"trainer.steps={t.steps}"
        return (f"{t.steps} steps (trainer.epochs={t.epochs} x ceil({self.clips} clips / batch {t.batch_size}), "
                f"as main.lua's epochs)")

    def fit(self) -> FitResult:
        t = self.cfg.trainer
        main = self.info.is_main
        dataset = self._data()
        self._resolve_budget(len(dataset))
        if self.run_dir is None:
            self.run_dir = run_dir_for(self.cfg, self.data_fingerprint)
        ckpts = CheckpointManager(self.run_dir / "checkpoints", keep=t.keep)
        state = ckpts.load_latest()  # on the CPU: load_state_dict moves weights; RNG states stay CPU tensors
        resumed_from = None
        if state is not None:
            self.load_state_dict(state)
            resumed_from = self.step
            log.info("resumed from %s at step %d", ckpts.latest(), self.step)
            del state
        # time_limit_min budgets the run's training time over all its attempts (requeues,
        # reruns), so a rerun of a run that used up its budget reuses the export instead of
        # training on; raising the limit (or trainer.steps) continues from the checkpoint.
        budget_s = 60 * t.time_limit_min if t.time_limit_min > 0 else float("inf")
        if self.step >= t.steps or self.train_seconds >= budget_s:  # finished before
            export = self.run_dir / EXPORT_NAME
            if main and not export.is_file():
                export = self.finish()
            return FitResult(self.run_dir, self.step, export, "already_finished", resumed_from)

        metrics_log = None
        if main:
            self._record_attempt(resumed_from)
            if self.audit is not None:
                atomic_write_json(self.run_dir / "audit.json", self.audit.as_dict())
            metrics_log = MetricLogger(self.run_dir, tensorboard=True)
            metrics_log.truncate_from(self.step + 1)
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(to_plain(self.cfg))))
        log.info("run folder %s; %s; %s", self.run_dir, self.method.name, self.policy.describe())
        preemption.install()
        bar = progress(total=t.steps, initial=self.step, desc=f"pretrain {self.run_dir.name}", unit="step",
                       disable=not (main and t.progress))
        timed, t_window, t_start = 0, time.perf_counter(), time.monotonic()
        stopped = "finished"
        try:
            for clips, _ in self._loader(dataset):
                self.window.add(**self.train_step(clips))
                timed += 1
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    self._log(metrics_log, bar, timed, time.perf_counter() - t_window)
                    timed, t_window = 0, time.perf_counter()
                if main and t.sample_every and self.step % t.sample_every == 0:
                    self.method.save_samples(self.run_dir / "samples", f"samples_{self.step:08d}")
                if main and t.snapshot_every and self.step % t.snapshot_every == 0:
                    self._export(self.run_dir / SNAPSHOTS / f"discriminator_{self.step:08d}.pt")
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
                if self.step % t.ckpt_every == 0:
                    self._save(ckpts)
                if self._collective_flag(preemption.requested()):
                    self._save(ckpts)
                    bar.close()
                    preemption.hand_over()
            self._save(ckpts)
        finally:
            bar.close()
            if metrics_log is not None:
                metrics_log.close()
        export = self.finish() if main else None
        return FitResult(self.run_dir, self.step, export, stopped, resumed_from)

    def _save(self, ckpts: CheckpointManager) -> None:
        self._check_window_finite()
        if self.info.is_main:
            ckpts.save(self.state_dict(), self.step)

    def _log(self, metrics_log, bar, timed: int, elapsed: float) -> None:
        steps = self.window.count
        row = self._means()
        if not row:
            return
        self._check_mask(row, steps)
        row["clips_per_s"] = self.cfg.trainer.batch_size * timed / max(elapsed, 1e-9)
        if metrics_log is not None:
            metrics_log.log(self.step, row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in list(row.items())[:3]}, refresh=False)

    # ---------------------------------------------------------------- outputs
    def _export(self, path: Path) -> Path:
        return write_export(path, self.method.backbone(), step=self.step, data_fingerprint=self.data_fingerprint,
                            config=to_plain(self.cfg), method=self.method.name)

    def finish(self) -> Path:
        """Export the backbone, point `<output_root>/LATEST` at it, write samples and health curves."""
        path = self._export(self.run_dir / EXPORT_NAME)
        write_latest(self.cfg.output_root, path)
        self.method.save_samples(self.run_dir / "samples", "samples_final")
        rows = MetricLogger(self.run_dir, tensorboard=False).read()
        # the method's health panels, for readers of the run folder (the transfer report) that
        # import no pretraining code
        atomic_write_json(self.run_dir / HEALTH_NAME, {"method": self.method.name, "panels": self.method.HEALTH})
        if rows:
            plot_health(rows, self.method.HEALTH, self.run_dir / "losses.png")
        log.info("exported %s (step %d)", path, self.step)
        return path


def fit(cfg: Any, dataset: Dataset | None = None, **kwargs) -> FitResult:
    return Trainer(cfg, dataset, **kwargs).fit()


__all__ = ["Trainer", "FitResult", "NonFiniteLossError", "fit", "budget_steps", "run_dir_for", "run_key",
           "as_config"]
