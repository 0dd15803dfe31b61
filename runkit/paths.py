"""Where relative paths in configs and on command lines point: the repository root, never the
working directory (a SLURM job or a Hydra run may start anywhere)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | os.PathLike, root: Path = REPO_ROOT) -> Path:
    """`path` itself when absolute (after `~` expansion), else `root / path`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path
