"""Checkpoints: atomic save, keep the last K, safe load (`weights_only=True`), RNG state.

Every value stored is a tensor, a number, a string or a container of those, so checkpoints load
with `torch.load(weights_only=True)`: a checkpoint can never carry code.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runkit.atomic import atomic_torch_save
from runkit.errors import UserError

_STEP_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the run."""


def capture_rng_state() -> dict[str, Any]:
    """Every RNG a training step touches, as plain tensors / ints (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what `capture_rng_state` took. The generators' states are CPU byte tensors whatever
    device the checkpoint was mapped to (a state loaded onto a GPU would fail in set_rng_state)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].cpu().numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise CheckpointError(f"cannot load checkpoint {path}: {type(exc).__name__}: {exc}") from exc


class CheckpointManager:
    """`ckpt_<step>.pt` files in one folder, written atomically, the newest `keep` kept."""

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder = Path(folder)
        self.keep = max(1, int(keep))

    def path_for(self, step: int) -> Path:
        return self.folder / f"ckpt_{step:08d}.pt"

    def all_steps(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        steps = [int(m.group(1)) for p in self.folder.iterdir() if (m := _STEP_RE.match(p.name))]
        return sorted(steps)

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = self.path_for(step)
        atomic_torch_save(state, path)
        for old in self.all_steps()[: -self.keep]:
            self.path_for(old).unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        steps = self.all_steps()
        return self.path_for(steps[-1]) if steps else None

    def load_latest(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest checkpoint that loads; a corrupt newest one falls back to the one before."""
        errors = []
        for step in reversed(self.all_steps()):
            try:
                return load_checkpoint(self.path_for(step), map_location)
            except CheckpointError as exc:
                errors.append(str(exc))
        if errors:
            raise CheckpointError("no loadable checkpoint in " f"{self.folder}: " + "; ".join(errors))
        return None
