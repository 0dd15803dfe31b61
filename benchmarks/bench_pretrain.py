"""Speed of one VGAN training iteration (D step + G step), as the trainer runs it.

    python benchmarks/bench_pretrain.py                      # paper + CPU-demo sizes, 4 variants
    python benchmarks/bench_pretrain.py --sizes demo --iters 10 --variants fp32,bf16
    python benchmarks/bench_pretrain.py --quick              # demo size only

For each size and variant (fp32 eager, bf16 autocast, channels_last_3d, torch.compile) it times
`Trainer.train_step` on random clips after warm-up and reports clips/s and the ratio to fp32
eager; FLOPs per iteration come from torch.utils.flop_counter.FlopCounterMode (forward and
backward of both networks); on a GPU it also reports achieved TFLOP/s as a fraction of the card's
dense peak (bf16 peak for bf16, TF32 peak for fp32 since cuDNN convolutions use TF32 by default).
`run(args)` returns the numbers as data and `section(...)` renders the RESULTS.md section
(benchmarks/run_all.py calls both).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from runkit.cli import ArgumentParser
from benchmarks.common import busy_note, fmt_num, fmt_ratio, load_average, machine_info, md_table, notes, stamp
from pretrain.schema import PretrainConfig
from pretrain.trainer import Trainer
from runkit.atomic import atomic_write_json

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
    ("H100 NVL", 835.0, 417.5),
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


def make_trainer(size: str, variant: str, batch: int, device: str, tmp: Path, method: str = "vgan") -> Trainer:
    width, frames, px = SIZES[size]
    cfg = PretrainConfig(experiment_name=f"bench_{size}_{variant}_{method}", output_root=str(tmp))
    cfg.method.name = method
    cfg.model.width, cfg.model.frames, cfg.model.size = width, frames, px
    cfg.trainer.batch_size, cfg.trainer.device, cfg.trainer.progress = batch, device, False
    for key, value in VARIANTS[variant].items():
        setattr(cfg.trainer, key, value)
    return Trainer(cfg, run_dir=tmp / cfg.experiment_name)  # no data: train_step is timed on given batches


def count_flops(trainer: Trainer, real: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(real)
    return counter.get_total_flops()


def time_iterations(trainer: Trainer, real: torch.Tensor, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        trainer.train_step(real)
    trainer.policy.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        trainer.train_step(real)
    trainer.policy.synchronize()
    return (time.perf_counter() - start) / iters


def run(args) -> dict:
    """Time every (size, variant); returns {"rows": [...], ...} as plain data (see `section`)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    rows, method_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            batch = args.paper_batch if size == "paper" else args.demo_batch
            flops = None
            for variant in args.variants:
                trainer = make_trainer(size, variant, batch, args.device, Path(tmp))
                _, frames, px = SIZES[size]
                real = torch.randint(0, 256, (batch, frames, px, px, 3), dtype=torch.uint8)
                if flops is None:
                    flops = count_flops(trainer, real)
                warmup = args.warmup + (args.compile_warmup if variant == "compile" else 0)
                t0 = time.perf_counter()
                sec = time_iterations(trainer, real, warmup, args.iters)
                row = {"size": size, "variant": variant, "batch": batch, "sec_per_iter": sec,
                       "clips_per_s": batch / sec, "gflop_per_iter": flops / 1e9,
                       "tflops": flops / sec / 1e12, "device": device_name(trainer.policy.device),
                       "wall_s": time.perf_counter() - t0}
                peak = peak_for(row["device"], VARIANTS[variant].get("precision", "fp32"))
                row["peak_fraction"] = row["tflops"] / peak if peak else None
                rows.append(row)
                print(f"  {size:5s} {variant:13s} {sec:8.3f} s/iter  {batch / sec:8.2f} clips/s", file=sys.stderr)
                del trainer
            for method in args.methods:  # the other methods' steps, fp32 eager, beside VGAN's
                if method == "vgan":
                    continue
                trainer = make_trainer(size, "fp32", batch, args.device, Path(tmp), method)
                view = trainer.method.data_view()
                shape = (batch, *((view.views,) if view.views > 1 else ()), view.frames, px, px, 3)
                real = torch.randint(0, 256, shape, dtype=torch.uint8)
                sec = time_iterations(trainer, real, args.warmup, args.iters)
                method_rows.append({"size": size, "method": method, "batch": batch, "sec_per_iter": sec,
                                    "clips_per_s": batch / sec, "views": view.views, "frames_read": view.frames})
                print(f"  {size:5s} {method:13s} {sec:8.3f} s/iter  {batch / sec:8.2f} clips/s", file=sys.stderr)
                del trainer
    for row in rows:
        base = next(r for r in rows if r["size"] == row["size"] and r["variant"] == "fp32") \
            if "fp32" in args.variants else None
        row["vs_fp32"] = row["clips_per_s"] / base["clips_per_s"] if base else None
    for row in method_rows:
        vgan = next((r for r in rows if r["size"] == row["size"] and r["variant"] == "fp32"), None)
        row["vs_vgan"] = row["clips_per_s"] / vgan["clips_per_s"] if vgan else None
    return {"stage": "pretrain", "command": _command(args), "quick": args.quick, "rows": rows,
            "method_rows": method_rows,
            "iters": args.iters, "warmup": args.warmup, "compile_warmup": args.compile_warmup,
            "threads": torch.get_num_threads(), "device": rows[0]["device"] if rows else None}


def table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        peer = r["variant"] == "fp32"
        ratio = "1 (peer)" if peer else (fmt_ratio(r["vs_fp32"]) if r["vs_fp32"] is not None else "n/a")
        peak = f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] is not None else "n/a"
        w, f, s = SIZES[r["size"]]
        body.append((f"{r['size']} (w{w}, {f}x{s}x{s})", LABELS[r["variant"]] + (" **(peer)**" if peer else ""),
                     r["batch"], fmt_num(r["sec_per_iter"]), fmt_num(r["clips_per_s"]), ratio,
                     fmt_num(r["gflop_per_iter"], 4), fmt_num(r["tflops"], 2), peak))
    return md_table(["size", "variant", "batch", "s/iter", "clips/s", "ours/peer (clips/s)", "GFLOP/iter",
                     "TFLOP/s", "of peak"], body, "llrrrrrrr")


def methods_table(result: dict) -> str | None:
    """Every method's step beside VGAN's fp32 eager step (the peer), per size."""
    vgan = [r for r in result["rows"] if r["variant"] == "fp32"]
    if not result.get("method_rows") or not vgan:
        return None
    body = []
    for size in dict.fromkeys(r["size"] for r in vgan):
        w, f, s = SIZES[size]
        peer = next(r for r in vgan if r["size"] == size)
        body.append((f"{size} (w{w}, {f}x{s}x{s})", "vgan (paper losses) **(peer)**", peer["batch"],
                     fmt_num(peer["sec_per_iter"]), fmt_num(peer["clips_per_s"]), "1 (peer)"))
        for r in (r for r in result["method_rows"] if r["size"] == size):
            body.append((f"{size} (w{w}, {f}x{s}x{s})", METHOD_LABELS.get(r["method"], r["method"]), r["batch"],
                         fmt_num(r["sec_per_iter"]), fmt_num(r["clips_per_s"]),
                         fmt_ratio(r["vs_vgan"]) if r["vs_vgan"] is not None else "n/a"))
    return md_table(["size", "method (fp32 eager)", "batch", "s/iter", "clips/s", "ours/peer (clips/s)"], body,
                    "llrrrr")


METHOD_LABELS = {"contrastive": "contrastive (2 clips per video, InfoNCE)",
                 "speed": "playback speed (reads clips 4x as long)"}
HEADING = "Pretraining"
LABELS = {"fp32": "fp32 eager", "bf16": "bf16 autocast", "channels_last": "channels_last_3d",
          "compile": "torch.compile"}
METHOD = ("One iteration = the trainer's own `train_step`: D step on a real and a fake batch, then "
          "the G step (paper settings: softmax CE, G step on the D step's fakes, mask sparsity 0.1), "
          "on random clips. The peer of every variant is fp32 eager at the same size and batch, "
          "measured in the same run. FLOPs from `torch.utils.flop_counter` (forward + backward of G "
          "and D, counted once per size).")


def _notes(result: dict, info: dict) -> list[str]:
    rows, out = result["rows"], []
    by = {(r["size"], r["variant"]): r for r in rows}
    for size in dict.fromkeys(r["size"] for r in rows):
        group = [r for r in rows if r["size"] == size]
        first = group[0]
        line = (f"{size} size: one GAN iteration at batch {first['batch']} is {fmt_num(first['gflop_per_iter'], 4)} "
                f"GFLOP ({fmt_num(first['gflop_per_iter'] / first['batch'], 3)} GFLOP per clip)")
        if size == "paper" and first["batch"] != 64:
            line += f"; at the paper's batch 64 that is {fmt_num(first['gflop_per_iter'] / first['batch'] * 64 / 1000, 3)} TFLOP"
        best = max(group, key=lambda r: r["clips_per_s"])
        if best["vs_fp32"] is not None and best["variant"] != "fp32":
            line += f". Fastest: {LABELS[best['variant']]}, {fmt_ratio(best['vs_fp32'])} fp32 eager's clips/s"
        elif best["variant"] == "fp32":
            line += ". Fastest: fp32 eager itself"
        out.append(line + ".")
        compiled = by.get((size, "compile"))
        if compiled and compiled["vs_fp32"] is not None and compiled["vs_fp32"] < 1:
            out.append(f"torch.compile is slower than eager at {size} size ({fmt_ratio(compiled['vs_fp32'])}): with "
                       f"{result['warmup'] + result['compile_warmup']} warm-up iteration(s) the timed ones likely still "
                       f"include recompilation (D's `requires_grad` flips between the D and G steps, which Dynamo "
                       f"guards on), so that row is not a steady-state figure.")
    cpu_rows = [r for r in rows if "CPU" in str(r["device"])]
    if cpu_rows and any(r["variant"] == "bf16" for r in cpu_rows):
        if info.get("cpu_bf16"):
            out.append(f"bf16 autocast on CPU runs on oneDNN's bf16 kernels; this CPU has "
                       f"{', '.join(info['cpu_bf16'])}. Without them bf16 is emulated and slower than fp32.")
        else:
            out.append("This CPU reports no bf16 instructions (avx512_bf16 / AMX): bf16 autocast is emulated here.")
    if not any(r["peak_fraction"] is not None for r in rows):
        out.append("No fraction of peak: measured on "
                   + ("a CPU" if cpu_rows else "a GPU missing from the peak table")
                   + " (on H100/H200/A100/L40S/A10G the script reports TFLOP/s against the card's dense "
                     "bf16 / TF32 peak).")
    out.append(f"Each figure is the mean of {result['iters']} timed iteration(s) after {result['warmup']} "
               f"warm-up (+{result['compile_warmup']} for torch.compile): one sample per variant, so "
               f"differences of a few percent are noise.")
    return out


def section(result: dict, info: dict, load_end=None) -> str:
    """The "## Pretraining" section of RESULTS.md, from `run`'s result."""
    methods = methods_table(result)
    return common.section(
        HEADING,
        f"`{result['command']}` (or `python benchmarks/run_all.py --only pretrain`).",
        stamp(info, quick=result["quick"], load_end=load_end),
        f"Device: {result['device']}; torch threads: {result['threads']}.",
        table(result["rows"]),
        *(["Every method's training step on the same backbone and batch (clips/s counts training items; "
           "a contrastive item is two clips of one video), against VGAN's in the same run:", methods]
          if methods else []),
        notes([*_notes(result, info), busy_note(info, load_end), METHOD]))


def _command(args) -> str:
    flags = ["--quick"] if args.quick else []
    defaults = parse_args(["--quick"] if args.quick else [])
    for name in ("sizes", "variants", "methods", "paper_batch", "demo_batch", "iters", "warmup", "compile_warmup",
                 "threads", "device"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            text = ",".join(value) if isinstance(value, list) else str(value)
            flags += [f"--{name.replace('_', '-')}", text]
    return " ".join(["python benchmarks/bench_pretrain.py", *flags])


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(prog=common.prog(__file__), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None, type=lambda s: s.split(","),
                   help="paper,demo (default both; --quick: demo)")
    p.add_argument("--variants", default="fp32,bf16,channels_last,compile", type=lambda s: s.split(","))
    p.add_argument("--methods", default="vgan,contrastive,speed", type=lambda s: s.split(","),
                   help="pretraining methods timed beside VGAN (fp32 eager)")
    p.add_argument("--device", default="auto")
    p.add_argument("--paper-batch", type=int, default=None, help="default: 8 on CPU, 64 on GPU")
    p.add_argument("--demo-batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default: 2 CPU, 20 GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile-warmup", type=int, default=1, help="extra warm-up for torch.compile")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="demo size only (a smoke run)")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = ["demo"] if args.quick else ["paper", "demo"]
    for name in args.sizes:
        if name not in SIZES:
            p.error(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    for name in args.variants:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    from pretrain.methods import METHODS
    for name in args.methods:
        if name not in METHODS:
            p.error(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    gpu = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    args.paper_batch = args.paper_batch or (64 if gpu else 8)
    args.iters = args.iters or (20 if gpu else 2)
    return args


def main(argv=None) -> int:
    return common.bench_main(argv, parse_args, run, section, HEADING)


if __name__ == "__main__":
    sys.exit(main())
