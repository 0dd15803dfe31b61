"""Pretraining methods on the VGAN discriminator's 3D-CNN (vgan, contrastive, speed) and on the
video ViT (mae): a method is one module here and one config under pretrain/conf/method/ (see
pretrain.methods.base for the interface)."""
from __future__ import annotations

from typing import Any

from pretrain.methods.base import DataView, Method
from pretrain.methods.contrastive import Contrastive
from pretrain.methods.mae import MAE
from pretrain.methods.speed import Speed
from pretrain.methods.vgan import VGAN
from pretrain.schema import ConfigError

METHODS: dict[str, type[Method]] = {method.name: method for method in (VGAN, Contrastive, Speed, MAE)}


def build_method(cfg: Any, policy, dist_info) -> Method:
    name = cfg.method.name
    if name not in METHODS:
        raise ConfigError(f"unknown pretraining method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](cfg, policy, dist_info)


__all__ = ["METHODS", "Method", "DataView", "build_method"]
