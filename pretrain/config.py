"""Composing the pretraining config outside `@hydra.main` (SLURM launcher, start-up checks), and
the two things Hydra needs registered first: the typed schema and the `vgan_path` resolver."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose as hydra_compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from pretrain.schema import PretrainConfig, validate
from runkit.paths import resolve_path

CONF_DIR = Path(__file__).resolve().parent / "conf"


def register() -> None:
    """Store the schema as `pretrain_schema` and register `${vgan_path:...}` (idempotent)."""
    ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)
    if not OmegaConf.has_resolver("vgan_path"):
        OmegaConf.register_new_resolver("vgan_path", lambda p: str(resolve_path(p)))


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python pretrain/run.py <overrides>` would run, type-checked and range-checked
    (Hydra's composition errors and `pretrain.schema.ConfigError` propagate)."""
    register()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra", None)
    validate(cfg)
    return cfg


def explain(exc: BaseException) -> str:
    """A composition or validation error as one sentence: the message's first line and the key."""
    messages = []
    while exc is not None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("full_key")]
        # the first message whole (Hydra lists the available options on its next lines), then
        # the first line of each cause
        text = " ".join(lines).split(" Config search path:")[0] if not messages else (lines[0] if lines else "")
        if text and text not in messages:
            messages.append(text)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return "; ".join(messages[:3]) or "invalid configuration"
