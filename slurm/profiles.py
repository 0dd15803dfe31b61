"""Cluster profiles: the YAML group `slurm/conf/cluster/<name>.yaml` as a typed `ClusterProfile`.

A profile says where and how big a job is (partition, GPUs, CPUs, memory, time limit, account,
QOS, constraint) and how it survives preemption (signal delay, how many timeouts may requeue it).
Unknown keys are an error that names the key, so a typo never silently drops a setting.

The same files form a Hydra config group: add `pkg://slurm.conf` to `hydra.searchpath` and select
one with `cluster=local`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from runkit.errors import UserError, yaml_problem

PROFILE_DIR = Path(__file__).resolve().parent / "conf" / "cluster"
# the kinds of sweep job a profile sizes (each transfer protocol names its kind)
JOB_KINDS = ("train", "features")


class ProfileError(UserError, ValueError):
    """A cluster profile is missing, malformed or has a key that is not a profile field."""


@dataclass(frozen=True)
class JobRequest:
    """What one sweep job asks SLURM for (a single task)."""
    kind: str
    gpus: int
    cpus: int
    mem_gb: float | None

    def describe(self) -> str:
        mem = f", {self.mem_gb:g} GB" if self.mem_gb else ""
        return f"{self.gpus} GPU(s), {self.cpus} CPU(s){mem}"

    def profile_overrides(self) -> dict[str, Any]:
        """The profile fields that express this request for `slurm.executors.make_executor`."""
        out: dict[str, Any] = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": self.gpus, "cpus_per_task": self.cpus}
        if self.mem_gb is not None:
            out["mem_gb"] = self.mem_gb
        return out


@dataclass(frozen=True)
class ClusterProfile:
    name: str = "custom"
    partition: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    signal_delay_s: int = 90
    max_num_timeout: int = 3
    array_parallelism: int = 256
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    additional_parameters: Mapping[str, Any] = field(default_factory=dict)
    # sweep jobs (one task each): GPUs per job, and CPUs / memory per GPU; probe jobs may ask for
    # more CPUs for their scikit-learn fits. 0 GPUs: CPU jobs of cpus_per_task CPUs and mem_gb.
    gpus_per_task: int = 0
    cpus_per_gpu: int = 0
    mem_per_gpu_gb: float | None = None
    probe_cpus: int = 0

    def __post_init__(self) -> None:
        for key in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min", "array_parallelism"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ProfileError(f"cluster profile {self.name!r}: {key} must be an integer >= 1, "
                                   f"got {value!r}")
        for key in ("gpus_per_node", "signal_delay_s", "max_num_timeout", "gpus_per_task", "cpus_per_gpu",
                    "probe_cpus"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ProfileError(f"cluster profile {self.name!r}: {key} must be an integer >= 0, "
                                   f"got {value!r}")
        if self.mem_gb is not None and (not isinstance(self.mem_gb, (int, float)) or self.mem_gb <= 0):
            raise ProfileError(f"cluster profile {self.name!r}: mem_gb must be a positive number or "
                               f"null, got {self.mem_gb!r}")
        if self.mem_per_gpu_gb is not None and (not isinstance(self.mem_per_gpu_gb, (int, float))
                                                or self.mem_per_gpu_gb <= 0):
            raise ProfileError(f"cluster profile {self.name!r}: mem_per_gpu_gb must be a positive number or "
                               f"null, got {self.mem_per_gpu_gb!r}")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise ProfileError(f"cluster profile {self.name!r}: signal_delay_s={self.signal_delay_s} "
                               f"is not shorter than the time limit ({self.timeout_min} min)")
        if isinstance(self.setup, str) or not all(isinstance(s, str) for s in self.setup):
            raise ProfileError(f"cluster profile {self.name!r}: setup must be a list of shell lines")
        object.__setattr__(self, "setup", tuple(self.setup))
        if not isinstance(self.additional_parameters, Mapping):
            raise ProfileError(f"cluster profile {self.name!r}: additional_parameters must be a "
                               f"mapping of sbatch options")
        object.__setattr__(self, "additional_parameters", dict(self.additional_parameters))

    @property
    def tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    def job_request(self, kind: str) -> JobRequest:
        """The resources of one sweep job: "train" (one cell that trains a network, e.g. fine-tuning)
        or "features" (cells that share frozen features: a GPU to extract them, `probe_cpus` CPUs
        to fit the probes)."""
        if kind not in JOB_KINDS:
            raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
        gpus = self.gpus_per_task
        if gpus:
            cpus = max(1, gpus * self.cpus_per_gpu) if self.cpus_per_gpu else self.cpus_per_task
            mem = gpus * self.mem_per_gpu_gb if self.mem_per_gpu_gb else self.mem_gb
        else:
            cpus, mem = self.cpus_per_task, self.mem_gb
        if kind == "features":
            cpus = max(cpus, self.probe_cpus)
        return JobRequest(kind, gpus, cpus, mem)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], name: str = "custom") -> "ClusterProfile":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ProfileError(f"cluster profile {name!r}: unknown key(s) {unknown}; valid keys are "
                               f"{sorted(known - {'name'})}")
        values = {"name": name, **values}
        if values.get("setup") is None:
            values["setup"] = ()
        if values.get("additional_parameters") is None:
            values["additional_parameters"] = {}
        return cls(**values)

    def replace(self, **overrides: Any) -> "ClusterProfile":
        """A copy with some fields changed; unknown fields raise ProfileError naming them."""
        return ClusterProfile.from_dict({**self.to_dict(), **overrides}, name=self.name)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("name")
        out["setup"] = list(self.setup)
        out["additional_parameters"] = dict(self.additional_parameters)
        return out


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(cluster: str | Path | Mapping[str, Any] | ClusterProfile = "local",
                 **overrides: Any) -> ClusterProfile:
    """A profile by name (`slurm/conf/cluster/<name>.yaml`), by YAML path, or from a mapping
    (e.g. a Hydra `cfg.cluster` node converted to a dict), with `overrides` applied on top."""
    if isinstance(cluster, ClusterProfile):
        profile = cluster
    elif isinstance(cluster, Mapping):
        profile = ClusterProfile.from_dict(dict(cluster), name=str(cluster.get("name", "custom")))
    else:
        text = str(cluster)
        path = Path(text) if text.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ProfileError(f"cluster profile {text!r} not found at {path}; available: "
                               f"{', '.join(available_profiles())}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ProfileError(f"cluster profile {path} is not valid YAML: {yaml_problem(exc)}") from None
        if not isinstance(values, dict):
            raise ProfileError(f"cluster profile {path} must be a mapping of keys, got "
                               f"{type(values).__name__}")
        values.pop("name", None)
        profile = ClusterProfile.from_dict(values, name=path.stem)
    return profile.replace(**overrides) if overrides else profile
