"""The GPU acceptance run: one command, at most 8 minutes on one H100/H200.

    python benchmarks/gpu_check.py --device cuda --write      # the acceptance run; writes "## GPU" into RESULTS.md
    python benchmarks/gpu_check.py --device cuda --out /tmp/R.md --json /tmp/gpu.json
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/R.md   # the same code paths, tiny sizes (~1 min)

Five measurements, each wrapped so that one failing records its error instead of stopping the run:

1. gan        the paper-size GAN iteration (`experiment=vgan_paper`: width 64, 32 frames at 64x64),
              `Trainer.train_step` at batch 64, fp32 / bf16 / bf16 + torch.compile: clips/s, TFLOP/s
              (FLOPs from torch.utils.flop_counter, as benchmarks/bench_pretrain.py) and the fraction
              of the card's dense bf16 peak (goal: >= 35%). torch.compile warms up until Dynamo has
              compiled no new graph for 3 iterations in a row (the count is reported).
2. finetune   the `paper` recipe's fine-tune step (`transfer.finetune.train_step`, the classifier
              built from a random export), batch 256, fp32 / bf16; plus the evaluation forward
              (`transfer.evaluate.clip_probabilities`) at the recipe's eval batch.
3. agreement  3 fp32 GAN steps from one seed on the CPU and on the device (same initial weights and
              batches; cuDNN deterministic, TF32 off): max relative difference of losses and weights.
4. loader     a real ClipCache of synthetic 64x64 videos read through a DataLoader (ClipDataset,
              ClipBatchSampler, collate_clips; forkserver; pinned memory on CUDA) with 0 and 8
              workers, against the bf16 GAN step's appetite (clips/s from 1).
5. e2e        the demo pipeline (scripts/main.sh) with the device set: `pretrain/run.py
              trainer.device=...`, its rerun (which must reuse the run), `transfer/sweep.py --device
              ...`, under a temporary OUTPUTS folder; wall time per stage.

Then the projected time of the paper's whole experiment (100k GAN iterations at batch 64 + the
3-split fine-tune sweep of the paper recipe, with evaluation); projections are labelled as such
with their formula. A time budget (`--budget-min`, default 8) skips the parts that would not fit,
saying so. Progress lines go to stderr. `--quick` (with `--device cpu`) runs every part at tiny
sizes (torch.compile is left out by default: Inductor's cold compile alone takes ~80 s on 2
cores; `--variants fp32,bf16,bf16_compile` puts it back). `--out PATH` (or `--write`, which means
`--out benchmarks/RESULTS.md`) replaces the "GPU" section of that file; `--json PATH` saves the
numbers. `run(args)` returns them as data and `section(...)` renders the Markdown.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from benchmarks import common
from benchmarks.common import RESULTS_PATH, busy_note, fmt_num, fmt_seconds, md_table, notes, stamp

REPO_ROOT = Path(__file__).resolve().parents[1]
HEADING = "GPU"
PART_NAMES = ("gan", "finetune", "agreement", "loader", "e2e")
PART_TITLES = {
    "gan": "1. Paper-size GAN iteration",
    "finetune": "2. Fine-tune step (paper recipe)",
    "agreement": "3. CPU-vs-device agreement (3 fp32 GAN steps)",
    "loader": "4. Clip-cache loader",
    "e2e": "5. Demo pipeline end to end",
}
VARIANTS = {  # name: (precision, compile)
    "fp32": ("fp32", False),
    "bf16": ("bf16", False),
    "bf16_compile": ("bf16", True),
}
VARIANT_LABELS = {"fp32": "fp32 eager", "bf16": "bf16 autocast", "bf16_compile": "bf16 + torch.compile"}
PEAK_GOAL = 0.35          # fraction of the dense bf16 peak the paper-size GAN step should reach
HOUR_GOAL_S = 3600.0      # the paper's whole experiment should fit in one GPU-hour
COMPILE_STABLE = 3        # compile warm-up ends after this many iterations without a new graph
AGREE_STEPS = 3
# The paper's experiment, for the projection.
PAPER_GAN_STEPS, PAPER_GAN_BATCH = 100_000, 64
PAPER_SPLITS, PAPER_FRACTIONS, PAPER_INITS, PAPER_SEEDS = 3, (0.01, 0.1, 1.0), 2, (0, 1, 2)
PAPER_FT_ITERS, PAPER_FT_BATCH, PAPER_EVAL_CLIPS = 1000, 256, 10
UCF101_TEST_VIDEOS = {1: 3783, 2: 3734, 3: 3696}  # testlist0{1,2,3}.txt (tests/test_ucf101.py)
UCF101_CLASSES = 101
# Rough duration of each part (seconds) for the budget check: the full run on an H100/H200, and
# --quick on a 2-core CPU. A part is skipped when less than this is left; inside a part the
# timed loops also stop at the budget (at least one timed iteration each).
EXPECTED_S = {"gan": 150.0, "finetune": 30.0, "agreement": 40.0, "loader": 40.0, "e2e": 180.0}
EXPECTED_QUICK_S = {"gan": 4.0, "finetune": 2.0, "agreement": 2.0, "loader": 8.0, "e2e": 30.0}
# --quick's e2e: a tiny synthetic set and recipe (seconds on 2 cores), same CLIs as the demo.
QUICK_PRETRAIN = ("model.width=4", "model.frames=16", "model.size=16", "trainer.steps=2", "trainer.batch_size=4",
                  "trainer.log_every=1", "trainer.num_samples=2", "data.synthetic.num_classes=2",
                  "data.synthetic.clips_per_group=1", "data.synthetic.unlabeled_videos=8",
                  "data.synthetic.frames=20", "data.synthetic.frame_width=32", "data.synthetic.frame_height=32",
                  "data.synthetic.workers=1", "data.decode_workers=1")
QUICK_SWEEP = ("--fractions", "1", "--seeds", "0", "--inits", "pretrained", "--protocols", "finetune",
               "--threads", "1", "--executor", "debug", "finetune.iterations=2", "finetune.batch_size=4",
               "finetune.eval_clips=2", "finetune.eval_batch=8", "finetune.checkpoint_every=2", "finetune.log_every=1",
               "finetune.sampling=random", "cache.train_max_frames=20", "cache.eval_max_frames=20")


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ plumbing

class Budget:
    """The run's time budget: what is left, and a deadline for a part's timed loops."""

    def __init__(self, minutes: float):
        self.total_s = 60.0 * minutes
        self.start = time.monotonic()
        self.part_end: float | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.total_s - self.elapsed()

    @property
    def deadline(self) -> float:
        return self.start + self.total_s

    @property
    def part_deadline(self) -> float:
        """When the current part's timed loops stop: twice its expected time, within the budget."""
        return min(self.deadline, self.part_end) if self.part_end is not None else self.deadline


def error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    head = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return head[:400] + (" ..." if len(lines) > 1 or len(head) > 400 else "")


def run_part(name: str, fn: Callable[[], dict], budget: Budget, expected_s: float) -> dict:
    """Run one measurement: skipped (with the reason) when the budget cannot hold it; its error
    recorded instead of raised. Returns {"status": ok|failed|skipped, "seconds", ...}."""
    left = budget.remaining()
    if left < expected_s:
        reason = (f"{max(left, 0):.0f} s of the {budget.total_s / 60:g}-minute budget left, this part "
                  f"needs about {expected_s:.0f} s")
        log(f"{name}: skipped: {reason}")
        return {"status": "skipped", "reason": reason, "seconds": 0.0}
    log(f"{name}: start ({left:.0f} s of the budget left)")
    budget.part_end = time.monotonic() + 2 * expected_s
    start = time.perf_counter()
    try:
        data = fn()
    except Exception as exc:  # noqa: BLE001 - one failing measurement must not stop the others
        traceback.print_exc(file=sys.stderr)
        out = {"status": "failed", "error": error_text(exc), "seconds": time.perf_counter() - start}
        log(f"{name}: FAILED after {out['seconds']:.1f} s: {out['error']}")
        return out
    finally:
        _free_memory()
    out = {"status": "ok", **data, "seconds": time.perf_counter() - start}
    log(f"{name}: done in {out['seconds']:.1f} s")
    return out


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _graphs_compiled() -> int | None:
    """Graphs Dynamo has compiled in this process so far (None when the counter is unavailable)."""
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - an internal counter; its absence only loses a figure
        return None


def timed(step: Callable[[], object], sync: Callable[[], None], iters: int, deadline: float) -> tuple[float, int]:
    """(seconds per iteration, iterations timed): up to `iters`, fewer once past `deadline` (at least one)."""
    sync()
    start, done = time.perf_counter(), 0
    while done < iters:
        step()
        done += 1
        if time.monotonic() > deadline:
            break
    sync()
    return (time.perf_counter() - start) / done, done


def _peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------------- 1. GAN step

def gan_config(args, *, device: str, precision: str, compile: bool, batch: int, output_root: Path):
    """The `experiment=vgan_paper` config as `pretrain/run.py` composes it, at this size and device."""
    from pretrain.config import compose

    overrides = ["experiment=vgan_paper", f"output_root={output_root}", f"trainer.device={device}",
                 f"trainer.precision={precision}", f"trainer.compile={str(compile).lower()}",
                 f"trainer.batch_size={batch}", "trainer.progress=false",
                 f"model.width={args.width}", f"model.frames={args.frames}", f"model.size={args.size}"]
    return compose(overrides)


def _real_batch(args, batch: int, policy, generator: torch.Generator) -> torch.Tensor:
    """A uint8 batch (B, T, H, W, 3) on the host, pinned when the policy's loaders pin."""
    clips = torch.randint(0, 256, (batch, args.frames, args.size, args.size, 3), dtype=torch.uint8,
                          generator=generator)
    return clips.pin_memory() if policy.pin_memory else clips


def measure_gan(args, budget: Budget, tmp: Path) -> dict:
    from benchmarks.bench_pretrain import count_flops, peak_for
    from pretrain.trainer import Trainer

    rows, flops, card = [], None, None
    part_deadline = budget.part_deadline
    for i, variant in enumerate(args.variants):
        precision, compile = VARIANTS[variant]
        row = {"variant": variant, "precision": precision, "compile": compile, "batch": args.gan_batch}
        rows.append(row)
        if budget.remaining() <= 0:
            row["error"] = "skipped: the time budget ran out"
            continue
        log(f"gan: {VARIANT_LABELS[variant]}, batch {args.gan_batch}")
        trainer = None
        try:
            cfg = gan_config(args, device=args.device, precision=precision, compile=compile, batch=args.gan_batch,
                             output_root=tmp / "pretrain")
            trainer = Trainer(cfg, run_dir=tmp / "pretrain" / f"gan_{variant}")
            policy = trainer.policy
            card = _card(policy)
            real = _real_batch(args, args.gan_batch, policy, torch.Generator().manual_seed(i))
            _reset_peak_memory(policy.device)
            if flops is None:
                if compile:  # count on an eager twin: FlopCounterMode and Dynamo do not mix
                    twin_cfg = gan_config(args, device=args.device, precision="fp32", compile=False,
                                          batch=args.gan_batch, output_root=tmp / "pretrain")
                    twin = Trainer(twin_cfg, run_dir=tmp / "pretrain" / "gan_flops")
                    flops = count_flops(twin, real)
                    del twin
                else:
                    flops = count_flops(trainer, real)
            step = lambda: trainer.train_step(real)  # noqa: E731
            started = time.perf_counter()
            if compile:
                graphs0 = _graphs_compiled()
                warmup, stable, last = 0, 0, graphs0
                while warmup < args.compile_warmup_max:
                    step()
                    policy.synchronize()
                    warmup += 1
                    now = _graphs_compiled()
                    stable = stable + 1 if now == last else 0
                    last = now
                    if warmup >= args.compile_warmup_min and stable >= COMPILE_STABLE:
                        break
                    if time.monotonic() > part_deadline:
                        break
                row.update(warmup=warmup, warmup_s=time.perf_counter() - started,
                           graphs_compiled=None if graphs0 is None or last is None else last - graphs0,
                           warmup_stable=stable >= COMPILE_STABLE)
            else:
                for _ in range(args.warmup):
                    step()
                row.update(warmup=args.warmup, warmup_s=time.perf_counter() - started)
            graphs_before = _graphs_compiled()
            sec, n = timed(step, policy.synchronize, args.iters, part_deadline)
            graphs_after = _graphs_compiled()
            if compile and graphs_before is not None and graphs_after is not None:
                row["graphs_during_timed"] = graphs_after - graphs_before
            row.update(sec_per_iter=sec, iters=n, clips_per_s=args.gan_batch / sec,
                       tflops=flops / sec / 1e12 if flops else None,
                       peak_memory_gib=_peak_memory_gib(policy.device))
            bf16_peak, own_peak = peak_for(card or "", "bf16"), peak_for(card or "", precision)
            row["bf16_peak_fraction"] = row["tflops"] / bf16_peak if bf16_peak and row["tflops"] else None
            row["own_peak_fraction"] = row["tflops"] / own_peak if own_peak and row["tflops"] else None
            log(f"gan: {VARIANT_LABELS[variant]}: {sec * 1000:.1f} ms/iter, {row['clips_per_s']:.1f} clips/s"
                + (f", {100 * row['bf16_peak_fraction']:.1f}% of the bf16 peak" if row["bf16_peak_fraction"] else ""))
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile unavailable: the other variants still count
            traceback.print_exc(file=sys.stderr)
            row["error"] = error_text(exc)
            log(f"gan: {VARIANT_LABELS[variant]} FAILED: {row['error']}")
        finally:
            del trainer
            _free_memory()
            if compile:
                with contextlib.suppress(Exception):
                    torch._dynamo.reset()
    ok = [r for r in rows if "clips_per_s" in r]
    if not ok:
        raise RuntimeError("no GAN variant ran: " + "; ".join(f"{r['variant']}: {r.get('error')}" for r in rows))
    best = max(ok, key=lambda r: r["clips_per_s"])
    fractions = [r["bf16_peak_fraction"] for r in ok if r.get("bf16_peak_fraction") is not None]
    return {"rows": rows, "gflop_per_iter": flops / 1e9 if flops else None, "best_variant": best["variant"],
            "best_clips_per_s": best["clips_per_s"],
            "best_bf16_peak_fraction": max(fractions) if fractions else None,
            "goal_met": (max(fractions) >= PEAK_GOAL) if fractions else None}


def _card(policy) -> str | None:
    return torch.cuda.get_device_name(policy.device) if policy.is_cuda else None


# ---------------------------------------------------------------------------- 2. fine-tune step

def measure_finetune(args, budget: Budget, tmp: Path) -> dict:
    from benchmarks.bench_pretrain import peak_for
    from pretrain.export import export_random, load_export
    from runkit.device import DevicePolicy
    from torch.utils.flop_counter import FlopCounterMode
    from transfer.classifier import build_classifier
    from transfer.evaluate import clip_probabilities
    from transfer.finetune import make_optimizer, train_step
    from transfer.sweeps.recipe import load_recipe

    overrides = [f"finetune.batch_size={args.ft_batch}"]
    if args.quick:
        overrides += ["finetune.eval_clips=2", "finetune.eval_batch=8"]
    recipe = load_recipe("paper", overrides).finetune
    arch = {"width": args.width, "frames": args.frames, "size": args.size}
    export = load_export(export_random(tmp / "finetune" / "random_export.pt", arch, seed=0))
    generator = torch.Generator().manual_seed(1)
    host_clips = torch.randint(0, 256, (recipe.batch_size, args.frames, args.size, args.size, 3), dtype=torch.uint8,
                               generator=generator)
    host_labels = torch.randint(0, UCF101_CLASSES, (recipe.batch_size,), generator=generator)
    eval_videos = max(1, recipe.eval_batch // recipe.eval_clips)
    host_eval = torch.randint(0, 256, (eval_videos, recipe.eval_clips, args.frames, args.size, args.size, 3),
                              dtype=torch.uint8, generator=generator)
    rows, flops = [], None
    for precision in args.ft_precisions:
        row = {"precision": precision, "batch": recipe.batch_size}
        rows.append(row)
        if budget.remaining() <= 0:
            row["error"] = "skipped: the time budget ran out"
            continue
        log(f"finetune: {precision}, batch {recipe.batch_size}")
        model = None
        try:
            policy = DevicePolicy.create(args.device, precision)
            torch.manual_seed(0)
            model = policy.module(build_classifier(export, "pretrained", UCF101_CLASSES, recipe.dropout))
            optimizer, scaler = make_optimizer(model, recipe), policy.grad_scaler()
            aug = torch.Generator().manual_seed(7919)
            clips = host_clips.pin_memory() if policy.pin_memory else host_clips
            labels = host_labels.pin_memory() if policy.pin_memory else host_labels
            _reset_peak_memory(policy.device)
            model.train()
            step = lambda: train_step(model, clips, labels, optimizer, scaler, policy, recipe, aug)  # noqa: E731
            if flops is None:
                with FlopCounterMode(display=False) as counter:
                    step()
                flops = counter.get_total_flops()
            for _ in range(args.warmup):
                step()
            sec, n = timed(step, policy.synchronize, args.iters, budget.part_deadline)
            card = _card(policy)
            peak = peak_for(card or "", precision)
            row.update(sec_per_iter=sec, iters=n, warmup=args.warmup, clips_per_s=recipe.batch_size / sec,
                       tflops=flops / sec / 1e12 if flops else None, peak_memory_gib=_peak_memory_gib(policy.device))
            row["own_peak_fraction"] = row["tflops"] / peak if peak and row["tflops"] else None
            # evaluation: the recipe's eval batch (eval_clips clips per video) through clip_probabilities
            model.eval()
            videos = host_eval.pin_memory() if policy.pin_memory else host_eval
            evaluate = lambda: clip_probabilities(model, videos, policy)  # noqa: E731
            evaluate()
            eval_sec, eval_n = timed(evaluate, policy.synchronize, args.iters, budget.part_deadline)
            row.update(eval_clips_per_batch=eval_videos * recipe.eval_clips, eval_sec_per_batch=eval_sec,
                       eval_iters=eval_n, eval_clips_per_s=eval_videos * recipe.eval_clips / eval_sec)
            log(f"finetune: {precision}: {sec * 1000:.1f} ms/step, {row['clips_per_s']:.1f} clips/s; "
                f"evaluation {row['eval_clips_per_s']:.1f} clips/s")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            row["error"] = error_text(exc)
            log(f"finetune: {precision} FAILED: {row['error']}")
        finally:
            del model
            _free_memory()
    ok = [r for r in rows if "clips_per_s" in r]
    if not ok:
        raise RuntimeError("no fine-tune precision ran: " + "; ".join(f"{r['precision']}: {r.get('error')}" for r in rows))
    return {"rows": rows, "gflop_per_step": flops / 1e9 if flops else None, "recipe": "paper",
            "eval_clips": recipe.eval_clips, "eval_batch": recipe.eval_batch, "classes": UCF101_CLASSES,
            "best_clips_per_s": max(r["clips_per_s"] for r in ok),
            "best_eval_clips_per_s": max(r["eval_clips_per_s"] for r in ok)}


# --------------------------------------------------------------------------------- 3. agreement

@contextlib.contextmanager
def strict_fp32():
    """cuDNN deterministic, no benchmark autotuning, TF32 off (convolutions and matmuls); restored after."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = True, False, False, False
    try:
        yield
    finally:
        cudnn.deterministic, cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = saved


def _float_state(trainer) -> dict[str, torch.Tensor]:
    """Every floating-point parameter and buffer of the method's networks, copied to the host."""
    out = {}
    for name, module in trainer.method.modules().items():
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                out[f"{name}.{key}"] = value.detach().to("cpu", torch.float64, copy=True)
    return out


def _max_rel(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str | None]:
    """max over tensors of max|a - b| / max|a| (the worst tensor's name)."""
    worst, name = 0.0, None
    for key, ref in a.items():
        scale = float(ref.abs().max()) if ref.numel() else 0.0
        diff = float((ref - b[key]).abs().max()) if ref.numel() else 0.0
        rel = diff / scale if scale > 0 else diff
        if rel > worst or name is None:
            worst, name = rel, key
    return worst, name


def measure_agreement(args, budget: Budget, tmp: Path) -> dict:
    from pretrain.trainer import Trainer

    with strict_fp32():
        trainers = {}
        for role, device in (("reference", "cpu"), ("device", args.device)):
            cfg = gan_config(args, device=device, precision="fp32", compile=False, batch=args.agree_batch,
                             output_root=tmp / "pretrain")
            trainers[role] = Trainer(cfg, run_dir=tmp / "pretrain" / f"agree_{role}")
        ref, dev = trainers["reference"], trainers["device"]
        for name, module in ref.method.modules().items():  # the same initial weights on both
            dev.method.modules()[name].load_state_dict(module.state_dict())
        initial = _float_state(ref)
        initial_diff, _ = _max_rel(initial, _float_state(dev))
        generator = torch.Generator().manual_seed(args.seed)
        batches = [torch.randint(0, 256, (args.agree_batch, args.frames, args.size, args.size, 3), dtype=torch.uint8,
                                 generator=generator) for _ in range(AGREE_STEPS)]
        losses, seconds = {}, {}
        for role, trainer in trainers.items():
            torch.manual_seed(args.seed)  # the noise z comes from the global CPU RNG on both
            started, steps = time.perf_counter(), []
            for batch in batches:
                metrics = trainer.train_step(batch)
                steps.append({k: float(metrics[k]) for k in ("d_loss", "g_loss")})
            trainer.policy.synchronize()
            losses[role], seconds[role] = steps, time.perf_counter() - started
            log(f"agreement: {role} ({trainer.policy.describe()}): losses "
                + ", ".join(f"{s['d_loss']:.6f}/{s['g_loss']:.6f}" for s in steps))
        loss_rel = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
                       for a, b in zip(losses["reference"], losses["device"]) for k in ("d_loss", "g_loss"))
        final_ref, final_dev = _float_state(ref), _float_state(dev)
        weight_rel, worst = _max_rel(final_ref, final_dev)
        num = sum(float(((final_ref[k] - initial[k]) - (final_dev[k] - initial[k])).pow(2).sum()) for k in initial)
        den = sum(float((final_ref[k] - initial[k]).pow(2).sum()) for k in initial)
        update_rel = math.sqrt(num / den) if den > 0 else 0.0
        same_device = ref.policy.device == dev.policy.device
        ok = loss_rel <= args.agree_rtol and weight_rel <= args.agree_rtol
    return {"steps": AGREE_STEPS, "batch": args.agree_batch, "seed": args.seed, "reference": ref.policy.describe(),
            "device": dev.policy.describe(), "same_device": same_device, "losses": losses,
            "initial_weight_rel_diff": initial_diff, "loss_max_rel_diff": loss_rel,
            "weight_max_rel_diff": weight_rel, "weight_worst_tensor": worst, "update_rel_l2_diff": update_rel,
            "rtol": args.agree_rtol, "agree": ok, "seconds_per_side": seconds,
            "settings": "torch.backends.cudnn.deterministic=True, cudnn.benchmark=False, cudnn.allow_tf32=False, "
                        "cuda.matmul.allow_tf32=False (restored afterwards)"}


# ------------------------------------------------------------------------------------ 4. loader

def loader_rate(dataset, batch: int, workers: int, policy, batches: int, deadline: float) -> dict:
    """clips/s of a DataLoader over `dataset` as the trainer builds it, after start-up and the
    prefetched batches (the first 2 * workers + 2, or 1 without workers, are not timed)."""
    from torch.utils.data import DataLoader
    from videodata.clips import ClipBatchSampler, collate_clips, loader_context

    skip = 2 * workers + 2 if workers else 1
    sampler = ClipBatchSampler(len(dataset), batch, seed=0, steps=skip + batches)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_clips,
                        pin_memory=policy.pin_memory, multiprocessing_context=loader_context(workers),
                        generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    first_s, t0, counted, pinned, shape = None, None, 0, None, None
    iterator = iter(loader)
    try:
        for i, (clips, _labels) in enumerate(iterator):
            if first_s is None:
                first_s, pinned, shape = time.perf_counter() - started, bool(clips.is_pinned()), tuple(clips.shape)
            if i == skip - 1:
                t0 = time.perf_counter()
            elif i >= skip:
                counted += 1
                if time.monotonic() > deadline:
                    break
        ended = time.perf_counter()
    finally:
        del iterator  # stops the workers
    if counted == 0 or t0 is None:
        raise RuntimeError(f"loader with {workers} workers: no batch after the {skip} untimed ones")
    rate = counted * batch / (ended - t0)
    return {"workers": workers, "batch": batch, "batches_timed": counted, "batches_untimed": skip,
            "first_batch_s": first_s, "clips_per_s": rate, "clips_per_s_per_worker": rate / max(workers, 1),
            "pinned": pinned, "batch_shape": list(shape)}


def measure_loader(args, budget: Budget, tmp: Path, appetite: float | None, appetite_label: str | None) -> dict:
    from runkit.device import DevicePolicy
    from videodata.cache import ClipCache
    from videodata.clips import ClipDataset
    from videodata.folder import list_videos
    from videodata.synthetic import SyntheticConfig, generate

    policy = DevicePolicy.create(args.device)
    started = time.perf_counter()
    cfg = SyntheticConfig(root=str(tmp / "loader" / "synthetic"), num_classes=2, clips_per_group=1,
                          unlabeled_videos=args.loader_videos, frames=args.frames, frame_width=max(args.size, 16),
                          frame_height=max(args.size, 16), workers=args.build_workers, progress=False)
    layout = generate(cfg)
    generate_s = time.perf_counter() - started
    records = list_videos(layout.unlabeled_dir)
    started, threads = time.perf_counter(), torch.get_num_threads()
    try:
        cache = ClipCache.build(records, tmp / "loader" / "cache", size=args.size, max_frames=args.frames,
                                workers=args.build_workers, show_progress=False)
    finally:
        torch.set_num_threads(threads)  # an in-process build (workers=1) leaves torch at one thread
    build_s = time.perf_counter() - started
    dataset = ClipDataset(cache, args.frames, sampling="first")  # vgan_paper: data.sampling=first
    log(f"loader: {len(cache)} synthetic videos ({cfg.frame_width}x{cfg.frame_height}, {args.frames} frames) "
        f"generated in {generate_s:.1f} s, cached at {args.size}x{args.size} in {build_s:.1f} s")
    rows = []
    for workers in args.loader_workers:
        if budget.remaining() <= 0:
            rows.append({"workers": workers, "error": "skipped: the time budget ran out"})
            continue
        try:
            row = loader_rate(dataset, args.gan_batch, workers, policy, args.loader_batches, budget.part_deadline)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            rows.append({"workers": workers, "error": error_text(exc)})
            log(f"loader: {workers} workers FAILED: {rows[-1]['error']}")
            continue
        row["vs_appetite"] = row["clips_per_s"] / appetite if appetite else None
        rows.append(row)
        log(f"loader: {workers} workers: {row['clips_per_s']:.0f} clips/s "
            f"({row['clips_per_s_per_worker']:.0f} per worker), first batch after {row['first_batch_s']:.1f} s")
    ok = [r for r in rows if "clips_per_s" in r]
    if not ok:
        raise RuntimeError("no loader configuration ran: " + "; ".join(str(r.get("error")) for r in rows))
    with_workers = [r for r in ok if r["workers"] > 0]
    basis = max(with_workers, key=lambda r: r["workers"]) if with_workers else None
    needed = math.ceil(appetite / basis["clips_per_s_per_worker"]) if appetite and basis else None
    return {"rows": rows, "videos": len(cache), "source": f"{cfg.frame_width}x{cfg.frame_height}",
            "frames": args.frames, "size": args.size, "batch": args.gan_batch, "generate_s": generate_s,
            "build_s": build_s, "pin_memory": policy.pin_memory, "appetite_clips_per_s": appetite,
            "appetite_from": appetite_label, "per_worker_basis": basis["workers"] if basis else None,
            "workers_needed": needed}


# --------------------------------------------------------------------------------------- 5. e2e

def _run_stage(name: str, cmd: list[str], env: dict, outputs: Path, log_path: Path,
               timeout_s: float) -> tuple[dict, str]:
    """Run one stage's command in its own session; on timeout the whole process group is stopped."""
    shown = " ".join(str(c) for c in cmd)
    log(f"e2e: {name}: {shown}")
    started = time.perf_counter()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        status = "ok"
        try:
            rc = proc.wait(timeout=max(timeout_s, 1.0))
        except subprocess.TimeoutExpired:
            status = "timeout"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    wall = time.perf_counter() - started
    text = log_path.read_text(encoding="utf-8", errors="replace")
    if status == "ok" and rc != 0:
        status = "failed"
    row = {"stage": name, "command": shown.replace(sys.executable, "python").replace(str(outputs), "$OUTPUTS"),
           "wall_s": wall, "returncode": rc, "status": status}
    if status != "ok":
        row["tail"] = [line[:300] for line in text.splitlines()[-15:]]
    log(f"e2e: {name}: {status} in {wall:.1f} s")
    return row, text


def measure_e2e(args, budget: Budget, tmp: Path) -> dict:
    from benchmarks.bench_e2e import EXPORT_LINE, SWEEP_LINE
    from runkit.device import DevicePolicy

    policy = DevicePolicy.create(args.device)
    device = args.device if args.device.startswith("cuda:") else policy.device.type
    outputs = tmp / "e2e" / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", VGANBENCH_NO_PROGRESS="1")
    env.setdefault("OMP_NUM_THREADS", "2")  # as scripts/main.sh
    py = sys.executable
    pretrain = [py, "pretrain/run.py", f"trainer.device={device}", f"output_root={outputs}/pretrain",
                f"data.synthetic.root={outputs}/data/synthetic", f"data.cache_root={outputs}/cache"]
    if args.quick:
        pretrain += list(QUICK_PRETRAIN)
    margin = 5.0
    stages, export, sweep = [], None, None
    row, text = _run_stage("pretrain", pretrain, env, outputs, tmp / "e2e" / "pretrain.log", budget.remaining() - margin)
    stages.append(row)
    match = EXPORT_LINE.search(text)
    if match:
        export = {"path": match["path"], "step": int(match["step"]), "stopped": match["stopped"]}
    if row["status"] == "ok" and export:
        if args.e2e_rerun:
            # main.sh's rerun path: the same command must reuse the run (load its checkpoint, keep its export)
            row, text = _run_stage("pretrain rerun (reuse)", pretrain, env, outputs, tmp / "e2e" / "pretrain_rerun.log",
                                   budget.remaining() - margin)
            again = EXPORT_LINE.search(text)
            row["reused"] = bool(again and again["stopped"] == "already_finished")
            if row["status"] == "ok" and not row["reused"]:
                row["status"], row["tail"] = "failed", ["the rerun did not report already_finished"]
            stages.append(row)
        else:
            stages.append({"stage": "pretrain rerun (reuse)", "status": "skipped",
                           "reason": "not run under --quick (another ~12 s of start-up on 2 cores; the CPU "
                                     "resume path has its own tests); --e2e-rerun runs it"})
        sweep_cmd = [py, "transfer/sweep.py", "--output-root", str(outputs), "--checkpoint", export["path"],
                     "--device", device]
        if args.quick:
            sweep_cmd += ["--data", "ucf101", "--root", f"{outputs}/data/synthetic", *QUICK_SWEEP]
        else:
            sweep_cmd += ["--fractions", "0.01,0.1,1"]
        row, text = _run_stage("transfer sweep", sweep_cmd, env, outputs, tmp / "e2e" / "sweep.log",
                               budget.remaining() - margin)
        stages.append(row)
        match = SWEEP_LINE.search(text)
        if match:
            sweep = {"cells": int(match["cells"]), "skipped": int(match["skipped"]), "seconds": float(match["seconds"])}
    else:
        stages.append({"stage": "transfer sweep", "status": "not run", "reason": "pretraining gave no export"})
    failed = [s for s in stages if s["status"] not in ("ok", "skipped")]
    return {"device": device, "stages": stages, "export": export, "sweep": sweep, "quick": args.quick,
            "all_ok": not failed, "total_s": sum(s.get("wall_s", 0.0) for s in stages),
            "what": ("a tiny pretraining (the demo's CLI at width 4, 16x16x16, 2 steps on 8 synthetic videos) and a "
                     "one-cell sweep (`--data ucf101` over the same synthetic set, 2 fine-tune steps, `--executor debug`: "
                     "the cell in the sweep's process, which saves a job start-up) in place of the demo" if args.quick else
                     "scripts/main.sh's two commands (cpu_demo pretraining; the 0.01/0.1/1 sweep with the demo "
                     "recipe) with the device set, plus a rerun of the pretraining command (main.sh's rerun path, "
                     "which must reuse the run); scripts/setup.sh is not run")}


# --------------------------------------------------------------------------------- projection

def projection(parts: dict) -> dict:
    """The paper's whole experiment from the measured rates (a projection, with its formula)."""
    gan, ft = parts.get("gan", {}), parts.get("finetune", {})
    cells = PAPER_SPLITS * len(PAPER_FRACTIONS) * PAPER_INITS * len(PAPER_SEEDS)
    ft_clips = cells * PAPER_FT_ITERS * PAPER_FT_BATCH
    cells_per_split = cells // PAPER_SPLITS
    eval_clips = cells_per_split * sum(UCF101_TEST_VIDEOS.values()) * PAPER_EVAL_CLIPS
    gan_clips = PAPER_GAN_STEPS * PAPER_GAN_BATCH
    out = {"gan_clips": gan_clips, "finetune_cells": cells, "finetune_clips": ft_clips, "eval_clips": eval_clips,
           "formula": (f"GAN: {PAPER_GAN_STEPS:,} iterations x {PAPER_GAN_BATCH} clips / GAN clips/s; fine-tune: "
                       f"{PAPER_SPLITS} splits x {len(PAPER_FRACTIONS)} fractions x {PAPER_INITS} inits x "
                       f"{len(PAPER_SEEDS)} seeds = {cells} cells x {PAPER_FT_ITERS} iterations x {PAPER_FT_BATCH} "
                       f"clips / fine-tune clips/s; evaluation: {cells_per_split} cells per split x "
                       f"{sum(UCF101_TEST_VIDEOS.values()):,} test videos (splits 1-3: "
                       f"{', '.join(f'{v:,}' for v in UCF101_TEST_VIDEOS.values())}) x {PAPER_EVAL_CLIPS} clips / "
                       f"evaluation clips/s")}

    def rate(rows: list[dict], key: str, want: Callable[[dict], bool]) -> float | None:
        values = [r[key] for r in rows if key in r and want(r)]
        return max(values) if values else None

    gan_rows, ft_rows = gan.get("rows", []), ft.get("rows", [])
    for name, pick_gan, pick_ft in (("best", lambda r: True, lambda r: True),
                                    ("fp32", lambda r: r["variant"] == "fp32", lambda r: r["precision"] == "fp32")):
        g, f, e = (rate(gan_rows, "clips_per_s", pick_gan), rate(ft_rows, "clips_per_s", pick_ft),
                   rate(ft_rows, "eval_clips_per_s", pick_ft))
        entry = {"gan_clips_per_s": g, "finetune_clips_per_s": f, "eval_clips_per_s": e,
                 "gan_s": gan_clips / g if g else None, "finetune_s": ft_clips / f if f else None,
                 "eval_s": eval_clips / e if e else None}
        parts_s = [entry["gan_s"], entry["finetune_s"], entry["eval_s"]]
        entry["total_s"] = sum(parts_s) if all(p is not None for p in parts_s) else None
        entry["under_goal"] = entry["total_s"] < HOUR_GOAL_S if entry["total_s"] is not None else None
        out[name] = entry
    return out


# ------------------------------------------------------------------------------------------ run

def run(args) -> dict:
    """Every measurement in order, within the budget; returns plain data (see `section`)."""
    from runkit.device import DevicePolicy

    policy = DevicePolicy.create(args.device)  # an unavailable device is one error line (exit 2)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    budget = Budget(args.budget_min)
    expected = EXPECTED_QUICK_S if args.quick else EXPECTED_S
    result = {"stage": "gpu", "command": _command(args), "quick": args.quick, "device": policy.describe(),
              "card": _card(policy), "budget_min": args.budget_min,
              "size": {"width": args.width, "frames": args.frames, "size": args.size},
              "settings": {"gan_batch": args.gan_batch, "ft_batch": args.ft_batch, "iters": args.iters,
                           "warmup": args.warmup, "compile_warmup_min": args.compile_warmup_min,
                           "compile_warmup_max": args.compile_warmup_max, "variants": args.variants,
                           "ft_precisions": args.ft_precisions, "agree_batch": args.agree_batch,
                           "loader_workers": args.loader_workers, "loader_videos": args.loader_videos,
                           "loader_batches": args.loader_batches},
              "software": {"torch": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version() if policy.is_cuda else None,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark,
                           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32},
              "parts": {}}
    result["threads"] = torch.get_num_threads()
    log(f"device {policy.describe()}; budget {args.budget_min:g} min; parts {', '.join(args.parts)}")
    skipped_variants = [v for v in VARIANTS if v not in args.variants]
    if args.quick and "bf16_compile" in skipped_variants:
        result["compile_note"] = ("bf16 + torch.compile not run under --quick: Inductor's cold compile of the "
                                  "G and D steps takes ~80 s on a 2-core CPU; `--variants fp32,bf16,bf16_compile` "
                                  "runs it")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        tmp = Path(scratch)
        if args.keep:
            tmp = Path(tempfile.mkdtemp(prefix="gpu_check_kept_"))
            log(f"keeping the scratch folder {tmp}")
        parts = result["parts"]
        for name in PART_NAMES:
            if name not in args.parts:
                parts[name] = {"status": "skipped", "reason": "not asked for (see --parts)", "seconds": 0.0}
                continue
            if name == "loader":
                gan = parts.get("gan", {})
                rows = {r["variant"]: r for r in gan.get("rows", []) if "clips_per_s" in r}
                pick = rows.get("bf16") or rows.get("bf16_compile")
                appetite = pick["clips_per_s"] if pick else None
                label = VARIANT_LABELS[pick["variant"]] if pick else None
                fn = lambda: measure_loader(args, budget, tmp, appetite, label)  # noqa: E731
            else:
                measure = {"gan": measure_gan, "finetune": measure_finetune, "agreement": measure_agreement,
                           "e2e": measure_e2e}[name]
                fn = lambda measure=measure: measure(args, budget, tmp)  # noqa: E731
            parts[name] = run_part(name, fn, budget, expected[name])
    result["projection"] = projection(result["parts"])
    result["wall_s"] = budget.elapsed()
    log(f"finished in {result['wall_s']:.0f} s")
    return result


# ------------------------------------------------------------------------------------- section

def _pct(value: float | None) -> str:
    return f"{100 * value:.1f}%" if value is not None else "n/a"


def _status_line(title: str, part: dict) -> str | None:
    if part.get("status") == "failed":
        return f"**{title}: FAILED** after {fmt_seconds(part.get('seconds'))}: `{part.get('error')}`"
    if part.get("status") == "skipped":
        return f"**{title}: not measured**: {part.get('reason')}."
    return None


def _part(result: dict, name: str) -> tuple[dict, str, str | None]:
    """A part's result, its title, and its one status line when it failed or was skipped (else None)."""
    part = result["parts"].get(name, {})
    title = PART_TITLES[name]
    return part, title, _status_line(title, part)


def _error_row(lead: tuple, columns: int, row: dict) -> tuple:
    """The table row of a measurement that raised: its leading cells, "-" up to `columns`, the error."""
    return (*lead, *["-"] * (columns - len(lead) - 1), f"error: {row.get('error')}")


def _gan_block(result: dict) -> list[str]:
    part, title, status = _part(result, "gan")
    s = result["size"]
    head = (f"**{title}** (`experiment=vgan_paper` settings at width {s['width']}, {s['frames']} frames at "
            f"{s['size']}x{s['size']}; the trainer's own `train_step`: D step on a real and a fake batch, then "
            f"the G step on the D step's fakes)")
    if status:
        return [status]
    rows = []
    for r in part["rows"]:
        if "clips_per_s" not in r:
            rows.append(_error_row((VARIANT_LABELS[r["variant"]], r["batch"]), 9, r))
            continue
        warm = str(r["warmup"])
        if r["compile"]:
            until = (f"until no new graph for {COMPILE_STABLE} in a row" if r.get("warmup_stable") else
                     "stopped by the budget or --compile-warmup-max BEFORE the graph count settled")
            warm += (f" ({until}: {r.get('graphs_compiled')} graph(s) compiled in {fmt_seconds(r.get('warmup_s'))}; "
                     f"{r.get('graphs_during_timed', 'n/a')} during the timed iterations)")
        rows.append((VARIANT_LABELS[r["variant"]], r["batch"], fmt_num(r["sec_per_iter"] * 1000), fmt_num(r["clips_per_s"]),
                     fmt_num(r["tflops"], 3) if r.get("tflops") is not None else "-", _pct(r.get("bf16_peak_fraction")),
                     _pct(r.get("own_peak_fraction")), r["iters"], warm))
    table = md_table(["variant", "batch", "ms/iter", "clips/s", "TFLOP/s", "of dense bf16 peak",
                      "of its precision's peak", "timed iters", "warm-up iters"], rows, "llrrrrrrl")
    goal = part.get("best_bf16_peak_fraction")
    verdict = ("n/a (no dense-peak figure for this device: a CPU, or a card missing from "
               "benchmarks/bench_pretrain.py's PEAK_TFLOPS)" if goal is None else
               f"{'met' if part['goal_met'] else 'NOT met'}: best {_pct(goal)}")
    lines = [head, table,
             f"FLOPs per iteration (torch.utils.flop_counter, forward + backward of G and D, counted once on the "
             f"eager model): {fmt_num(part.get('gflop_per_iter'), 4)} GFLOP. \"Its precision's peak\" is the dense "
             f"TF32 peak for fp32 (cuDNN convolutions use TF32 by default) and the bf16 peak for bf16 "
             f"(benchmarks/bench_pretrain.py's PEAK_TFLOPS). Goal >= {100 * PEAK_GOAL:.0f}% of the dense bf16 "
             f"peak: {verdict}."]
    if result.get("compile_note"):
        lines.append(result["compile_note"] + ".")
    return lines


def _finetune_block(result: dict) -> list[str]:
    part, title, status = _part(result, "finetune")
    if status:
        return [status]
    rows = []
    for r in part["rows"]:
        if "clips_per_s" not in r:
            rows.append(_error_row((r["precision"], r["batch"]), 8, r))
            continue
        rows.append((r["precision"], r["batch"], fmt_num(r["sec_per_iter"] * 1000), fmt_num(r["clips_per_s"]),
                     fmt_num(r["tflops"], 3) if r.get("tflops") is not None else "-", _pct(r.get("own_peak_fraction")),
                     fmt_num(r["eval_clips_per_s"]), f"{r['iters']} timed after {r['warmup']}"))
    table = md_table(["precision", "batch", "ms/step", "clips/s", "TFLOP/s", "of its precision's peak",
                      "evaluation clips/s", "iterations"], rows, "llrrrrrl")
    return [f"**{title}** (`transfer.finetune.train_step` with the `paper` recipe: Adam 2e-4, Dropout3d + Conv3d "
            f"head for {part['classes']} classes on the backbone of a random export; evaluation: "
            f"`transfer.evaluate.clip_probabilities` on {part['eval_batch']} clips per batch, {part['eval_clips']} "
            f"per video)", table,
            f"FLOPs per fine-tune step: {fmt_num(part.get('gflop_per_step'), 4)} GFLOP (forward + backward)."]


def _agreement_block(result: dict) -> list[str]:
    part, title, status = _part(result, "agreement")
    if status:
        return [status]
    rows = [(i + 1, f"{a['d_loss']:.7f}", f"{b['d_loss']:.7f}", f"{a['g_loss']:.7f}", f"{b['g_loss']:.7f}")
            for i, (a, b) in enumerate(zip(part["losses"]["reference"], part["losses"]["device"]))]
    table = md_table(["step", "D loss (CPU)", "D loss (device)", "G loss (CPU)", "G loss (device)"], rows)
    lines = [f"**{title}**: the same initial weights, batches and noise (seed {part['seed']}, batch {part['batch']}) "
             f"on {part['reference']} and on {part['device']}, with {part['settings']}.", table,
             f"Max relative difference: losses {part['loss_max_rel_diff']:.2e}; weights after {part['steps']} steps "
             f"{part['weight_max_rel_diff']:.2e} (max |a - b| / max |a| per tensor, worst `{part['weight_worst_tensor']}`); "
             f"the {part['steps']}-step weight updates {part['update_rel_l2_diff']:.2e} (relative L2). "
             f"{'Agree' if part['agree'] else 'DISAGREE'} at rtol {part['rtol']:g}."]
    if part["same_device"]:
        lines.append("Both sides ran on the same device here, so this only exercises the code path.")
    return lines


def _loader_block(result: dict) -> list[str]:
    part, title, status = _part(result, "loader")
    if status:
        return [status]
    rows = []
    for r in part["rows"]:
        if "clips_per_s" not in r:
            rows.append(_error_row((r["workers"],), 6, r))
            continue
        rows.append((r["workers"] if r["workers"] else "0 (in process)", fmt_num(r["clips_per_s"]),
                     fmt_num(r["clips_per_s_per_worker"]) if r["workers"] else "-",
                     fmt_num(r["vs_appetite"], 3) + "x" if r.get("vs_appetite") else "n/a",
                     fmt_seconds(r["first_batch_s"]), f"{r['batches_timed']} after {r['batches_untimed']}"))
    table = md_table(["workers", "clips/s", "clips/s per worker", "/ GAN appetite", "first batch after",
                      "batches timed"], rows)
    appetite = part.get("appetite_clips_per_s")
    if appetite and part.get("workers_needed"):
        basis = next(r for r in part["rows"] if r.get("workers") == part["per_worker_basis"])
        need = (f"The {part['appetite_from']} GAN step eats {fmt_num(appetite)} clips/s; at "
                f"{fmt_num(basis['clips_per_s_per_worker'])} "
                f"clips/s per worker (the {part['per_worker_basis']}-worker run) it needs "
                f"**{part['workers_needed']} worker(s)** (projection: ceil(appetite / per-worker rate); "
                f"set `data.loader_workers`).")
    else:
        need = "Workers needed: n/a (no GAN appetite from part 1, or no run with workers)."
    return [f"**{title}**: {part['videos']} synthetic videos ({part['source']}, {part['frames']} frames) built into a "
            f"`ClipCache` at {part['size']}x{part['size']} (generation {fmt_seconds(part['generate_s'])}, cache build "
            f"{fmt_seconds(part['build_s'])}), then read repeatedly through a DataLoader over `ClipDataset` "
            f"(first frames) with `ClipBatchSampler` (batch {part['batch']}) and `collate_clips`, forkserver workers, "
            f"pin_memory={part['pin_memory']}; the prefetched start-up batches are not timed.", table, need]


def _e2e_block(result: dict) -> list[str]:
    part, title, status = _part(result, "e2e")
    if status:
        return [status]
    rows = []
    for s in part["stages"]:
        state = s["status"] + (f" (exit {s['returncode']})" if s["status"] == "failed" else "")
        if s["stage"].startswith("pretrain rerun") and s["status"] in ("ok", "failed"):
            state += ", reused the run" if s.get("reused") else ", did NOT reuse the run"
        rows.append((s["stage"], fmt_seconds(s.get("wall_s")), state, f"`{_short_command(s.get('command', ''))}`"
                     if s.get("command") else s.get("reason", "")))
    table = md_table(["stage", "wall time", "status", "command"], rows, "lrll")
    lines = [f"**{title}** on `{part['device']}`: {part['what']}; outputs under a temporary OUTPUTS folder.", table]
    if part.get("sweep"):
        sw = part["sweep"]
        lines.append(f"The sweep ran {sw['cells']} cells ({sw['skipped']} already done) in {fmt_seconds(sw['seconds'])} "
                     f"by its own count.")
    for s in part["stages"]:
        if s.get("tail"):
            lines.append(f"Last lines of `{s['stage']}`:\n\n```\n" + "\n".join(s["tail"]) + "\n```")
    return lines


def _short_command(command: str) -> str:
    return " ".join(w if len(w) < 70 else "..." + w[-50:] for w in command.split())


def _duration(seconds: float | None) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if seconds is None:
        return "-"
    return fmt_seconds(seconds) if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _projection_block(result: dict) -> list[str]:
    p = result["projection"]
    rows = []
    for key, label in (("best", "best measured variant of each"), ("fp32", "fp32 throughout (the configs' default)")):
        e = p[key]
        rows.append((label, fmt_num(e["gan_clips_per_s"]), _duration(e["gan_s"]), fmt_num(e["finetune_clips_per_s"]),
                     _duration(e["finetune_s"]), fmt_num(e["eval_clips_per_s"]), _duration(e["eval_s"]),
                     _duration(e["total_s"]),
                     "n/a" if e["under_goal"] is None else ("yes" if e["under_goal"] else "**no**")))
    table = md_table(["rates used", "GAN clips/s", "GAN time", "fine-tune clips/s", "fine-tune time",
                      "eval clips/s", "eval time", "total (projection)", "< 1 GPU-hour"], rows, "lrrrrrrrr")
    lines = ["**Projected time of the paper's whole experiment** (a projection from the rates above, not a "
             f"measurement): {p['formula']}. It leaves out data loading (hidden behind the step when the loader "
             "keeps up, part 4), cache builds, linear probes and process start-up.", table]
    if result["quick"]:
        lines.append("Under --quick the rates are of the tiny model, so these totals mean nothing for the paper "
                     "sizes; they only exercise the code.")
    return lines


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## GPU" section of RESULTS.md, from `run`'s result."""
    card = result.get("card")
    where = (f"Card: **{card}** (`torch.cuda.get_device_name`); date: {info['date']}" if card else
             f"Card: none, measured on `{result['device']}` (no fraction of peak: n/a); date: {info['date']}")
    sw = result["software"]
    soft = (f"torch {sw['torch']}, CUDA {sw['cuda'] or 'n/a'}, cuDNN {sw['cudnn'] or 'n/a'}; "
            f"cudnn.benchmark={sw['cudnn_benchmark']}, cudnn.allow_tf32={sw['cudnn_allow_tf32']} (as the suite runs); "
            f"torch threads: {result['threads']}")
    overview = []
    for name in PART_NAMES:
        part = result["parts"][name]
        state = part["status"] + (f": {part.get('reason')}" if part["status"] == "skipped" else "")
        overview.append((PART_TITLES[name], state, fmt_seconds(part.get("seconds"))))
    overview = md_table(["part", "status", "time"], overview, "llr")
    blocks = [*_gan_block(result), *_finetune_block(result), *_agreement_block(result), *_loader_block(result),
              *_e2e_block(result), *_projection_block(result)]
    return common.section(
        HEADING,
        f"`{result['command']}` (the GPU acceptance run: at most {result['budget_min']:g} minutes on one H100/H200).",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"{where}. Device: {result['device']}; {soft}. Whole run: {fmt_seconds(result['wall_s'])}.",
        overview, *blocks,
        notes([busy_note(info, load_end),
               "Every figure is a measurement of this run except the rows marked projection. clips/s = batch / "
               "seconds per iteration, timed between two device synchronisations after the warm-up; one sample "
               "per row, so a few percent is noise."]))


# ----------------------------------------------------------------------------------------- CLI

def _command(args) -> str:
    flags = [f"--device {args.device}"] + (["--quick"] if args.quick else [])
    defaults = parse_args(["--device", args.device] + (["--quick"] if args.quick else []))
    for name in ("budget_min", "variants", "parts", "gan_batch", "ft_batch", "iters", "warmup", "agree_batch",
                 "loader_workers", "loader_videos", "loader_batches", "width", "frames", "size", "threads"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            flags.append(f"--{name.replace('_', '-')} {text}")
    return " ".join(["python benchmarks/gpu_check.py", *flags])


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (default auto)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1-2 iterations (a smoke run of every code path)")
    p.add_argument("--budget-min", type=float, default=8.0, help="time budget in minutes (default 8)")
    p.add_argument("--parts", type=_str_list, default=list(PART_NAMES), help=f"subset of {','.join(PART_NAMES)}")
    p.add_argument("--variants", type=_str_list, default=None,
                   help="GAN variants out of fp32,bf16,bf16_compile (default all; --quick: fp32,bf16)")
    p.add_argument("--width", type=int, default=None, help="model width (default 64; --quick 4)")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default 32; --quick 16)")
    p.add_argument("--size", type=int, default=None, help="clip side in pixels (default 64; --quick 16)")
    p.add_argument("--gan-batch", type=int, default=None, help="GAN batch (default 64; --quick 4)")
    p.add_argument("--ft-batch", type=int, default=None, help="fine-tune batch (default 256, the recipe's; --quick 4)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 20; --quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations, eager (default 3; --quick 1)")
    p.add_argument("--compile-warmup-min", type=int, default=3)
    p.add_argument("--compile-warmup-max", type=int, default=30)
    p.add_argument("--agree-batch", type=int, default=None, help="agreement batch (default 16; --quick 4)")
    p.add_argument("--agree-rtol", type=float, default=1e-3, help="agreement threshold (relative; default 1e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in this process (0: leave as is)")
    p.add_argument("--loader-workers", type=_int_list, default=None, help="default 0,8 (--quick 0,2)")
    p.add_argument("--loader-videos", type=int, default=None, help="synthetic videos in the cache (default 300; --quick 8)")
    p.add_argument("--loader-batches", type=int, default=None, help="timed batches per loader (default 40; --quick 3)")
    p.add_argument("--build-workers", type=int, default=None, help="processes generating / caching the videos")
    p.add_argument("--e2e-rerun", action=argparse.BooleanOptionalAction, default=None,
                   help="part 5: rerun the pretraining command, which must reuse the run (default on; --quick off)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    p.add_argument("--out", type=Path, default=None, help="replace the GPU section of this results file")
    p.add_argument("--write", action="store_true", help=f"same as --out {RESULTS_PATH.relative_to(REPO_ROOT)}")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"variants": ["fp32", "bf16"] if quick else list(VARIANTS), "width": 4 if quick else 64,
                "frames": 16 if quick else 32, "size": 16 if quick else 64, "gan_batch": 4 if quick else 64,
                "ft_batch": 4 if quick else PAPER_FT_BATCH, "iters": 2 if quick else 20, "warmup": 1 if quick else 3,
                "agree_batch": 4 if quick else 16, "loader_workers": [0, 2] if quick else [0, 8],
                "loader_videos": 8 if quick else 300, "loader_batches": 3 if quick else 40,
                "build_workers": 1 if quick else max(1, min(16, os.cpu_count() or 1)), "e2e_rerun": not quick}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if quick:
        args.compile_warmup_min, args.compile_warmup_max = min(args.compile_warmup_min, 1), min(args.compile_warmup_max, 5)
    args.ft_precisions = ["fp32", "bf16"]
    bad = [v for v in args.variants if v not in VARIANTS] + [x for x in args.parts if x not in PART_NAMES]
    if bad:
        p.error(f"unknown variant(s) or part(s) {bad}; variants: {','.join(VARIANTS)}; parts: {','.join(PART_NAMES)}")
    for name in ("gan_batch", "ft_batch", "iters", "agree_batch", "loader_videos", "loader_batches", "build_workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.budget_min <= 0 or any(w < 0 for w in args.loader_workers):
        p.error("--warmup and --loader-workers must be >= 0, --budget-min > 0")
    if args.write and args.out is None:
        args.out = RESULTS_PATH
    args.write = False  # the file is written by main() (to --out), not by bench_main's fixed path
    return args


def write_section(path: Path, text: str) -> Path:
    """Replace the GPU section of `path` where it stands (appended at the end when new); every
    other section and the file's header are kept as they are."""
    return common.update_sections(Path(path), {HEADING: text})


def main(argv=None) -> int:
    state: dict = {}

    def parse(a):
        state["args"] = parse_args(a)
        return state["args"]

    def render(result: dict, info: dict, load_end=None) -> str:
        text = section(result, info, load_end)
        out = state["args"].out
        if out is not None:
            write_section(out, text)
            log(f"updated {out}")
        return text

    return common.bench_main(argv, parse, run, render, HEADING)


if __name__ == "__main__":
    sys.exit(main())
