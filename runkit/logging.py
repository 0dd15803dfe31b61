"""Metric logs (CSV + TensorBoard) and progress bars with ETA.

The CSV log is resume-safe: on resume, rows at or beyond the resumed step are dropped first,
so a preempted-and-requeued run has no repeated or missing steps.
"""
from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Iterable, Mapping

import torch
from tqdm.auto import tqdm

from runkit.atomic import atomic_write_text


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             initial: int = 0, disable: bool = False, unit: str = "it") -> tqdm:
    """A tqdm bar (rate and ETA); quieter refresh when stderr is not a terminal (SLURM logs)."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit,
                disable=disable or os.environ.get("VGANBENCH_NO_PROGRESS") == "1",
                mininterval=0.5 if interactive else 10.0, dynamic_ncols=True)


class WindowMeans:
    """Sums of per-step metrics over the steps since the last log row, then their means.

    Values may be device tensors: they are summed on their device in float64 and read only when
    `means()` is called (no host synchronisation per step). The open window is part of a
    checkpoint (`state_dict`), so a run resumed mid-window logs exactly the rows of an
    uninterrupted one.
    """

    def __init__(self):
        self.sums: dict = {}
        self.count = 0

    def add(self, **values) -> None:
        for key, value in values.items():
            value = value.detach().to(torch.float64) if isinstance(value, torch.Tensor) else float(value)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.count += 1

    def means(self) -> dict[str, float]:
        """The window's means (reads device values once), and a fresh window."""
        if not self.count:
            return {}
        out = {key: float(total) / self.count for key, total in sorted(self.sums.items())}
        self.sums, self.count = {}, 0
        return out

    def state_dict(self) -> dict:
        return {"sums": {key: float(total) for key, total in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.count = dict(state["sums"]), int(state["count"])


class MetricLogger:
    """Append-only CSV of metric rows keyed by `step`, mirrored to TensorBoard."""

    def __init__(self, folder: str | Path, filename: str = "metrics.csv", tensorboard: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / filename
        self._fields: list[str] | None = None
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder / "tb"))

    def truncate_from(self, step: int) -> None:
        """Drop rows with step >= `step` (they will be re-logged after a resume)."""
        if not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows:
            return
        fields = list(rows[0].keys())
        kept = [row for row in rows if int(float(row["step"])) < step]
        lines = [",".join(fields)] + [",".join(str(row[f]) for f in fields) for row in kept]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        if self._fields is None:
            if self.path.exists() and self.path.stat().st_size > 0:
                with open(self.path, newline="") as handle:
                    self._fields = next(csv.reader(handle))
            else:
                self._fields = list(row.keys())
                with open(self.path, "w", newline="") as handle:
                    csv.writer(handle).writerow(self._fields)
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([row.get(f, "") for f in self._fields])
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), int(step))

    def read(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as handle:
            return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
