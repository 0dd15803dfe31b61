"""Process-group set-up from torchrun or SLURM environment variables; rank-0 helpers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return default


def detect() -> DistInfo:
    """Rank and world size from torchrun (RANK/WORLD_SIZE) or SLURM (SLURM_PROCID/SLURM_NTASKS)."""
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed when more than one process takes part; otherwise a no-op.

    Under SLURM, submitit's TorchDistributedEnvironment().export() (called by the job wrapper)
    sets MASTER_ADDR/PORT, RANK, WORLD_SIZE; under torchrun they are already there.
    """
    info = detect()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    if "MASTER_ADDR" not in os.environ:
        try:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export()
        except Exception as exc:  # not under submitit: the user must set MASTER_ADDR/PORT
            raise RuntimeError("WORLD_SIZE>1 but MASTER_ADDR is not set and this is not a "
                               f"submitit job ({exc}); launch with torchrun or through slurm/") from exc
        info = detect()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, init_method="env://",
                            rank=info.rank, world_size=info.world_size)
    return info


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
