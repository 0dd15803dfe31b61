"""The sweep's ledger: one JSON file per cell, written atomically.

`<ledger>/<cell_id>.json` holds `{"cell_id", "status": "running"|"done"|"failed", "cell": {...},
"result": {...} | None, "error": str | None, "run": {...}}`. `run` holds what differs between two
otherwise identical runs (host, pid, job id, times); everything else is a function of the cell
alone, so an interrupted-and-resumed sweep leaves the same ledger (minus `run`) as an
uninterrupted one. A missing file means "pending". Re-running a sweep skips `done` cells and
runs every other one again (a `failed` one is retried; a `running` one whose process is gone
was killed and resumes from its own checkpoint).
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable

from runkit.atomic import atomic_write_json

STATUSES = ("pending", "running", "done", "failed")
VOLATILE_KEYS = ("run",)


class LedgerError(RuntimeError):
    """A ledger file exists but cannot be read (names the file)."""


def _run_info(**extra: Any) -> dict:
    info = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    job_id = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job_id:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        info["slurm_job"] = f"{job_id}_{task}" if task else job_id
    info.update(extra)
    return info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, cell_id: str) -> Path:
        if not cell_id or "/" in cell_id or cell_id.startswith("."):
            raise ValueError(f"invalid cell id {cell_id!r}")
        return self.folder / f"{cell_id}.json"

    def read(self, cell_id: str) -> dict | None:
        path = self.path(cell_id)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise LedgerError(f"unreadable ledger entry {path}: {exc}") from exc

    def status(self, cell_id: str) -> str:
        entry = self.read(cell_id)
        return "pending" if entry is None else entry["status"]

    def is_done(self, cell_id: str) -> bool:
        return self.status(cell_id) == "done"

    def mark_running(self, cell_id: str, cell: dict, **run: Any) -> None:
        atomic_write_json(self.path(cell_id), {"cell_id": cell_id, "status": "running",
                                               "cell": cell, "result": None, "error": None,
                                               "run": _run_info(**run)})

    def mark_done(self, cell_id: str, cell: dict, result: dict, **run: Any) -> None:
        atomic_write_json(self.path(cell_id), {"cell_id": cell_id, "status": "done", "cell": cell,
                                               "result": result, "error": None,
                                               "run": _run_info(**run)})

    def mark_failed(self, cell_id: str, cell: dict, error: str, **run: Any) -> None:
        atomic_write_json(self.path(cell_id), {"cell_id": cell_id, "status": "failed",
                                               "cell": cell, "result": None, "error": error,
                                               "run": _run_info(**run)})

    def entries(self) -> list[dict]:
        """Every readable entry, sorted by cell id (a torn temp file is never listed)."""
        if not self.folder.is_dir():
            return []
        return [self.read(p.stem) for p in sorted(self.folder.glob("*.json"))]

    def summary(self, cell_ids: Iterable[str], queue: dict[str, str] | None = None) -> dict[str, list[str]]:
        """Cells by status. A `running` entry whose local process is gone reads `interrupted`;
        `queue` (cell id -> SLURM state) overrides it for cells a scheduler still knows."""
        groups: dict[str, list[str]] = {s: [] for s in (*STATUSES, "interrupted")}
        for cell_id in cell_ids:
            entry = self.read(cell_id)
            status = "pending" if entry is None else entry["status"]
            if status == "running":
                run = entry.get("run", {})
                if queue and cell_id in queue:
                    status = "running" if queue[cell_id] in ("RUNNING", "COMPLETING") else "pending"
                elif run.get("host") == socket.gethostname() and not _pid_alive(int(run.get("pid", -1))):
                    status = "interrupted"
            groups[status].append(cell_id)
        return groups


def stable_view(entry: dict) -> dict:
    """An entry without the fields that legitimately differ between runs (for comparisons)."""
    return {k: v for k, v in entry.items() if k not in VOLATILE_KEYS}
