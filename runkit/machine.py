"""What machine and software stack a result was measured on (for reports and benchmarks)."""
from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Iterable

import torch


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: fall back to what platform knows
        model, flags = "", set()
    return model or platform.processor() or platform.machine(), flags


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return None
    return None


def package_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(packages: Iterable[str] = ("torch",)) -> dict:
    """Host, OS, CPU (model, bf16 instructions, cores, cores usable by this process), RAM, GPUs,
    CUDA build, and the versions of `packages` (pip distribution names) as plain JSON-able data."""
    model, flags = _cpuinfo()
    try:
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - a broken CUDA set-up still gets described
        gpus = []
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    versions = {name: package_version(name) for name in packages}
    if "torch" in versions:
        versions["torch"] = torch.__version__  # carries the build tag (+cpu, +cu130) metadata drops
    return {
        "host": socket.gethostname(),
        "os": platform.platform(),
        "cpu": model,
        "cpu_bf16": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "ram_gib": _ram_gib(),
        "gpus": gpus,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "versions": versions,
    }
