"""Tables and figures from the ledger alone.

Aggregation runs over seeds and splits: per (protocol, init, labels) the mean, the sample std and
a 95% confidence interval from the t-distribution; per (protocol, labels) the paired difference
pretrained − random over the (split, seed) pairs both inits finished, with its own t-interval.
Outputs (in `<out>/report/`): `results.{csv,md,tex}`, `paired.{csv,md,tex}`,
`accuracy_vs_labels.{png,pdf}` and `relative_gain.{png,pdf}` (the paper's Fig. 4c), sized for
one column of a two-column paper (3.3 in wide). The per-sweep page (`report.md`, `report.html`)
that shows them with the pretraining run, configs and ledger is `transfer.report_page`.

    python -m transfer.report OUTPUT_DIR [--metric video_acc]
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import stats

from runkit.atomic import atomic_write_text, atomic_write_with
from transfer.ledger import Ledger

METRICS = ("video_acc", "clip_acc", "video_top5", "mean_class_acc")
FIG_WIDTH_IN = 3.3


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


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


def _rows(entries: Iterable[dict], metric: str) -> list[dict]:
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
    for row in _rows(entries, metric):
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
    for row in _rows(entries, metric):
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


# ---------------------------------------------------------------- tables

def count(x: float) -> str:
    """Labeled videos per class: whole when every class got the same number, else the mean."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def pct(x: float) -> str:
    """An accuracy (a fraction) as a percentage with one decimal: the one format of every table."""
    return f"{100 * x:.1f}"


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def _results_cells(row: dict) -> list[str]:
    return [row["protocol"], row["init"], row["rule"], count(row['labeled_per_class']), str(row["n"]),
            f"{pct(row['mean'])} ± {pct(row['std'])}", f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}]"]


def paired_cells(row: dict) -> list[str]:
    return [row["protocol"], row["rule"], count(row['labeled_per_class']), str(row["pairs"]),
            pct(row["treated_mean"]), pct(row["baseline_mean"]), f"{pct(row['diff_mean'])}",
            f"[{pct(row['ci_low'])}, {pct(row['ci_high'])}]", f"{row['relative_gain']:.2f}"]


RESULTS_HEAD = ["protocol", "init", "labels", "labeled/class", "n", "acc % (mean ± std)", "95% CI"]
PAIRED_HEAD = ["protocol", "labels", "labeled/class", "pairs", "pretrained %", "random %",
               "Δ %", "95% CI of Δ", "ratio"]


def _markdown(head: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _latex(head: list[str], body: list[list[str]], caption: str, align: str | None = None) -> str:
    """A booktabs table; `align` the column spec (default: three text columns, the rest numbers)."""
    def esc(text: str) -> str:
        return (text.replace("\\", r"\textbackslash{}").replace("%", r"\%").replace("_", r"\_")
                .replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("&", r"\&"))
    align = align or "l" * 3 + "r" * (len(head) - 3)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + align + "}",
             r"\toprule", " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in cells) + r" \\" for cells in body]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- figures

def _style_axes(ax, xs: Sequence[float]) -> None:
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


def draw_accuracy(ax, lines: Sequence[tuple[str, list[dict], dict]]) -> None:
    """One line per (legend label, `aggregate` rows, errorbar style): the mean in % against labeled
    videos per class, error bars the 95% CI."""
    for i, (label, rows, style) in enumerate(lines):
        rows = sorted(rows, key=lambda r: r["labeled_per_class"])
        # a small sideways offset per line (log axis) so error bars at one x do not hide each other
        dodge = 1.0 + 0.025 * (i - (len(lines) - 1) / 2)
        xs = [r["labeled_per_class"] * dodge for r in rows]
        ys = [100 * r["mean"] for r in rows]
        err = [100 * (r["ci_high"] - r["ci_low"]) / 2 for r in rows]
        ax.errorbar(xs, ys, yerr=err, markersize=3, linewidth=1, capsize=2, label=label, **style)


def accuracy_axes(ax, rows: list[dict]) -> None:
    """Chance line(s), log x ticks at the rows' label counts and y limits that hold every interval."""
    classes = sorted({r["num_classes"] for r in rows})
    chances = [100.0 / n for n in classes]
    for n, chance in zip(classes, chances):
        ax.axhline(chance, color="grey", linewidth=0.7, linestyle=":",
                   label="chance" if len(classes) == 1 else f"chance ({n} classes)")
    _style_axes(ax, [r["labeled_per_class"] for r in rows])
    # a t-interval over few runs can reach past 0 or 100; accuracy cannot
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


def plot_accuracy(table: list[dict], out: Path, metric: str) -> list[Path]:
    fig, ax = pyplot().subplots(figsize=(FIG_WIDTH_IN, 2.4))
    lines: dict[tuple, list[dict]] = defaultdict(list)
    for row in table:
        lines[(row["protocol"], row["init"])].append(row)
    draw_accuracy(ax, [(f"{init} + {protocol}", rows,
                        {"marker": "o" if init == "pretrained" else "s",
                         "linestyle": "-" if init == "pretrained" else "--"})
                       for (protocol, init), rows in sorted(lines.items())])
    if table:
        accuracy_axes(ax, table)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "accuracy_vs_labels")


def plot_relative_gain(paired: list[dict], out: Path) -> list[Path]:
    fig, ax = pyplot().subplots(figsize=(FIG_WIDTH_IN, 2.2))
    lines: dict[str, list[dict]] = defaultdict(list)
    for row in paired:
        lines[row["protocol"]].append(row)
    draw_gain(ax, [(protocol, rows, {"marker": "o"}) for protocol, rows in sorted(lines.items())])
    ax.axhline(1.0, color="grey", linewidth=0.7, linestyle=":")
    if paired:
        _style_axes(ax, [r["labeled_per_class"] for r in paired])
    ax.set_ylabel("pretrained ÷ random")
    if lines:
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "relative_gain")


# ---------------------------------------------------------------- entry

def current_entries(sweep_dir: Path) -> list[dict]:
    """The ledger's entries for the cells of the sweep's latest plan (`sweep.json`). A changed
    recipe or checkpoint makes new cells; the old ones stay in the ledger but out of the tables."""
    entries = Ledger(sweep_dir / "ledger").entries()
    plan = sweep_dir / "sweep.json"
    if plan.is_file():
        wanted = set(json.loads(plan.read_text())["cells"])
        entries = [e for e in entries if e["cell_id"] in wanted]
    return entries


def write_report(sweep_dir: str | Path, metric: str = "video_acc", figures: bool = True) -> dict[str, Path]:
    """Regenerate every table (and figure) of a sweep from its ledger; returns the written paths."""
    sweep_dir = Path(sweep_dir)
    entries = current_entries(sweep_dir)
    out = sweep_dir / "report"
    table = aggregate(entries, metric)
    paired = paired_differences(entries, metric)
    caption = (f"{metric.replace('_', ' ')} on the test split: mean ± std and 95% t-interval over "
               f"seeds and splits.")
    written = {}
    for name, rows, head, cells, cap in (
            ("results", table, RESULTS_HEAD, _results_cells, caption),
            ("paired", paired, PAIRED_HEAD, paired_cells,
             f"Paired difference pretrained − random ({metric.replace('_', ' ')}), same split and seed.")):
        body = [cells(r) for r in rows]
        for ext, text in (("csv", _csv(rows)), ("md", _markdown(head, body)), ("tex", _latex(head, body, cap))):
            path = out / f"{name}.{ext}"
            atomic_write_text(path, text)
            written[f"{name}.{ext}"] = path
    if figures and table:
        for path in plot_accuracy(table, out, metric) + plot_relative_gain(paired, out):
            written[path.name] = path
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m transfer.report SWEEP_DIR`: the same as `python -m transfer.report_page`."""
    from transfer.report_page import main as page_main  # the page builds on this module

    page_main(argv)


if __name__ == "__main__":
    main()
