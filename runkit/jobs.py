"""The shape of a job runner, for library code that runs work as jobs without knowing where they
run (`videodata.cache.ClipCache.build`): `slurm.jobs.job_runner(executor)` makes one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class JobReport:
    """How one job of a job runner ended."""
    name: str
    ok: bool
    error: str = ""
    log: str = ""


# run_jobs(fn, arg_lists) -> one JobReport per argument list, in order: fn(*args) run as a job each
RunJobs = Callable[[Callable, list[tuple]], list[JobReport]]
