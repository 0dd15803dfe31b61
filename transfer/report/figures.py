"""Figures for papers (PNG and PDF, one column of a two-column paper wide), drawn from the statistics."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from runkit.atomic import atomic_write_with
from transfer.report.tables import paired_cells

FIG_WIDTH_IN = 3.3


def style_axes(ax, xs: Sequence[float]) -> None:
    ax.set_xscale("log")
    ticks = sorted(set(round(x, 1) for x in xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labeled videos per class")
    ax.grid(alpha=0.3, linewidth=0.5)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on compute nodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


RunValues = dict  # (protocol, init, rule) -> every run's value (stats.run_values)


def draw_accuracy(ax, lines: Sequence[tuple[str, list[dict], dict]], runs: RunValues | None = None) -> None:
    """One line per (legend label, `aggregate` rows, errorbar style): the mean in % against labeled
    videos per class, error bars the 95% CI, and (with `runs`) every run as a small dot beside it."""
    for i, (label, rows, style) in enumerate(lines):
        rows = sorted(rows, key=lambda r: r["labeled_per_class"])
        # a small sideways offset per line (log axis) so error bars at one x do not hide each other
        dodge = 1.0 + 0.04 * (i - (len(lines) - 1) / 2)
        xs = [r["labeled_per_class"] * dodge for r in rows]
        ys = [100 * r["mean"] for r in rows]
        err = [100 * (r["ci_high"] - r["ci_low"]) / 2 for r in rows]
        bars = ax.errorbar(xs, ys, yerr=err, markersize=3, linewidth=1, capsize=2, label=label, **style)
        for x, row in zip(xs, rows):
            values = (runs or {}).get((row["protocol"], row["init"], row["rule"]), [])
            ax.scatter([x * 1.012] * len(values), [100 * v for v in values], s=4, alpha=0.55, linewidths=0,
                       color=bars[0].get_color(), zorder=3)


def accuracy_axes(ax, rows: list[dict], runs: RunValues | None = None) -> None:
    """Chance line(s), log x ticks at the rows' label counts, and y limits that hold every run (with
    `runs`; a t-interval over few runs may then reach past the axes) or else every interval."""
    classes = sorted({r["num_classes"] for r in rows})
    chances = [100.0 / n for n in classes]
    for n, chance in zip(classes, chances):
        ax.axhline(chance, color="grey", linewidth=0.7, linestyle=":",
                   label="chance" if len(classes) == 1 else f"chance ({n} classes)")
    style_axes(ax, [r["labeled_per_class"] for r in rows])
    if runs:
        values = [100 * v for r in rows for v in runs.get((r["protocol"], r["init"], r["rule"]), [])]
        low, high = min(values + chances + [100 * r["mean"] for r in rows]), max(values + chances)
    else:  # a t-interval over few runs can reach past 0 or 100; accuracy cannot
        low = min([100 * r["ci_low"] for r in rows] + chances)
        high = max([100 * r["ci_high"] for r in rows] + chances)
    ax.set_ylim(max(0.0, low - 3), min(100.0, high + 3))


def draw_gain(ax, lines: Sequence[tuple[str, list[dict], dict]]) -> None:
    """One line per (legend label, `paired_differences` rows, plot style): pretrained ÷ random."""
    for label, rows, style in lines:
        rows = sorted(rows, key=lambda r: r["labeled_per_class"])
        ax.plot([r["labeled_per_class"] for r in rows], [r["relative_gain"] for r in rows],
                markersize=3, linewidth=1, label=label, **style)


def save_figure(fig, out: Path, stem: str) -> list[Path]:
    """`<out>/<stem>.png` and `.pdf`, each written atomically; closes the figure."""
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for path in paths:
        atomic_write_with(path, lambda handle, p=path: fig.savefig(handle, format=p.suffix[1:], dpi=200))
    pyplot().close(fig)
    return paths


def plot_accuracy(table: list[dict], out: Path, metric: str, runs: RunValues | None = None) -> list[Path]:
    fig, ax = pyplot().subplots(figsize=(FIG_WIDTH_IN, 2.4))
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for row in table:
        lines[(row["protocol"], row["init"])].append(row)
    draw_accuracy(ax, [(f"{init} + {protocol}", rows,
                        {"marker": "o" if init == "pretrained" else "s",
                         "linestyle": "-" if init == "pretrained" else "--"})
                       for (protocol, init), rows in sorted(lines.items())], runs)
    if table:
        accuracy_axes(ax, table, runs)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "accuracy_vs_labels")


def plot_relative_gain(paired: list[dict], out: Path) -> list[Path]:
    fig, ax = pyplot().subplots(figsize=(FIG_WIDTH_IN, 2.2))
    lines: dict[str, list[dict]] = defaultdict(list)
    for row in paired:  # one line per protocol, treated init and random-init baseline (as the table names it)
        lines[paired_cells(row)[0]].append(row)
    draw_gain(ax, [(protocol, rows, {"marker": "o"}) for protocol, rows in sorted(lines.items())])
    ax.axhline(1.0, color="grey", linewidth=0.7, linestyle=":")
    if paired:
        style_axes(ax, [r["labeled_per_class"] for r in paired])
    ax.set_ylabel("pretrained ÷ random")
    if lines:
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "relative_gain")


def trajectory_figure(choices: Sequence[dict], health: Sequence[dict], panels: Sequence, out: Path) -> list[Path]:
    """Validation accuracy against pretraining step of every selected cell (one thin line each,
    its chosen step a dot), above the pretraining run's first health panel (`panels`: the
    method's HEALTH, `health`: metrics.csv rows)."""
    fig, axes = pyplot().subplots(2 if health and panels else 1, 1, figsize=(4.5, 5.0 if health else 2.6),
                                  sharex=True, squeeze=False)
    top = axes[0][0]
    for choice in choices:
        criterion = choice["criterion"]
        steps = [r["step"] for r in choice["rows"]]
        top.plot(steps, [100 * r[criterion] for r in choice["rows"]], linewidth=0.6, alpha=0.6, color="C0")
        top.plot([choice["step"]], [100 * max(r[criterion] for r in choice["rows"])], "o", markersize=3,
                 color="C3")
    top.set_ylabel("validation acc. (%)")
    top.set_title("one line per selected cell; dot: its chosen snapshot", fontsize=7)
    top.grid(alpha=0.3, linewidth=0.5)
    if len(axes) > 1:
        bottom = axes[1][0]
        x = [r["step"] for r in health]
        for key, label in panels[0][1]:
            if any(key in r for r in health):
                bottom.plot(x, [r.get(key, float("nan")) for r in health], linewidth=0.8, label=label)
        bottom.set_ylabel(panels[0][0])
        bottom.legend(fontsize=6, frameon=False)
        bottom.grid(alpha=0.3, linewidth=0.5)
        bottom.set_xlabel("pretraining step")
    else:
        top.set_xlabel("pretraining step")
    fig.tight_layout()
    return save_figure(fig, out, "trajectory")
