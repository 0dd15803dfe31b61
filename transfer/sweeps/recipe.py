"""Transfer recipes: structured configs (OmegaConf), like pretraining's.

A recipe is `transfer/conf/recipe/<name>.yaml` (or any YAML path) merged onto the `Recipe` schema
below, then `key=value` overrides in Hydra's syntax (`finetune.iterations=500`,
`probe.c_grid=[0.1,1,10]`). OmegaConf rejects an unknown key or a value of the wrong type naming
it; each section's dataclass checks its ranges and choices (`__post_init__`). Everything happens
at start-up, before any job runs.

Sections: `finetune` (transfer.finetune.FinetuneRecipe), `probe` (transfer.probe.ProbeRecipe,
linear and k-NN), `features` (transfer.features.FeatureSpec), `attentive` (transfer.attentive.
AttentiveRecipe, the attentive probe), `cache` (what the clip caches hold),
`runtime` (how cells run: device, precision, memory format, compile, loader workers). A cell's
identity hashes every section that can change its numbers: not `runtime` except its precision.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runkit.device import PRECISIONS
from runkit.errors import yaml_problem
from transfer.attentive import AttentiveRecipe
from transfer.features import FeatureSpec
from transfer.finetune import FinetuneRecipe
from transfer.probe import ProbeRecipe
from transfer.sweeps.spec import SweepError

RECIPE_DIR = Path(__file__).resolve().parents[1] / "conf" / "recipe"


@dataclass
class CacheRecipe:
    """The decode-once clip caches of the labeled videos (videodata.cache)."""
    train_max_frames: Optional[int] = 64   # fine-tune training clips come from the first frames
    eval_max_frames: Optional[int] = None  # test (and probe) clips spread over the whole video
    eval_stride: int = 1                   # keep every k-th frame of the whole video (storage)
    # Stabilise every labeled video first, clip by clip (videodata.stabilise), as the original
    # fine-tuned on stabilised frames. A clip that cannot be stabilised is kept as decoded (not
    # dropped, as the original's "nofail" lists did): every video keeps every frame, so the
    # official test lists and the label-fraction draws stay whole and numbers remain comparable;
    # the protocol card counts those clips.
    stabilise: bool = False

    def __post_init__(self):
        for name in ("train_max_frames", "eval_max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"cache.{name} must be >= 1 or null (whole video), got {value}")
        if self.eval_stride < 1:
            raise ValueError(f"cache.eval_stride must be >= 1, got {self.eval_stride}")

    def stabilise_config(self):
        """The caches' `StabiliseConfig` (keeping unstabilisable clips plain), or None."""
        if not self.stabilise:
            return None
        from videodata.stabilise import StabiliseConfig  # OpenCV only when asked for
        return StabiliseConfig(on_failure="plain")


@dataclass
class RuntimeRecipe:
    """How a cell runs (runkit.device): the numbers depend only on `precision`."""
    device: str = "auto"          # auto | cpu | cuda | cuda:N (sweep.py --device sets it)
    precision: str = "fp32"       # fp32 | bf16 | fp16 (fp16: CUDA only) | auto (runkit.device)
    channels_last: bool = False
    compile: bool = False
    loader_workers: int = 0       # DataLoader workers per job (forkserver), 0 = in the job's process

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"runtime.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.loader_workers < 0:
            raise ValueError(f"runtime.loader_workers must be >= 0, got {self.loader_workers}")


@dataclass
class Recipe:
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    probe: ProbeRecipe = field(default_factory=ProbeRecipe)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    attentive: AttentiveRecipe = field(default_factory=AttentiveRecipe)
    cache: CacheRecipe = field(default_factory=CacheRecipe)
    runtime: RuntimeRecipe = field(default_factory=RuntimeRecipe)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["probe"]["c_grid"] = list(self.probe.c_grid)
        out["attentive"]["lr_grid"], out["attentive"]["wd_grid"] = list(self.attentive.lr_grid), list(self.attentive.wd_grid)
        return out


def recipe_path(name: str) -> Path:
    path = Path(name) if name.endswith((".yaml", ".yml")) else RECIPE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SweepError(f"recipe {name!r} not found ({path}); known recipes: {known_recipes()}, or a YAML path")
    return path


def known_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _message(exc: Exception) -> str:
    """OmegaConf's first line and the full key it names."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), "")
    return lines[0] + (f" (key {key})" if key and key not in lines[0] else "")


def load_recipe(name: str, overrides: Sequence[str] = ()) -> Recipe:
    """The named recipe (or YAML path) with `key=value` overrides, type-checked and range-checked."""
    path = recipe_path(name)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise SweepError(f"recipe override {item!r} is not KEY=VALUE (e.g. finetune.iterations=500)")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Recipe), OmegaConf.load(path),
                              OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except yaml.YAMLError as exc:
        raise SweepError(f"recipe {path} is not valid YAML: {yaml_problem(exc)}") from None
    except OmegaConfBaseException as exc:
        raise SweepError(f"recipe {path.name}{' with overrides' if overrides else ''}: {_message(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise SweepError(f"recipe {path.name}{' with overrides' if overrides else ''}: {exc}") from None
