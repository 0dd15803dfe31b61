"""`make_executor(kind, folder, cluster, **overrides)`: one call that returns a configured
submitit executor.

- "slurm": sbatch on a real cluster, sized by a cluster profile (`slurm/conf/cluster/<name>.yaml`):
  partition, GPUs, CPUs, memory, time limit, account, QOS, constraint; SIGUSR2
  `signal_delay_s` before the limit; timeouts requeue a Checkpointable job up to `max_num_timeout`
  times; job arrays run at most `array_parallelism` tasks at once.
- "local": each job in a subprocess on this machine (no scheduler), same interface.
- "debug": in this process, for tests and pdb.

All three are `submitit.AutoExecutor`s, so `executor.submit`, `executor.map_array` and
`with executor.batch():` work the same way on each.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import submitit

from slurm.profiles import ClusterProfile, load_profile

KINDS = ("slurm", "local", "debug")


class ExecutorError(RuntimeError):
    """The executor cannot be built here (unknown kind, no SLURM commands on this machine)."""


def slurm_parameters(profile: ClusterProfile, job_name: str | None = None) -> dict[str, Any]:
    """The `AutoExecutor.update_parameters` keywords that express `profile`."""
    params: dict[str, Any] = {
        "timeout_min": profile.timeout_min,
        "nodes": profile.nodes,
        "tasks_per_node": profile.tasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "slurm_signal_delay_s": profile.signal_delay_s,
        "slurm_array_parallelism": profile.array_parallelism,
    }
    if profile.mem_gb is not None:
        params["mem_gb"] = profile.mem_gb
    # --gpus-per-node=0 is rejected by clusters without GRES: say nothing when no GPU is wanted.
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    optional = {"slurm_partition": profile.partition, "slurm_account": profile.account,
                "slurm_qos": profile.qos, "slurm_constraint": profile.constraint}
    params.update({k: v for k, v in optional.items() if v is not None})
    if profile.setup:
        params["slurm_setup"] = list(profile.setup)
    if profile.additional_parameters:
        params["slurm_additional_parameters"] = dict(profile.additional_parameters)
    if job_name:
        params["name"] = job_name
    return params


def make_executor(kind: str, folder: str | Path, cluster: Any = "local", *,
                  job_name: str | None = None, **overrides: Any) -> submitit.AutoExecutor:
    """A submitit executor of `kind` writing its pickles and logs under `folder`.

    `cluster` is a profile name, a YAML path, a mapping or a `ClusterProfile`; `overrides` change
    profile fields for this executor (`timeout_min=5`, `tasks_per_node=2`, ...): an unknown field
    raises `ProfileError` naming it. "local" and "debug" use the time limit, task count and
    `max_num_timeout`; the SLURM-only fields are ignored there.
    """
    if kind not in KINDS:
        raise ExecutorError(f"unknown executor kind {kind!r}; expected one of {KINDS}")
    profile = load_profile(cluster, **overrides)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "slurm":
        missing = [c for c in ("sbatch", "srun", "squeue", "scontrol") if shutil.which(c) is None]
        if missing:
            raise ExecutorError(f"executor 'slurm' needs the SLURM client commands; missing "
                                f"{missing} (on this machine: bash slurm/local-cluster/start.sh)")
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                         slurm_max_num_timeout=profile.max_num_timeout)
        executor.update_parameters(**slurm_parameters(profile, job_name))
    elif kind == "local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local",
                                         local_max_num_timeout=profile.max_num_timeout)
        executor.update_parameters(timeout_min=profile.timeout_min,
                                   tasks_per_node=profile.tasks_per_node,
                                   **({"name": job_name} if job_name else {}))
    else:
        executor = submitit.AutoExecutor(folder=folder, cluster="debug")
        executor.update_parameters(timeout_min=profile.timeout_min,
                                   **({"name": job_name} if job_name else {}))
    executor.profile = profile  # what it was built from, for logs and --dry-run listings
    return executor
