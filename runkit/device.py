"""One device policy for every stage: which device, which precision, which memory format, compiled
or not, and how a batch of uint8 clips becomes the model's input there.

    policy = DevicePolicy.create("auto", precision="bf16", local_rank=info.local_rank)
    model = policy.module(model)                  # on the device, channels_last_3d if asked
    x = to_model_input(policy.to(uint8_batch), channels_last=policy.channels_last)  # videodata.decode
    with policy.autocast():
        loss = criterion(model(x), y)
    scaler = policy.grad_scaler()                 # active for fp16 only; a pass-through otherwise
    scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()

device: "auto" (the local rank's GPU when CUDA is there, else the CPU), "cpu", "cuda",
"cuda:N", or "meta" (tests: every op runs shape-only, and a tensor left on the CPU raises).
precision: "fp32", "bf16" (autocast to bfloat16; needs no scaler), "fp16" (autocast to float16
with a GradScaler, CUDA only) or "auto": bf16 where the hardware runs it natively (a GPU with bf16
tensor cores; a CPU with AVX512-BF16 or AMX), else fp32 - never bf16 emulated in software, which
is slower than fp32. `policy.precision` is the resolved one (what `describe()` prints and results
record). Batches move as uint8 (a quarter of the bytes of float32) and are
converted on the device (`videodata.decode.to_model_input`); with pinned host memory the copy is
asynchronous.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from runkit.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(UserError):
    """The requested device or precision is not available here."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`name` as a torch.device, checked against what this machine has."""
    name = requested = str(name).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} asked for, but CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use device=cpu")
        count = torch.cuda.device_count()
        index = device.index if device.index is not None else 0
        if index >= count:
            raise DeviceError(f"device {requested!r} asked for, but only {count} GPU(s) are visible "
                              f"(cuda:0..cuda:{count - 1})")
        device = torch.device("cuda", index)
    elif device.type not in ("cpu", "meta", "mps"):
        raise DeviceError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively on `device` (precision "auto" picks it there)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


@dataclass(frozen=True)
class DevicePolicy:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def create(cls, device: str = "auto", precision: str = "fp32", channels_last: bool = False,
               compile: bool = False, local_rank: int = 0) -> "DevicePolicy":
        if precision not in PRECISIONS:
            raise DeviceError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
        resolved = resolve_device(device, local_rank)
        if precision == "auto":
            precision = "bf16" if native_bf16(resolved) else "fp32"
        if precision == "fp16" and resolved.type != "cuda":
            raise DeviceError(f"precision fp16 needs a CUDA device (got {resolved}); use bf16 on the CPU")
        return cls(resolved, precision, bool(channels_last), bool(compile))

    # ------------------------------------------------------------------ models and batches
    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        """DataLoaders pin host memory when the batches go to a GPU (asynchronous copies)."""
        return self.is_cuda

    def module(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` on the device (in place), 5-D weights in channels_last_3d when asked."""
        model.to(self.device)
        if self.channels_last:
            for p in model.parameters():
                if p.dim() == 5:
                    p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
                elif p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
        return model

    def to(self, tensor: torch.Tensor) -> torch.Tensor:
        """Any tensor (labels, noise, features) on the device; asynchronous from pinned memory."""
        return tensor.to(self.device, non_blocking=self.is_cuda)

    def maybe_compile(self, fn: Callable) -> Callable:
        return torch.compile(fn) if self.compile else fn

    # ------------------------------------------------------------------ precision
    def autocast(self):
        """Mixed precision for bf16 / fp16; a no-op context for fp32 (and on the meta device)."""
        if self.precision == "fp32" or self.device.type == "meta":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only for fp16 (bf16 keeps fp32's exponent range)."""
        return torch.amp.GradScaler(self.device.type if self.is_cuda else "cpu",
                                    enabled=self.precision == "fp16")

    def synchronize(self) -> None:
        """Wait for queued GPU work (for timing); nothing to do elsewhere."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def describe(self) -> str:
        """e.g. `cuda:0 (NVIDIA H200), bf16, channels_last_3d` or `cpu, fp32`."""
        extras = [self.precision] + (["channels_last_3d"] if self.channels_last else []) \
            + (["compiled"] if self.compile else [])
        where = f"{self.device} ({torch.cuda.get_device_name(self.device)})" if self.is_cuda else str(self.device)
        return ", ".join([where, *extras])
