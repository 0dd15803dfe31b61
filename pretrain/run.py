"""Pretrain: `python pretrain/run.py [experiment=cpu_demo|vgan_paper|improved|...] [method=...] [key=value ...]`.

A thin Hydra entry: check the composed config first (one `error:` line and exit status 2 for a
bad key or value, a device that is not there, a missing data folder, or a named run folder that
holds another config's run: all before any work), set up data-parallel ranks from torchrun/SLURM variables, and
call `pretrain.trainer.fit`. The run folder derives from the config and the data (see
pretrain/trainer.py); running the same command again resumes it.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pretrain.config import compose, explain, register
from pretrain.trainer import NonFiniteLossError, check_start, fit
from runkit.cli import debugging, fail
from runkit.distributed import cleanup, init_distributed
from runkit.errors import UserError

log = logging.getLogger("pretrain")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def train(cfg: DictConfig) -> None:
    info = init_distributed()
    try:
        result = fit(cfg, dist_info=info)
    except UserError as exc:
        if debugging():
            raise
        sys.exit(fail(str(exc)))
    except NonFiniteLossError as exc:
        log.error("%s", exc)
        sys.exit(1)
    finally:
        cleanup()
    if info.is_main:
        log.info("pretraining %s at step %d: %s", result.stopped, result.step, result.export_path)
        print(f"discriminator exported to {result.export_path} (step {result.step}, {result.stopped})")


def main() -> None:
    register()
    args = [a for a in sys.argv[1:] if a != "--debug"]
    sys.argv = sys.argv[:1] + args
    multirun = any(a in ("-m", "--multirun") for a in args)
    if not multirun and not any(a.startswith("-") for a in args):
        # the same composition Hydra is about to do, so a bad key or value is one line, not a traceback
        try:
            check_start(compose([a for a in args if not a.startswith(("hydra.", "hydra/"))]))
        except (HydraException, OmegaConfBaseException, UserError) as exc:
            if debugging(args):
                raise
            sys.exit(fail(f"pretrain/run.py: {explain(exc)}"))
    train()


if __name__ == "__main__":
    main()
