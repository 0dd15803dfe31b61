"""Pretrain VGAN: `python pretrain/run.py [experiment=cpu_demo|vgan_paper|improved] [key=value ...]`.

A thin Hydra entry: compose and type-check the config (pretrain/schema.py), set up
data-parallel ranks from torchrun/SLURM variables, and call `pretrain.trainer.fit`. The run
directory is `<output_root>/<run_name>` (default outputs/pretrain/<experiment>), relative to the
repository root; running again with the same run_name resumes from its newest checkpoint.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from pretrain.data import resolve_path
from pretrain.schema import register
from pretrain.trainer import REPO_ROOT, NonFiniteLossError, fit

log = logging.getLogger("pretrain")

register()
if not OmegaConf.has_resolver("vgan_path"):
    OmegaConf.register_new_resolver("vgan_path", lambda p: str(resolve_path(p, REPO_ROOT)))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from runkit.distributed import cleanup, init_distributed

    info = init_distributed()
    try:
        result = fit(cfg, dist_info=info)
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        sys.exit(1)
    finally:
        cleanup()
    if info.is_main:
        log.info("pretraining %s at step %d: %s", result.stopped, result.step, result.export_path)
        print(f"discriminator exported to {result.export_path} (step {result.step}, {result.stopped})")


if __name__ == "__main__":
    main()
