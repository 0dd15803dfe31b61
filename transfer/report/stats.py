"""Statistics from ledger entries: one place for every number the reports show.

A run is one cell: (pretraining run, split, subset draw, training seed). Aggregation runs over
the runs of a (protocol, init, labels) row: the mean, the sample std and a 95% confidence
interval that fits the design (`transfer.report.design`: splits averaged, the sampled factors
crossed, Satterthwaite's degrees of freedom); per (protocol, labels) the paired difference
pretrained - random over the runs both inits finished (same pretraining run or random weight
draw, split, subset and seed), with the same treatment, once per random-init baseline the sweep
ran (`random`, the GAN's init; `random_torch`, Torch7's). `variance_components`
splits a row's spread into its sources (pretraining run, split, subset draw, training seed)
when the runs cross at least two of them. `current_entries` reads a sweep folder's ledger,
keeping only the cells of its current plan. `label_efficiency` summarises whole curves: the area
under accuracy over log labels, and how many labels random init needs to match a method;
`bootstrap_label_efficiency` gives those numbers cluster-bootstrap intervals.
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
from transfer.classifier import RANDOM_INITS
from transfer.ledger import Ledger
from transfer.report.design import crossed_variance, design_interval, unit_grid

METRICS = ("video_acc", "clip_acc", "video_top5", "mean_class_acc")
# how tables, figures and leaderboards name the random-init baselines
RANDOM_INIT_NAMES = {"random": "random init", "random_torch": "random init, Torch7's default"}


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
                     "replicate": cell.get("replicate", 0),
                     "subset_seed": cell.get("subset_seed", cell["seed"]), "seed": cell["seed"],
                     "rule": cell["rule_tag"], "rule_value": cell["rule_value"],
                     "per_class": float(result["labeled_per_class"]),
                     "num_classes": int(result["num_classes"]), "value": float(result[metric]),
                     "test_clips": int(result.get("clips_per_video", 0))})
    return rows


def _listing(values) -> str:
    return ",".join(str(v) for v in sorted(set(values)))


def _subsets(rows: list[dict]) -> str:
    """Where a row's labeled subsets came from, for its protocol card."""
    if rows[0]["rule"].startswith("list-"):
        return f"list {rows[0]['rule'][5:]}"
    return f"draws {_listing(r['subset_seed'] for r in rows)}"


# Plans written before sweep.json recorded its protocols ("protocols": title, job, sections, style
# per protocol, from transfer.sweeps.protocols) ran only these three.
_EARLIER_PROTOCOLS = {"finetune": {"title": "fine-tune", "sections": ["finetune"]},
                      "linear": {"title": "linear probe", "sections": ["probe", "features"]},
                      "knn": {"title": "k-NN", "sections": ["probe", "features"]}}


def protocol_info(plan: dict, protocol: str) -> dict:
    """A protocol's title, recipe sections and plot style as the sweep's plan records them."""
    info = (plan.get("protocols") or {}).get(protocol) or _EARLIER_PROTOCOLS.get(protocol)
    if info is None:
        raise ReportError(f"the sweep plan does not describe protocol {protocol!r}")
    return {"title": protocol, "style": {}, **info}


def protocol_sections(plan: dict, protocol: str) -> list[str]:
    return list(protocol_info(plan, protocol)["sections"])


def replicate_name(init: str) -> str:
    """What a replicate is for an init: a pretraining run, or a random init's weight draw."""
    return "random weight draws" if init in RANDOM_INITS else "pretraining runs"


def _design_fields(interval) -> dict:
    return {"units": interval.units, "interval": interval.method, "df": interval.df,
            "clamped": list(interval.clamped)}


def aggregate(entries: Iterable[dict], metric: str = "video_acc") -> list[dict]:
    """One row per (protocol, init, rule), sorted by protocol, init, labels per class."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in result_rows(entries, metric):
        groups[(row["protocol"], row["init"], row["rule"])].append(row)
    table = []
    for (protocol, init, rule), rows in groups.items():
        spread = summarize([r["value"] for r in rows])
        interval = design_interval(rows, replicates=replicate_name(init))
        table.append({"protocol": protocol, "init": init, "rule": rule,
                      "labeled_per_class": float(np.mean([r["per_class"] for r in rows])),
                      "num_classes": rows[0]["num_classes"], "n": spread.n, "mean": interval.mean,
                      "std": spread.std, "ci_low": interval.ci_low, "ci_high": interval.ci_high,
                      **_design_fields(interval), "replicates": len({r["replicate"] for r in rows}),
                      "splits": _listing(r["split"] for r in rows), "subsets": _subsets(rows),
                      "seeds": _listing(r["seed"] for r in rows),
                      "test_clips": _listing(r["test_clips"] for r in rows)})
    return sorted(table, key=lambda r: (r["protocol"], r["init"], r["labeled_per_class"], r["rule"]))


def run_values(entries: Iterable[dict], metric: str = "video_acc") -> dict[tuple, list[float]]:
    """Every run's value per (protocol, init, rule): the dots beside a figure's means."""
    out: dict[tuple, list[float]] = defaultdict(list)
    for row in result_rows(entries, metric):
        out[(row["protocol"], row["init"], row["rule"])].append(row["value"])
    return dict(out)


def paired_differences(entries: Iterable[dict], metric: str = "video_acc",
                       treated: str | Sequence[str] = ("pretrained", "selected"),
                       baseline: str | None = None) -> list[dict]:
    """Per (protocol, rule, treated, baseline): treated − baseline over the runs (split, subset
    draw, training seed) both inits finished. `treated`: the init(s) measured against the floor
    (the last snapshot, and a `--trajectory` sweep's snapshot chosen on validation), named in
    the row's "treated"; `baseline` None: each random-init baseline the runs have (RANDOM_INITS),
    named in the row's "baseline"."""
    treateds = (treated,) if isinstance(treated, str) else tuple(treated)
    baselines = [baseline] if baseline else [init for init in RANDOM_INITS if init not in treateds]
    values: dict[tuple, dict[str, float]] = defaultdict(dict)
    per_class: dict[tuple, list[float]] = defaultdict(list)
    for row in result_rows(entries, metric):
        unit = (row["replicate"], row["split"], row["subset_seed"], row["seed"])
        values[(row["protocol"], row["rule"], *unit)][row["init"]] = row["value"]
        per_class[(row["protocol"], row["rule"])].append(row["per_class"])
    pairs: dict[tuple, list[dict]] = defaultdict(list)
    for (protocol, rule, replicate, split, subset, seed), by_init in values.items():
        for init in treateds:
            for base in baselines:
                if init in by_init and base in by_init:
                    pairs[(protocol, rule, init, base)].append({
                        "replicate": replicate, "split": split, "subset_seed": subset, "seed": seed,
                        "treated": by_init[init], "baseline": by_init[base], "value": by_init[init] - by_init[base]})
    table = []
    for (protocol, rule, init, base), rows in pairs.items():
        spread = summarize([r["value"] for r in rows])
        interval = design_interval(rows, bounds=(-1.0, 1.0))
        treated_mean = design_interval([{**r, "value": r["treated"]} for r in rows]).mean
        baseline_mean = design_interval([{**r, "value": r["baseline"]} for r in rows]).mean
        table.append({"protocol": protocol, "rule": rule, "treated_init": init, "baseline": base,
                      "labeled_per_class": float(np.mean(per_class[(protocol, rule)])),
                      "pairs": spread.n, "treated_mean": treated_mean, "baseline_mean": baseline_mean,
                      "diff_mean": interval.mean, "diff_std": spread.std,
                      "ci_low": interval.ci_low, "ci_high": interval.ci_high, **_design_fields(interval),
                      "relative_gain": treated_mean / baseline_mean if baseline_mean > 0 else float("nan")})
    return sorted(table, key=lambda r: (r["protocol"], treateds.index(r["treated_init"]),
                                        baselines.index(r["baseline"]), r["labeled_per_class"], r["rule"]))


def variance_components(entries: Iterable[dict], metric: str = "video_acc") -> list[dict]:
    """Per (protocol, init, rule): how much of the runs' variance comes from the pretraining run,
    the subset draw, the training seed, the split and the rest (their interactions and noise):
    method-of-moments components (`design.crossed_variance`, negative ones at 0) of a complete
    cross of at least two sampled factors within each split, averaged over splits. One subset draw
    per seed is one factor (its share is the subset column; the seed's is not separable). Rows
    whose runs form no such cross (one factor, a user's list, a missing cell) say so instead of
    inventing a split."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in result_rows(entries, metric):
        groups[(row["protocol"], row["init"], row["rule"])].append(row)
    table = []
    for (protocol, init, rule), rows in groups.items():
        by_split: dict[int, dict[tuple, float]] = defaultdict(dict)
        for row in rows:
            by_split[row["split"]][(row["replicate"], row["subset_seed"], row["seed"])] = row["value"]
        parts, split_means, mean_vars = [], [], []
        for units in by_split.values():
            names, grid = unit_grid(units)
            if grid is None or len(names) < 2:
                parts = []
                break
            var, _, components, _ = crossed_variance(grid)
            main = {names[axes[0]]: v for axes, v in components.items() if len(axes) == 1}
            parts.append({"pretraining_var": main.get("replicate", 0.0),
                          "subset_var": main.get("subset_seed", main.get("draw", 0.0)),
                          "seed_var": main.get("seed", float("nan") if "draw" in names else 0.0),
                          "residual_var": sum(v for axes, v in components.items() if len(axes) > 1)})
            split_means.append(grid.mean())
            mean_vars.append(var)
        base = {"protocol": protocol, "init": init, "rule": rule,
                "labeled_per_class": float(np.mean([r["per_class"] for r in rows])), "runs": len(rows),
                "total_var": float(np.var([r["value"] for r in rows], ddof=1)) if len(rows) > 1 else 0.0}
        if not parts:
            table.append({**base, "separable": False, **{k: float("nan") for k in (
                "pretraining_var", "subset_var", "seed_var", "split_var", "residual_var")}})
            continue
        averaged = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
        split_var = 0.0
        if len(split_means) > 1:  # between-split variance beyond what the within-split terms explain
            split_var = max(0.0, float(np.var(split_means, ddof=1)) - float(np.mean(mean_vars)))
        table.append({**base, "separable": True, **averaged, "split_var": split_var})
    return sorted(table, key=lambda r: (r["protocol"], r["init"], r["labeled_per_class"], r["rule"]))


# --------------------------------------------------------------------- label efficiency
# A curve is a row set's mean accuracy against labeled videos per class, piecewise linear in
# log(labels) between the measured points (the axis every figure here uses); nothing is
# extrapolated beyond the measured range.

def curve(rows: Iterable[dict], protocol: str, init: str) -> list[tuple[float, float]]:
    """(labeled per class, mean) of one protocol and init, in label order; rows at the same label
    count (e.g. a fraction and a user's list of that size) are one point, their mean."""
    by_labels: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        if r["protocol"] == protocol and r["init"] == init:
            by_labels[r["labeled_per_class"]].append(r["mean"])
    return [(x, float(np.mean(ys))) for x, ys in sorted(by_labels.items())]


def value_at(points: Sequence[tuple[float, float]], labels: float) -> float | None:
    """The curve at `labels` (log-linear between points); None outside the measured range."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):  # distinct label counts (see `curve`)
        if x0 <= labels <= x1:
            t = (math.log(labels) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    if len(points) == 1 and points[0][0] == labels:
        return points[0][1]
    return None


def area_over_log_labels(points: Sequence[tuple[float, float]], low: float, high: float) -> float | None:
    """Mean of the curve over log(labels) from `low` to `high` (the area under it divided by the
    width, so it reads as an accuracy); None when the curve does not span the range."""
    if not points or points[0][0] > low or points[-1][0] < high or high <= low:
        return None
    xs = sorted({low, high, *(x for x, _ in points if low < x < high)})
    ys = np.array([value_at(points, x) for x in xs])
    logs = np.log(xs)
    return float(np.sum((ys[1:] + ys[:-1]) / 2 * np.diff(logs)) / (logs[-1] - logs[0]))


def labels_to_reach(points: Sequence[tuple[float, float]], target: float) -> tuple[float | None, str]:
    """The fewest labels per class at which the curve reaches `target`: (labels, "") where it
    crosses it between measured points, (first point, "<=") if it starts at or above it, and
    (last point, ">") if it never reaches it within the measured range."""
    if not points:
        return None, ""
    if points[0][1] >= target:
        return points[0][0], "<="
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if y0 < target <= y1:
            t = (target - y0) / (y1 - y0)
            return float(math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))), ""
    return points[-1][0], ">"


def random_baseline(inits: Iterable[str]) -> str | None:
    """The random-init baseline among `inits`: `random` where the sweep ran it, else `random_torch`."""
    present = set(inits)
    return next((init for init in RANDOM_INITS if init in present), None)


def label_efficiency(table: Sequence[dict], at: Sequence[float] = (1, 7), baseline: str | None = None,
                     span: dict[str, tuple[float, float]] | None = None) -> list[dict]:
    """Per (protocol, init) of an `aggregate` table: the mean accuracy over log labels across
    `span[protocol]` (default: the labels every init of that protocol measured), and for each
    K in `at`, the labels per class the baseline init needs to match this init's accuracy at K.
    `baseline` None: the protocol's random-init baseline (`random_baseline`), its fields named
    random_labels_at_K whichever it is; each row's "baseline" names it."""
    out = []
    for protocol in sorted({r["protocol"] for r in table}):
        inits = sorted({r["init"] for r in table if r["protocol"] == protocol})
        base, prefix = (baseline, baseline) if baseline else (random_baseline(inits), "random")
        curves = {init: curve(table, protocol, init) for init in inits}
        low = max(c[0][0] for c in curves.values())
        high = min(c[-1][0] for c in curves.values())
        if span and protocol in span:
            low, high = span[protocol]
        for init in inits:
            row = {"protocol": protocol, "init": init, "baseline": base, "span_low": low, "span_high": high,
                   "area": area_over_log_labels(curves[init], low, high)}
            for k in at:
                accuracy = value_at(curves[init], k)
                row[f"accuracy_at_{k:g}"] = accuracy
                needed, qualifier = ((None, "") if accuracy is None or base not in curves
                                     else labels_to_reach(curves[base], accuracy))
                row[f"{prefix}_labels_at_{k:g}"] = needed
                row[f"{prefix}_labels_at_{k:g}_qualifier"] = qualifier
            out.append(row)
    return out


NAMES_OF_UNITS = {"replicate": "pretraining runs", "subset_seed": "subset draws", "seed": "seeds (their draws)"}


def _resampling_unit(rows: Sequence[dict]) -> str:
    """The outermost sampled factor of a sweep's runs: what a cluster bootstrap resamples."""
    for factor in ("replicate", "subset_seed", "seed"):
        if len({r[factor] for r in rows}) > 1:
            return factor
    return "seed"


def bootstrap_label_efficiency(rows: Sequence[dict], at: Sequence[float] = (1, 7), baseline: str | None = None,
                               span: dict[str, tuple[float, float]] | None = None, draws: int = 1000,
                               seed: int = 0, confidence: float = 0.95) -> dict[tuple[str, str], dict]:
    """Percentile intervals of `label_efficiency`'s numbers by a cluster bootstrap: the sweep's
    outermost sampled factor (pretraining runs when there are several, else subset draws, else
    seeds) is resampled with replacement, every run of a drawn unit comes along (so a label
    count's rows, both inits and every protocol stay paired), the curves are averaged again and
    the summaries recomputed. Returns {(protocol, init): {field: (low, high), "unit": ..., "draws": n}}
    for the fields area, accuracy_at_K and <baseline>_labels_at_K (a draw whose baseline never
    reaches the accuracy in range counts at the range's end)."""
    if not rows:
        return {}
    unit = _resampling_unit(rows)
    by_unit: dict = defaultdict(list)
    for r in rows:
        by_unit[r[unit]].append(r)
    units = sorted(by_unit, key=str)
    rng = np.random.default_rng(seed)
    prefix = baseline or "random"  # label_efficiency's field names
    fields = ["area", *(f"accuracy_at_{k:g}" for k in at), *(f"{prefix}_labels_at_{k:g}" for k in at)]
    samples: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for _ in range(draws):
        drawn = [r for i in rng.integers(0, len(units), len(units)) for r in by_unit[units[i]]]
        means: dict[tuple, list[float]] = defaultdict(list)
        per_class: dict[tuple, list[float]] = defaultdict(list)
        for r in drawn:
            means[(r["protocol"], r["init"], r["rule"])].append(r["value"])
            per_class[(r["protocol"], r["init"], r["rule"])].append(r["per_class"])
        table = [{"protocol": p, "init": i, "rule": rule, "labeled_per_class": float(np.mean(per_class[(p, i, rule)])),
                  "mean": float(np.mean(v))} for (p, i, rule), v in means.items()]
        for row in label_efficiency(table, at, baseline, span):
            for name in fields:
                if row.get(name) is not None:
                    samples[(row["protocol"], row["init"])][name].append(float(row[name]))
    tail = 100 * (1 - confidence) / 2
    out = {}
    for key, values in samples.items():
        out[key] = {name: tuple(float(q) for q in np.percentile(v, [tail, 100 - tail]))
                    for name, v in values.items() if len(v) == draws}
        out[key].update(unit=NAMES_OF_UNITS[unit], units=len(units), draws=draws)
    return out



def current_entries(sweep_dir: Path) -> list[dict]:
    """The ledger's entries for the cells of the sweep's latest plan (`sweep.json`). A changed
    recipe or checkpoint makes new cells; the old ones stay in the ledger but out of the tables."""
    entries = Ledger(sweep_dir / "ledger").entries()
    plan = sweep_dir / "sweep.json"
    if plan.is_file():
        wanted = set(json.loads(plan.read_text())["cells"])
        entries = [e for e in entries if e["cell_id"] in wanted]
    return entries
