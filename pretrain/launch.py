"""Pretraining as a preemption-safe submitit job: `python -m pretrain.launch`.

    python -m pretrain.launch --cluster local experiment=cpu_demo run_name=demo_slurm
    python -m pretrain.launch --cluster my_gpu_cluster --tasks-per-node 4 experiment=vgan_paper

The config is composed from pretrain/conf exactly as `python pretrain/run.py` would (same
overrides); the job calls `pretrain.trainer.fit`, whose run directory derives from the config, so
a requeued job resumes from its newest checkpoint. On SIGUSR2 (preemption, or `signal_delay_s`
before the time limit) the trainer finishes its step, checkpoints, and `runkit.preemption`
hands over to submitit, which requeues the job. Multi-task jobs (one task per GPU) get their
DDP environment from submitit's TorchDistributedEnvironment.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import submitit
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pretrain.config import compose, explain
from pretrain.schema import ConfigError, to_plain
from pretrain.trainer import as_config, fit
from runkit.cli import ArgumentParser, run
from runkit.distributed import cleanup, init_distributed
from runkit.paths import resolve_path
from slurm.executors import KINDS, make_executor
from slurm.jobs import PreemptibleCall, collect_results
from slurm.profiles import load_profile


def compose_pretrain_config(overrides: Sequence[str] = ()) -> dict:
    """The resolved pretraining config (plain dict) for these Hydra overrides."""
    return to_plain(compose(overrides))


def run_pretraining(cfg: dict, dataset: Any = None) -> dict:
    """Inside the job: set up DDP if there are several tasks, train (resuming), report."""
    info = init_distributed(backend=None)
    try:
        result = fit(cfg, dataset, dist_info=info)
    finally:
        cleanup()
    return {"rank": info.rank, "world_size": info.world_size, "step": result.step,
            "stopped": result.stopped, "run_dir": str(result.run_dir),
            "export": str(result.export_path) if result.export_path else None}


def submit_pretraining(cfg: dict, kind: str = "slurm", cluster: Any = "local",
                       folder: str | Path | None = None, dataset: Any = None,
                       **profile_overrides: Any) -> submitit.Job:
    """Submit one pretraining run; submitit's files go to `<output_root>/<run_name>/submitit`
    (`<output_root>/submitit/<experiment>-<method>` while the run is named by its config)."""
    cfg = to_plain(as_config(cfg))  # every key, defaults filled in
    root = resolve_path(cfg["output_root"])
    named = cfg["run_name"] != "auto"
    default = root / cfg["run_name"] / "submitit" if named else \
        root / "submitit" / f"{cfg['experiment_name']}-{cfg['method']['name']}"
    folder = Path(folder) if folder is not None else default
    executor = make_executor(kind, folder / "%j", cluster, job_name=f"pretrain-{cfg['experiment_name']}",
                             **profile_overrides)
    return executor.submit(PreemptibleCall(run_pretraining, cfg, dataset))


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m pretrain.launch", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=KINDS, default="slurm")
    parser.add_argument("--cluster", default="local", help="profile in slurm/conf/cluster/ or a YAML path")
    parser.add_argument("--tasks-per-node", type=int, default=None, help="DDP ranks per node")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--timeout-min", type=int, default=None)
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for pretrain/run.py")
    args = parser.parse_args(argv)
    try:
        cfg = compose_pretrain_config(args.overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"pretrain.launch: {explain(exc)}") from None
    load_profile(args.cluster, **{k: v for k, v in (("tasks_per_node", args.tasks_per_node), ("nodes", args.nodes),
                                                     ("timeout_min", args.timeout_min)) if v is not None})
    profile_overrides = {k: v for k, v in (("tasks_per_node", args.tasks_per_node), ("nodes", args.nodes),
                                            ("timeout_min", args.timeout_min)) if v is not None}
    job = submit_pretraining(cfg, kind=args.executor, cluster=args.cluster, **profile_overrides)
    print(f"submitted pretraining {cfg['experiment_name']!r} ({cfg['method']['name']}) as job {job.job_id} "
          f"(logs: {job.paths.stdout.parent})")
    if args.wait:
        [result] = collect_results([job])
        print(f"finished: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main(), sys.argv[1:]))
