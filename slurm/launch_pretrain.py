"""Pretraining as a preemption-safe submitit job: `python -m slurm.launch_pretrain`.

    python -m slurm.launch_pretrain --cluster local experiment=cpu_demo run_name=demo_slurm
    python -m slurm.launch_pretrain --cluster my_gpu_cluster --tasks-per-node 4 experiment=vgan_paper

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

from slurm.executors import KINDS, make_executor
from slurm.jobs import PreemptibleCall, collect_results

CONF_DIR = Path(__file__).resolve().parents[1] / "pretrain" / "conf"


def compose_pretrain_config(overrides: Sequence[str] = ()) -> dict:
    """The resolved pretraining config (plain dict) for these Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import pretrain.run  # noqa: F401  registers the schema and the vgan_path resolver
    from pretrain.schema import to_plain

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    return to_plain(cfg)


def run_pretraining(cfg: dict, dataset: Any = None) -> dict:
    """Inside the job: set up DDP if there are several tasks, train (resuming), report."""
    from pretrain.trainer import fit
    from runkit.distributed import cleanup, init_distributed

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
    """Submit one pretraining run; submitit's files go to `<run_dir>/submitit` by default."""
    from pretrain.trainer import run_dir_for, as_config

    run_dir = run_dir_for(as_config(cfg))
    folder = Path(folder) if folder is not None else run_dir / "submitit"
    executor = make_executor(kind, folder / "%j", cluster, job_name=f"pretrain-{cfg['run_name']}",
                             **profile_overrides)
    return executor.submit(PreemptibleCall(run_pretraining, cfg, dataset))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=KINDS, default="slurm")
    parser.add_argument("--cluster", default="local", help="profile in slurm/conf/cluster/ or a YAML path")
    parser.add_argument("--tasks-per-node", type=int, default=None, help="DDP ranks per node")
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--timeout-min", type=int, default=None)
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its result")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for pretrain/run.py")
    args = parser.parse_args(argv)
    cfg = compose_pretrain_config(args.overrides)
    profile_overrides = {k: v for k, v in (("tasks_per_node", args.tasks_per_node), ("nodes", args.nodes),
                                            ("timeout_min", args.timeout_min)) if v is not None}
    job = submit_pretraining(cfg, kind=args.executor, cluster=args.cluster, **profile_overrides)
    print(f"submitted pretraining {cfg['run_name']!r} as job {job.job_id} "
          f"(logs: {job.paths.stdout.parent})")
    if args.wait:
        [result] = collect_results([job])
        print(f"finished: {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
