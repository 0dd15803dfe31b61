"""Speed of one VGAN training iteration (D step + G step), as the trainer runs it.

    python benchmarks/bench_pretrain.py                      # paper + CPU-demo sizes, 4 variants
    python benchmarks/bench_pretrain.py --sizes demo --iters 10 --variants fp32,bf16

For each size and variant (fp32 eager, bf16 autocast, channels_last_3d, torch.compile) it times
`VGANTrainer.train_step` on random clips after warm-up and reports clips/s and the ratio to fp32
eager; FLOPs per iteration come from torch.utils.flop_counter.FlopCounterMode (forward and
backward of both networks); on a GPU it also reports achieved TFLOP/s as a fraction of the card's
dense peak (bf16 peak for bf16, TF32 peak for fp32 since cuDNN convolutions use TF32 by default).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrain.schema import PretrainConfig
from pretrain.trainer import VGANTrainer

SIZES = {  # (width, frames, size)
    "paper": (64, 32, 64),
    "demo": (16, 16, 32),
}
VARIANTS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
}
# Dense peak TFLOP/s (bf16, tf32) by device-name substring, most specific first.
PEAK_TFLOPS = [
    ("H200", 989.0, 494.7),
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.7),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("A10G", 70.0, 35.0),
]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def peak_for(name: str, precision: str) -> float | None:
    for key, bf16, tf32 in PEAK_TFLOPS:
        if key in name:
            return bf16 if precision == "bf16" else tf32
    return None


def make_trainer(size: str, variant: str, batch: int, device: str, tmp: Path) -> VGANTrainer:
    width, frames, px = SIZES[size]
    cfg = PretrainConfig(experiment_name=f"bench_{size}_{variant}", output_root=str(tmp))
    cfg.model.width, cfg.model.frames, cfg.model.size = width, frames, px
    cfg.trainer.batch_size, cfg.trainer.device, cfg.trainer.progress = batch, device, False
    for key, value in VARIANTS[variant].items():
        setattr(cfg.trainer, key, value)
    return VGANTrainer(cfg, run_dir=tmp / cfg.experiment_name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(trainer: VGANTrainer, real: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(real)
    return counter.get_total_flops()


def time_iterations(trainer: VGANTrainer, real: torch.Tensor, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        trainer.train_step(real)
    _sync(trainer.device)
    start = time.perf_counter()
    for _ in range(iters):
        trainer.train_step(real)
    _sync(trainer.device)
    return (time.perf_counter() - start) / iters


def run(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            batch = args.paper_batch if size == "paper" else args.demo_batch
            flops = None
            for variant in args.variants:
                trainer = make_trainer(size, variant, batch, args.device, Path(tmp))
                _, frames, px = SIZES[size]
                real = torch.rand(batch, 3, frames, px, px) * 2 - 1
                if flops is None:
                    flops = count_flops(trainer, real)
                warmup = args.warmup + (args.compile_warmup if variant == "compile" else 0)
                t0 = time.perf_counter()
                sec = time_iterations(trainer, real, warmup, args.iters)
                row = {"size": size, "variant": variant, "batch": batch, "sec_per_iter": sec,
                       "clips_per_s": batch / sec, "gflop_per_iter": flops / 1e9,
                       "tflops": flops / sec / 1e12, "device": device_name(trainer.device),
                       "wall_s": time.perf_counter() - t0}
                peak = peak_for(row["device"], VARIANTS[variant].get("precision", "fp32"))
                row["peak_fraction"] = row["tflops"] / peak if peak else None
                rows.append(row)
                print(f"  {size:5s} {variant:13s} {sec:8.3f} s/iter  {batch / sec:8.2f} clips/s", file=sys.stderr)
                del trainer
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"] and r["variant"] == "fp32") \
            if "fp32" in args.variants else None
        row["vs_fp32"] = row["clips_per_s"] / base["clips_per_s"] if base else None
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| size | variant | batch | s/iter | clips/s | vs fp32 eager | GFLOP/iter | TFLOP/s | of peak |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['vs_fp32']:.2f}x" if r["vs_fp32"] is not None else "-"
        peak = f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] is not None else "n/a"
        w, f, s = SIZES[r["size"]]
        lines.append(f"| {r['size']} (w{w}, {f}x{s}x{s}) | {r['variant']} | {r['batch']} | "
                     f"{r['sec_per_iter']:.3f} | {r['clips_per_s']:.2f} | {ratio} | "
                     f"{r['gflop_per_iter']:.1f} | {r['tflops']:.3f} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="paper,demo", type=lambda s: s.split(","))
    p.add_argument("--variants", default="fp32,bf16,channels_last,compile", type=lambda s: s.split(","))
    p.add_argument("--device", default="auto")
    p.add_argument("--paper-batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    p.add_argument("--demo-batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default: 2 CPU, 20 GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile-warmup", type=int, default=1, help="extra warm-up for torch.compile")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    for name in args.sizes:
        if name not in SIZES:
            p.error(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    for name in args.variants:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.paper_batch = args.paper_batch or (64 if gpu else 8)
    args.iters = args.iters or (20 if gpu else 2)
    rows = run(args)
    print(f"device: {rows[0]['device']}; torch {torch.__version__}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
