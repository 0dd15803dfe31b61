"""Confidence intervals that fit the design that produced the runs.

A run is one cell: (pretraining run, split, subset draw, training seed). The runs of a report row
are not independent draws: the subset draws and training seeds are crossed with each other and
with the pretraining runs (every replicate sees the same draws), and the official splits share
videos. The interval here treats the design as what it is:

1. **Splits are a fixed factor.** Each (pretraining run, subset draw, seed) unit is averaged over
   its splits first; the interval is for the mean over the splits the sweep ran.
2. **The sampled factors are random and crossed.** Of pretraining run (p levels), subset draw (s)
   and training seed (t), those with more than one level form a complete grid (one subset draw per
   seed, the default of `--seeds` without `--subset-seeds`, is one factor: the run's draw). The
   variance of the grand mean of a balanced random-effects cross is

       Var(mean) = sum over non-empty factor sets A of  sigma2_A / prod_{f in A} n_f

   with the method-of-moments components (Cornfield-Tukey, one observation per cell; the highest
   interaction is the residual)

       sigma2_A = sum over B >= A of (-1)^|B \\ A| MS_B  /  prod_{f not in A} n_f.

   A component estimated below 0 is set to 0 (named in `clamped`), which can only widen the
   interval. The estimate is a linear combination sum_B c_B MS_B of mean squares; its degrees of
   freedom are Satterthwaite's, (sum c_B MS_B)^2 / sum (c_B MS_B)^2 / df_B, and the interval is
   mean +- t_{0.975, df} sqrt(Var). With one sampled factor this is the ordinary t-interval.
3. **An incomplete grid** (a cell failed, pretraining runs with their own subset draws: nested, not
   crossed) falls back to a t-interval over the means of the outermost factor's levels (the
   pretraining runs when there are several, else the subset draws, else the runs), which is
   right for nested designs and conservative for crossed ones.

Intervals are clipped to the metric's range. `tests/test_design_intervals.py` simulates crossed
and nested designs with known variance components and checks 95% coverage.
"""
from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

# the sampled factors, outermost first, and how a report names them
FACTORS = ("replicate", "subset_seed", "seed")
NAMES = {"replicate": "pretraining runs", "subset_seed": "subset draws", "seed": "training seeds",
         "draw": "subset draws (one seed each)"}


@dataclass(frozen=True)
class DesignInterval:
    mean: float
    se: float
    df: float
    ci_low: float
    ci_high: float
    units: str                       # e.g. "3 pretraining runs x 3 subset draws x 3 training seeds"
    method: str                      # "crossed" | "nested" | "single"
    clamped: tuple[str, ...] = ()    # variance components estimated below 0 and set to 0
    components: dict = field(default_factory=dict)   # factor set ("a x b") -> variance estimate


def _mean_squares(grid: np.ndarray) -> dict[tuple[int, ...], tuple[float, int]]:
    """MS and df of every main effect and interaction of a complete grid (one value per cell)."""
    n, total = grid.shape, grid.size
    out = {}
    for size in range(1, grid.ndim + 1):
        for axes in itertools.combinations(range(grid.ndim), size):
            others = tuple(a for a in range(grid.ndim) if a not in axes)
            effect = grid.mean(axis=others, keepdims=True) if others else grid
            for a in axes:  # the interaction effect: centre along every axis of the set
                effect = effect - effect.mean(axis=a, keepdims=True)
            df = math.prod(n[a] - 1 for a in axes)
            out[axes] = (total / math.prod(n[a] for a in axes) * float((effect ** 2).sum()) / df, df)
    return out


def crossed_variance(grid: np.ndarray) -> tuple[float, float, dict[tuple[int, ...], float], list[tuple[int, ...]]]:
    """Var(grand mean) of a complete random-effects cross, its Satterthwaite df, the components
    and the factor sets whose component was clamped at 0 (see the module docstring)."""
    n, k = grid.shape, grid.ndim
    ms = _mean_squares(grid)
    everything = tuple(range(k))
    components, clamped, coefficient = {}, [], defaultdict(float)
    for axes in ms:
        supersets = [b for b in ms if set(axes) <= set(b)]
        others = math.prod(n[a] for a in everything if a not in axes)
        value = sum((-1) ** (len(b) - len(axes)) * ms[b][0] for b in supersets) / others
        if axes != everything and value < 0:
            clamped.append(axes)
            components[axes] = 0.0
            continue
        components[axes] = max(value, 0.0)
        for b in supersets:  # this component's share of Var(mean), in mean squares
            coefficient[b] += (-1) ** (len(b) - len(axes)) / grid.size
    var = sum(c * ms[b][0] for b, c in coefficient.items())
    denominator = sum((c * ms[b][0]) ** 2 / ms[b][1] for b, c in coefficient.items())
    df = var ** 2 / denominator if denominator > 0 else float(grid.size - 1)
    # below 1 df the t quantile runs away (t_0.975 at 0.5 df is ~160): the floor keeps it at 12.7
    return max(var, 0.0), max(df, 1.0), components, clamped


def _t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return float(data.mean()), 0.0, 0.0
    return float(data.mean()), float(data.std(ddof=1) / math.sqrt(data.size)), float(data.size - 1)


def _units_text(levels: dict[str, int], splits: Sequence[int], replicates: str) -> str:
    names = {**NAMES, "replicate": replicates}
    text = " x ".join(f"{n} {names[f]}" for f, n in levels.items()) or "1 run"
    if len(splits) > 1:
        text += f" (splits {','.join(map(str, splits))} averaged)"
    return text


def factor_levels(units: dict[tuple, float]) -> tuple[tuple[str, ...], dict[tuple, float], list[list]]:
    """The units {(replicate, subset_seed, seed): value} as factors: when each subset draw has its
    own seed (and vice versa) the two are one factor, the draw. Returns the factor names, the
    values keyed by level per factor, and each factor's levels."""
    pairs = {(k[1], k[2]) for k in units}
    if len({p[0] for p in pairs}) == len(pairs) == len({p[1] for p in pairs}):
        names, values = ("replicate", "draw"), {(k[0], (k[1], k[2])): v for k, v in units.items()}
    else:
        names, values = FACTORS, dict(units)
    return names, values, [sorted({k[i] for k in values}, key=str) for i in range(len(names))]


def unit_grid(units: dict[tuple, float]) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The sampled factors (more than one level) of the units and their complete grid, or None
    for the grid when some combination is missing (nested draws, a failed cell)."""
    names, values, levels_of = factor_levels(units)
    sampled = [i for i, levels in enumerate(levels_of) if len(levels) > 1]
    if len(values) != math.prod(len(levels_of[i]) for i in sampled):
        return tuple(names[i] for i in sampled), None
    index = [{level: j for j, level in enumerate(levels_of[i])} for i in sampled]
    grid = np.empty([len(levels_of[i]) for i in sampled])
    for key, value in values.items():
        grid[tuple(index[j][key[i]] for j, i in enumerate(sampled))] = value
    return tuple(names[i] for i in sampled), grid


def design_interval(rows: Sequence[dict], bounds: tuple[float, float] = (0.0, 1.0), confidence: float = 0.95,
                    replicates: str = "pretraining runs") -> DesignInterval:
    """The interval for the mean of `rows` (dicts with replicate, split, subset_seed, seed, value);
    `replicates` names the replicate factor in `units` (random init's are weight draws)."""
    if not rows:
        raise ValueError("cannot summarise an empty set of runs")
    by_unit: dict[tuple, dict[int, float]] = defaultdict(dict)
    for r in rows:
        by_unit[(r.get("replicate", 0), r["subset_seed"], r["seed"])][r["split"]] = r["value"]
    split_sets = {tuple(sorted(v)) for v in by_unit.values()}
    splits = sorted({s for v in by_unit.values() for s in v})
    units = {key: float(np.mean(list(v.values()))) for key, v in by_unit.items()}
    sampled, grid = unit_grid(units)
    clamped, components = (), {}
    if not sampled:
        mean, se, df, method, levels = next(iter(units.values())), 0.0, 0.0, "single", {}
    elif grid is not None and len(split_sets) == 1:
        levels = dict(zip(sampled, grid.shape))
        mean = float(grid.mean())
        var, df, parts, low = crossed_variance(grid)
        se = math.sqrt(var)
        label = lambda axes: " x ".join(NAMES[sampled[a]] for a in axes)  # noqa: E731
        components = {label(a): v for a, v in parts.items()}
        clamped = tuple(label(a) for a in low)
        method = "crossed" if len(sampled) > 1 else "t"
    else:  # nested or incomplete: the outermost factor's level means are independent units
        names, values, _ = factor_levels(units)
        outer = names.index(sampled[0])
        by_level: dict = defaultdict(list)
        for key, value in values.items():
            by_level[key[outer]].append(value)
        mean, se, df = _t_interval([np.mean(v) for v in by_level.values()])
        method = "nested" if len(split_sets) == 1 else "incomplete"
        levels = {sampled[0]: len(by_level)}
    half = float(stats.t.ppf(0.5 + confidence / 2, df=df)) * se if se > 0 else 0.0
    low, high = bounds
    return DesignInterval(mean, se, df, max(low, mean - half), min(high, mean + half),
                          _units_text(levels, splits, replicates), method, clamped, components)
