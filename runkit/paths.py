"""Where relative paths in configs and on command lines point: the project root, never a
working directory that changes under us (a SLURM job or a Hydra run may start anywhere).

The project root is `$VGANBENCH_ROOT` when set; else the checkout the code runs from (a clone, or
an editable install); else, for a package installed into site-packages, the working directory of
the first process, which is then exported as `VGANBENCH_ROOT` so that the worker processes and
SLURM jobs it starts (they inherit the environment) resolve alike. Nothing is ever resolved into
the installed package.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "VGANBENCH_ROOT"
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def _project_root() -> Path:
    given = os.environ.get(ROOT_ENV)
    if given:
        return Path(given).expanduser().resolve()
    if (PACKAGE_PARENT / "setup.cfg").is_file():  # a checkout: the repository root
        return PACKAGE_PARENT
    root = Path.cwd().resolve()
    os.environ[ROOT_ENV] = str(root)
    return root


REPO_ROOT = _project_root()


def resolve_path(path: str | os.PathLike, root: Path = REPO_ROOT) -> Path:
    """`path` itself when absolute (after `~` expansion), else `root / path`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path
