"""Statistics from ledger entries: one place for every number the reports show.

Aggregation runs over seeds and splits: per (protocol, init, labels) the mean, the sample std and
a 95% confidence interval from the t-distribution; per (protocol, labels) the paired difference
pretrained - random over the (split, seed) pairs both inits finished, with its own t-interval.
`current_entries` reads a sweep folder's ledger, keeping only the cells of its current plan.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from runkit.errors import UserError
from transfer.ledger import Ledger

METRICS = ("video_acc", "clip_acc", "video_top5", "mean_class_acc")


class ReportError(UserError, ValueError):
    """A folder cannot be reported on (not a sweep folder, unreadable plan); names why."""


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std (ddof=1) and a two-sided t confidence interval (zero width for n = 1)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("cannot summarize an empty set of values")
    mean = float(data.mean())
    if data.size == 1:
        return Summary(1, mean, 0.0, mean, mean)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=data.size - 1)) * std / math.sqrt(data.size)
    return Summary(int(data.size), mean, std, mean - half, mean + half)


def result_rows(entries: Iterable[dict], metric: str) -> list[dict]:
    rows = []
    for entry in entries:
        if entry["status"] != "done":
            continue
        cell, result = entry["cell"], entry["result"]
        if metric not in result:
            raise KeyError(f"ledger entry {entry['cell_id']} has no metric {metric!r}")
        rows.append({"protocol": cell["protocol"], "init": cell["init"], "split": cell["split"],
                     "seed": cell["seed"], "rule": cell["rule_tag"], "rule_value": cell["rule_value"],
                     "per_class": float(result["labeled_per_class"]),
                     "num_classes": int(result["num_classes"]), "value": float(result[metric])})
    return rows


def aggregate(entries: Iterable[dict], metric: str = "video_acc") -> list[dict]:
    """One row per (protocol, init, rule), sorted by protocol, init, labels per class."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in result_rows(entries, metric):
        groups[(row["protocol"], row["init"], row["rule"])].append(row)
    table = []
    for (protocol, init, rule), rows in groups.items():
        summary = summarize([r["value"] for r in rows])
        table.append({"protocol": protocol, "init": init, "rule": rule,
                      "labeled_per_class": float(np.mean([r["per_class"] for r in rows])),
                      "num_classes": rows[0]["num_classes"], "n": summary.n, "mean": summary.mean,
                      "std": summary.std, "ci_low": summary.ci_low, "ci_high": summary.ci_high})
    return sorted(table, key=lambda r: (r["protocol"], r["init"], r["labeled_per_class"], r["rule"]))


def paired_differences(entries: Iterable[dict], metric: str = "video_acc",
                       treated: str = "pretrained", baseline: str = "random") -> list[dict]:
    """Per (protocol, rule): treated − baseline over the (split, seed) pairs both finished."""
    values: dict[tuple, dict[str, float]] = defaultdict(dict)
    per_class: dict[tuple, list[float]] = defaultdict(list)
    for row in result_rows(entries, metric):
        values[(row["protocol"], row["rule"], row["split"], row["seed"])][row["init"]] = row["value"]
        per_class[(row["protocol"], row["rule"])].append(row["per_class"])
    diffs: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
    for (protocol, rule, _split, _seed), by_init in values.items():
        if treated in by_init and baseline in by_init:
            diffs[(protocol, rule)].append((by_init[treated] - by_init[baseline],
                                            by_init[treated], by_init[baseline]))
    table = []
    for (protocol, rule), triples in diffs.items():
        summary = summarize([d for d, _, _ in triples])
        treated_mean = float(np.mean([t for _, t, _ in triples]))
        baseline_mean = float(np.mean([b for _, _, b in triples]))
        table.append({"protocol": protocol, "rule": rule,
                      "labeled_per_class": float(np.mean(per_class[(protocol, rule)])),
                      "pairs": summary.n, "treated_mean": treated_mean, "baseline_mean": baseline_mean,
                      "diff_mean": summary.mean, "diff_std": summary.std,
                      "ci_low": summary.ci_low, "ci_high": summary.ci_high,
                      "relative_gain": treated_mean / baseline_mean if baseline_mean > 0 else float("nan")})
    return sorted(table, key=lambda r: (r["protocol"], r["labeled_per_class"], r["rule"]))


def current_entries(sweep_dir: Path) -> list[dict]:
    """The ledger's entries for the cells of the sweep's latest plan (`sweep.json`). A changed
    recipe or checkpoint makes new cells; the old ones stay in the ledger but out of the tables."""
    entries = Ledger(sweep_dir / "ledger").entries()
    plan = sweep_dir / "sweep.json"
    if plan.is_file():
        wanted = set(json.loads(plan.read_text())["cells"])
        entries = [e for e in entries if e["cell_id"] in wanted]
    return entries
